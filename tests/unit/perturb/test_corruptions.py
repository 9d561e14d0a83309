"""Batched CIFAR-10-C corruptions vs a per-image numpy/scipy/PIL reference, plus API contracts."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import reference_corruptions as reference  # tests/reference_corruptions.py: per-image numpy, as the original code
import scipy.stats
import torch
from scipy import ndimage

from stress.constants import CORRUPTIONS
from stress.errors import StressError
from stress.perturb import corruptions, kernels, tables
from stress.perturb.corruptions import apply_corruption, corrupt, draw_corruption_noise, make_generator

RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur",
          "snow", "fog", "elastic_transform"}
# Corruptions whose pipeline quantises to 8 bits midway (or is integer-valued): compare rounded outputs.
QUANTISED = {"glass_blur": 0.02, "motion_blur": 0.005, "snow": 0.005, "pixelate": 0.0, "jpeg_compression": 0.0}


def natural_images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """Smooth random colour fields plus a little texture: (N, 3, size, size) uint8."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    textured = smooth + 0.01 * torch.randn(n, 3, size, size, generator=generator)
    return (textured.clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return natural_images(3, seed=7)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_matches_per_image_reference_with_same_draws(images: torch.Tensor, name: str) -> None:
    x = images.float() / 255.0
    for severity in range(1, 6):
        draws = draw_corruption_noise(x, name, severity, make_generator(severity, x.device))
        batched = (apply_corruption(x, name, severity, draws).clamp(0, 1) * 255).permute(0, 2, 3, 1).double().numpy()
        expected = reference.reference_corrupt(images.permute(0, 2, 3, 1).numpy(), name, severity,
                                               {key: value.numpy() for key, value in draws.items()})
        if name in QUANTISED:
            difference = np.abs(np.round(batched) - np.round(expected))
            assert difference.max() <= 1, (name, severity)
            assert (difference > 0).mean() <= QUANTISED[name], (name, severity)
        else:  # continuous formula: float32 vs float64 only
            np.testing.assert_allclose(batched, expected, atol=0.02, err_msg=f"{name} severity {severity}")


def test_corrupt_rounds_the_transform_output(images: torch.Tensor) -> None:
    x = images.float() / 255.0
    draws = draw_corruption_noise(x, "gaussian_noise", 2, make_generator(5, x.device))
    expected = torch.round(apply_corruption(x, "gaussian_noise", 2, draws).clamp(0, 1) * 255).to(torch.uint8)
    assert torch.equal(corrupt(images, "gaussian_noise", 2, seed=5), expected)


def _mean_abs_change(clean: torch.Tensor, name: str) -> list[float]:
    return [(corrupt(clean, name, s, seed=1).float() - clean.float()).abs().mean().item() for s in range(1, 6)]


NOT_MONOTONE_IN_MAD = {"glass_blur", "motion_blur", "saturate", "elastic_transform"}


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n not in NOT_MONOTONE_IN_MAD])
def test_distortion_grows_with_severity(name: str) -> None:
    changes = _mean_abs_change(natural_images(8, seed=3), name)
    assert all(later > earlier for earlier, later in zip(changes, changes[1:])), changes


def test_glass_blur_more_swaps_distort_more() -> None:
    """The CIFAR table is not monotone in mean change (sigma grows 1-3, then a second pass of swaps
    restarts at smaller sigma), but at equal sigma two passes must distort more than one."""
    changes = _mean_abs_change(natural_images(8, seed=3), "glass_blur")
    assert changes[3] > changes[1] and changes[4] > changes[2], changes


def _original_glass_blur(image: np.ndarray, severity: int, shifts: np.ndarray, swap: bool) -> np.ndarray:
    """make_cifar_c.py's glass_blur, its pixel loop written out literally on a (H, W, 3) uint8 array.

    swap=False runs the original statement as it is (numpy views: a copy); swap=True exchanges
    the two pixels, which is what the statement looks as if it did.
    """
    sigma, delta, iterations = tables.GLASS_BLUR[severity - 1]
    h, w = image.shape[:2]
    x = np.uint8(ndimage.gaussian_filter(image / 255.0, (sigma, sigma, 0), mode="nearest") * 255)
    for i in range(iterations):
        position = 0
        for row in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                dx, dy = shifts[i, position]
                row_prime, col_prime = row + dy, col + dx
                if swap:
                    x[row, col], x[row_prime, col_prime] = x[row_prime, col_prime].copy(), x[row, col].copy()
                else:
                    x[row, col], x[row_prime, col_prime] = x[row_prime, col_prime], x[row, col]
                position += 1
    return np.clip(ndimage.gaussian_filter(x / 255.0, (sigma, sigma, 0), mode="nearest"), 0, 1) * 255


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_glass_blur_has_the_original_copy_semantics(severity: int) -> None:
    images = natural_images(4, seed=11)
    x = images.float() / 255.0
    draws = draw_corruption_noise(x, "glass_blur", severity, make_generator(severity, x.device))
    ours = np.round((apply_corruption(x, "glass_blur", severity, draws).clamp(0, 1) * 255).permute(0, 2, 3, 1).double().numpy())
    hwc, shifts = images.permute(0, 2, 3, 1).numpy(), draws["shifts"].numpy()

    def gap(swap: bool) -> float:
        return max(float(np.abs(ours[k] - np.round(_original_glass_blur(hwc[k], severity, shifts[k], swap))).max())
                   for k in range(len(hwc)))

    assert gap(swap=False) <= 1  # agrees with the literal original loop to one grey level
    assert gap(swap=True) > 1  # and the check tells it apart from a swapping implementation


def test_glass_blur_moves_a_pixel_at_most_one_step_per_iteration() -> None:
    shifts = np.random.default_rng(0).integers(-1, 1, size=(3, 1, 30 * 30, 2))
    sources = corruptions.glass_sources(shifts, 32, 32, 1)  # (3, 1024)
    rows, cols = np.divmod(sources, 32)
    here_rows, here_cols = np.divmod(np.arange(32 * 32), 32)
    assert np.abs(rows - here_rows).max() <= 1 and np.abs(cols - here_cols).max() <= 1
    assert (sources != np.arange(32 * 32)).any()


def test_motion_blur_grows_except_between_nearly_equal_kernels() -> None:
    """Severities 3 and 4 share sigma 2 and differ only by taps of weight < 0.3%."""
    changes = _mean_abs_change(natural_images(8, seed=3), "motion_blur")
    assert changes[0] < changes[1] < changes[2] and changes[3] < changes[4], changes
    assert abs(changes[3] - changes[2]) < 0.5, changes


def test_saturate_desaturates_then_oversaturates() -> None:
    clean = natural_images(8, seed=3)
    base = kernels.rgb_to_hsv(clean.float() / 255)[:, 1].mean()
    ratios = [(kernels.rgb_to_hsv(corrupt(clean, "saturate", s).float() / 255)[:, 1].mean() / base).item()
              for s in range(1, 6)]
    assert 1 > ratios[0] > ratios[1], ratios
    assert 1 < ratios[2] < ratios[3] < ratios[4], ratios


def test_elastic_local_displacement_grows_with_severity() -> None:
    """With the affine jitter (which the CIFAR table shrinks with severity) set to zero, the smooth
    displacement field grows from none at severity 1."""
    clean = natural_images(8, seed=3)
    x = clean.float() / 255
    changes = []
    for severity in range(1, 6):
        draws = draw_corruption_noise(x, "elastic_transform", severity, make_generator(0, x.device))
        draws["affine"].zero_()
        changes.append((apply_corruption(x, "elastic_transform", severity, draws) - x).abs().mean().item())
    assert changes[0] < 1e-6 and all(later > earlier for earlier, later in zip(changes, changes[1:])), changes


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_dtype_shape_device_and_determinism(name: str) -> None:
    clean = natural_images(2, seed=11, size=32)
    first = corrupt(clean, name, 3, seed=4)
    assert first.dtype == torch.uint8 and first.shape == clean.shape and first.device == clean.device
    assert torch.equal(first, corrupt(clean, name, 3, seed=4))
    if name in RANDOM:
        assert not torch.equal(first, corrupt(clean, name, 3, seed=5))
    else:
        assert torch.equal(first, corrupt(clean, name, 3, seed=5))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_non_square_images_keep_their_shape(name: str) -> None:
    clean = natural_images(1, seed=2, size=40)[:, :, :24, :]  # (1, 3, 24, 40)
    assert corrupt(clean, name, 5).shape == clean.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_and_stays_there() -> None:
    clean = natural_images(2, seed=1).cuda()
    for name in CORRUPTIONS:
        out = corrupt(clean, name, 2, seed=3)
        assert out.device == clean.device and out.dtype == torch.uint8
        assert torch.equal(out, corrupt(clean, name, 2, seed=3))
    # deterministic transforms agree with the CPU path up to float rounding
    cpu = corrupt(clean.cpu(), "gaussian_blur", 4)
    assert (corrupt(clean, "gaussian_blur", 4).cpu().int() - cpu.int()).abs().max() <= 1


def test_invalid_name_lists_choices() -> None:
    with pytest.raises(StressError) as error:
        corrupt(natural_images(1, 0), "frost", 1)
    message = str(error.value)
    assert "\n" not in message and all(name in message for name in CORRUPTIONS)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.5, True])
def test_invalid_severity_lists_choices(severity: object) -> None:
    with pytest.raises(StressError, match="1, 2, 3, 4, 5"):
        corrupt(natural_images(1, 0), "contrast", severity)


def test_rejects_non_uint8_images() -> None:
    with pytest.raises(StressError):
        corrupt(torch.zeros(1, 3, 8, 8), "contrast", 1)


def test_hsv_matches_colorsys_and_round_trips() -> None:
    rgb = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    rgb[0, :, 0, 0] = torch.tensor([0.5, 0.5, 0.5])  # grey: hue and saturation 0
    rgb[0, :, 0, 1] = torch.tensor([0.8, 0.8, 0.2])  # tie between two maxima
    hsv = kernels.rgb_to_hsv(rgb)
    for row in range(6):
        for col in range(7):
            expected = colorsys.rgb_to_hsv(*rgb[0, :, row, col].tolist())
            assert np.allclose(hsv[0, :, row, col].numpy(), expected, atol=1e-6)
            assert np.allclose(kernels.hsv_to_rgb(hsv)[0, :, row, col].numpy(),
                               colorsys.hsv_to_rgb(*expected), atol=1e-6)
    # the numpy reference used above agrees with colorsys too
    numpy_hsv = reference.rgb_to_hsv(rgb[0].permute(1, 2, 0).double().numpy())
    assert np.allclose(numpy_hsv, hsv[0].permute(1, 2, 0).numpy(), atol=1e-6)


def test_shot_noise_statistics_match_numpy_poisson() -> None:
    """Poisson draws cannot be shared with numpy; compare output mean and spread instead."""
    grey = torch.full((4, 3, 32, 32), 100, dtype=torch.uint8)
    rate = 100 / 255 * tables.SHOT_NOISE[4]
    ours = corrupt(grey, "shot_noise", 5, seed=0).double() / 255
    theirs = np.clip(np.random.default_rng(0).poisson(rate, size=ours.shape) / tables.SHOT_NOISE[4], 0, 1)
    theirs = np.round(theirs * 255) / 255
    assert abs(ours.mean().item() - theirs.mean()) < 0.005
    assert abs(ours.std().item() - theirs.std()) < 0.005
    assert abs(ours.std().item() - np.sqrt(rate) / tables.SHOT_NOISE[4]) < 0.005


def test_noise_draws_have_the_published_distributions() -> None:
    x = torch.full((2, 3, 32, 32), 0.5)
    impulse = draw_corruption_noise(x, "impulse_noise", 5, make_generator(0, x.device))
    assert abs(impulse["flipped"].double().mean().item() - 0.07) < 0.01
    glass = draw_corruption_noise(x, "glass_blur", 5, make_generator(0, x.device))["shifts"]
    assert glass.shape == (2, 2, 30 * 30, 2) and set(glass.unique().tolist()) == {-1, 0}  # randint(-1, 1)
    angles = draw_corruption_noise(x, "motion_blur", 1, make_generator(0, x.device))["angles"]
    assert angles.min() >= -45 and angles.max() < 45


def test_pixelate_weights_match_pil_on_float_images() -> None:
    """Our Pillow BOX coefficients, checked on Pillow's own float ('F') resize of identity rows."""
    from PIL import Image

    for in_size, out_size in [(32, 30), (32, 27), (32, 20), (27, 32), (20, 32)]:
        identity = Image.fromarray(np.eye(in_size, dtype=np.float32), mode="F")
        expected = np.asarray(identity.resize((out_size, in_size), Image.BOX)).T  # (out, in)
        np.testing.assert_allclose(kernels.pil_resize_weights(in_size, out_size, True), expected, atol=1e-6)


def explicit_bilinear(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mode: str) -> torch.Tensor:
    """Bilinear lookup of x (N, C, H, W) at float coordinates rows, cols (N, H', W').

    mode 'mirror': taps outside the image are reflected (OpenCV BORDER_REFLECT_101).
    mode 'symmetric': the coordinate is first folded into [-0.5, size - 0.5] by half-sample
    reflection, then taps are reflected the same way (scipy map_coordinates mode='reflect').
    """
    n, c, h, w = x.shape
    if mode == "symmetric":
        rows = fold_coordinate(rows, h)
        cols = fold_coordinate(cols, w)
    row0, col0 = torch.floor(rows), torch.floor(cols)
    row_fraction, col_fraction = (rows - row0).unsqueeze(1), (cols - col0).unsqueeze(1)
    row0, col0 = row0.long(), col0.long()
    flat = x.reshape(n, c, h * w)

    def tap(row_index: torch.Tensor, col_index: torch.Tensor) -> torch.Tensor:
        index = kernels.fold_indices(row_index, h, mode) * w + kernels.fold_indices(col_index, w, mode)
        return flat.gather(2, index.view(n, 1, -1).expand(n, c, -1)).view(n, c, *rows.shape[1:])

    top = tap(row0, col0) * (1 - col_fraction) + tap(row0, col0 + 1) * col_fraction
    bottom = tap(row0 + 1, col0) * (1 - col_fraction) + tap(row0 + 1, col0 + 1) * col_fraction
    return top * (1 - row_fraction) + bottom * row_fraction


def fold_coordinate(coordinate: torch.Tensor, size: int) -> torch.Tensor:
    period = 2.0 * size
    folded = (coordinate + 0.5).remainder(period)
    return torch.where(folded > size, period - folded, folded) - 0.5


@pytest.mark.parametrize("mode", ["mirror", "symmetric"])
def test_grid_sample_bilinear_equals_the_explicit_taps(mode: str) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 9, 13, generator=generator)
    rows = torch.rand(3, 9, 13, generator=generator) * 40 - 15  # far outside the image too
    cols = torch.rand(3, 9, 13, generator=generator) * 50 - 18
    torch.testing.assert_close(kernels.grid_sample_bilinear(x, rows, cols, mode),
                               explicit_bilinear(x, rows, cols, mode), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["zoom_blur", "defocus_blur"])
def test_sparse_plane_operator_equals_the_dense_transform(name: str) -> None:
    x = natural_images(4, seed=5, size=32).double()[:, :, :24, :] / 255  # non-square planes
    for severity in (1, 5):
        dense = apply_corruption(x, name, severity, {})  # float64 takes the dense path
        sparse = apply_corruption(x.float(), name, severity, {})
        np.testing.assert_allclose(sparse.double().numpy(), dense.numpy(), atol=2e-6)


def test_poisson_inversion_matches_a_per_value_search_and_the_moments() -> None:
    generator = torch.Generator().manual_seed(1)
    levels = torch.randint(0, 256, (20000,), generator=generator)
    u = torch.rand(20000, generator=generator, dtype=torch.float64)
    u[:4] = torch.tensor([0.0, 1 - 2**-53, 0.5, 1e-12], dtype=torch.float64)  # the ends of [0, 1)
    for scale in (50.0, 500.0):
        counts = kernels.poisson_inverse_cdf(levels, u, scale)
        cdf, _ = kernels.poisson_tables(scale)
        expected_cdf = scipy.stats.poisson.cdf(np.arange(cdf.shape[1])[None, :], (np.arange(256) / 255 * scale)[:, None])
        np.testing.assert_allclose(cdf[:, :-1], expected_cdf[:, :-1], rtol=0, atol=1e-11)
        slow = [int(np.searchsorted(cdf[level], value, side="right")) for level, value in zip(levels.tolist(), u.tolist())]
        assert counts.tolist() == slow
    # and the law: mean and variance of many draws at one rate equal the rate (z < 5)
    rate_level, scale, n = 200, 100.0, 200000
    draws = kernels.poisson_inverse_cdf(torch.full((n,), rate_level), torch.rand(n, generator=generator, dtype=torch.float64), scale)
    rate = rate_level / 255 * scale
    assert abs(draws.double().mean().item() - rate) < 5 * (rate / n) ** 0.5
    assert abs(draws.double().var().item() / rate - 1) < 5 * (2 / n) ** 0.5


def test_shot_noise_of_8_bit_images_is_poisson_at_every_level() -> None:
    """The inversion path (taken for 8-bit inputs) has the mean and variance of Poisson(x * c)."""
    clean = torch.full((400, 3, 32, 32), 77, dtype=torch.uint8)
    x = clean.float() / 255
    counts = draw_corruption_noise(x, "shot_noise", 1, make_generator(3, x.device))["counts"].double()
    rate = 77 / 255 * tables.SHOT_NOISE[0]
    n = counts.numel()
    assert abs(counts.mean().item() - rate) < 5 * (rate / n) ** 0.5
    assert abs(counts.var().item() / rate - 1) < 5 * (2 / n) ** 0.5


def test_impulse_noise_flips_and_salts_at_the_table_rates() -> None:
    x = torch.full((400, 3, 32, 32), 0.5)
    draws = draw_corruption_noise(x, "impulse_noise", 5, make_generator(2, x.device))
    p, n = tables.IMPULSE_NOISE[4], x.numel()
    flipped = draws["flipped"].double().mean().item()
    assert abs(flipped - p) < 5 * (p * (1 - p) / n) ** 0.5
    salt_share = draws["salted"][draws["flipped"]].double().mean().item()
    assert abs(salt_share - 0.5) < 5 * (0.25 / (p * n)) ** 0.5


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_reference_draws_have_the_batched_layout(name: str) -> None:
    """The benchmark's per-image generator draws the same randomness the batched one does."""
    clean = natural_images(2, seed=4)
    x = clean.float() / 255
    batched = draw_corruption_noise(x, name, 4, make_generator(0, x.device))
    single = reference.reference_draws(clean[0].permute(1, 2, 0).numpy(), name, 4)
    assert sorted(single) == sorted(batched)
    for key, value in batched.items():
        assert np.shape(single[key]) == tuple(value.shape[1:]), key
    out = reference.reference_generate(clean.permute(0, 2, 3, 1).numpy(), name, 4)
    assert out.dtype == np.uint8 and out.shape == (2, 32, 32, 3)


@pytest.mark.parametrize("name", ["brightness", "saturate"])
def test_closed_form_hsv_corruptions_equal_the_hsv_round_trip(name: str) -> None:
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x[0, :, :2, :2] = 0.0  # black
    x[1, :, :2, :2] = 0.4  # grey
    x[2, 0, :2, :2], x[2, 1:, :2, :2] = 0.9, 0.3  # a tie between two minima
    for severity in range(1, 6):
        hsv = kernels.rgb_to_hsv(x)
        if name == "brightness":
            hsv[:, 2] = (hsv[:, 2] + tables.BRIGHTNESS[severity - 1]).clamp(0, 1)
        else:
            scale, shift = tables.SATURATE[severity - 1]
            hsv[:, 1] = (hsv[:, 1] * scale + shift).clamp(0, 1)
        torch.testing.assert_close(apply_corruption(x, name, severity, {}), kernels.hsv_to_rgb(hsv), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_an_empty_batch_stays_empty(name: str) -> None:
    empty = torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
    assert corrupt(empty, name, 3).shape == empty.shape
