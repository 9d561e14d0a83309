"""Batched CIFAR-10-C corruptions vs a per-image numpy/scipy/PIL reference, plus API contracts."""

from __future__ import annotations

import colorsys
import importlib.util
import pathlib

import numpy as np
import pytest
import torch

from stress import corruptions
from stress.corruptions import CORRUPTIONS, apply_corruption, corrupt, draw_corruption_noise, make_generator
from stress.errors import StressError

_REFERENCE_PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "reference_corruptions.py"
_spec = importlib.util.spec_from_file_location("reference_corruptions", _REFERENCE_PATH)
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

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


def test_motion_blur_grows_except_between_nearly_equal_kernels() -> None:
    """Severities 3 and 4 share sigma 2 and differ only by taps of weight < 0.3%."""
    changes = _mean_abs_change(natural_images(8, seed=3), "motion_blur")
    assert changes[0] < changes[1] < changes[2] and changes[3] < changes[4], changes
    assert abs(changes[3] - changes[2]) < 0.5, changes


def test_saturate_desaturates_then_oversaturates() -> None:
    clean = natural_images(8, seed=3)
    base = corruptions.rgb_to_hsv(clean.float() / 255)[:, 1].mean()
    ratios = [(corruptions.rgb_to_hsv(corrupt(clean, "saturate", s).float() / 255)[:, 1].mean() / base).item()
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
    hsv = corruptions.rgb_to_hsv(rgb)
    for row in range(6):
        for col in range(7):
            expected = colorsys.rgb_to_hsv(*rgb[0, :, row, col].tolist())
            assert np.allclose(hsv[0, :, row, col].numpy(), expected, atol=1e-6)
            assert np.allclose(corruptions.hsv_to_rgb(hsv)[0, :, row, col].numpy(),
                               colorsys.hsv_to_rgb(*expected), atol=1e-6)
    # the numpy reference used above agrees with colorsys too
    numpy_hsv = reference.rgb_to_hsv(rgb[0].permute(1, 2, 0).double().numpy())
    assert np.allclose(numpy_hsv, hsv[0].permute(1, 2, 0).numpy(), atol=1e-6)


def test_shot_noise_statistics_match_numpy_poisson() -> None:
    """Poisson draws cannot be shared with numpy; compare output mean and spread instead."""
    grey = torch.full((4, 3, 32, 32), 100, dtype=torch.uint8)
    rate = 100 / 255 * corruptions.SHOT_NOISE[4]
    ours = corrupt(grey, "shot_noise", 5, seed=0).double() / 255
    theirs = np.clip(np.random.default_rng(0).poisson(rate, size=ours.shape) / corruptions.SHOT_NOISE[4], 0, 1)
    theirs = np.round(theirs * 255) / 255
    assert abs(ours.mean().item() - theirs.mean()) < 0.005
    assert abs(ours.std().item() - theirs.std()) < 0.005
    assert abs(ours.std().item() - np.sqrt(rate) / corruptions.SHOT_NOISE[4]) < 0.005


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
        np.testing.assert_allclose(corruptions.pil_resize_weights(in_size, out_size, True), expected, atol=1e-6)
