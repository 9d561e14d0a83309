"""Texture probes: patch shuffling is a permutation placed as a slow loop places it; the filter pair sums back to the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stress.perturb.texture import apply_probe, lowpass_gain, patch_shuffle, permutations, probes, split_frequencies


def _images(n=6, size=32, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _histograms_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Per image and channel, the same multiset of pixel values."""
    return bool(torch.equal(a.flatten(2).sort(dim=2).values, b.flatten(2).sort(dim=2).values))


def _slow_shuffle(image: np.ndarray, grid: int, order: np.ndarray) -> np.ndarray:
    """One image, patch by patch: output patch j (row-major) is input patch order[j]."""
    c, h, w = image.shape
    ph, pw = h // grid, w // grid
    out = image.astype(np.float32).copy()
    for j, source in enumerate(order):
        r, q = divmod(j, grid)
        sr, sq = divmod(int(source), grid)
        out[:, r * ph : (r + 1) * ph, q * pw : (q + 1) * pw] = image[:, sr * ph : (sr + 1) * ph, sq * pw : (sq + 1) * pw]
    return out


@pytest.mark.parametrize("grid", [2, 4, 8])
def test_patch_shuffling_is_a_permutation_placed_patch_by_patch(grid):
    x = _images()
    order = permutations(len(x), grid * grid, seed=3)
    shuffled = patch_shuffle(x, grid, order)
    assert _histograms_equal(shuffled, x.float())
    for i in range(len(x)):
        np.testing.assert_array_equal(shuffled[i].numpy(), _slow_shuffle(x[i].numpy(), grid, order[i].numpy()))
    assert not torch.equal(shuffled, x.float())  # the seeded permutations moved something
    # the identity order changes nothing
    assert torch.equal(patch_shuffle(x, grid, torch.arange(grid * grid).repeat(len(x), 1)), x.float())


def test_the_histogram_check_catches_a_patch_copied_instead_of_moved():
    x = _images()
    order = permutations(len(x), 16, seed=3)
    broken = order.clone()
    broken[:, 1] = broken[:, 0]  # one patch twice, another lost: not a permutation
    assert not _histograms_equal(patch_shuffle(x, 4, broken), x.float())


def test_a_size_that_the_grid_does_not_divide_keeps_its_last_rows_and_columns():
    x = torch.randint(0, 256, (2, 3, 30, 30), dtype=torch.uint8)
    shuffled = patch_shuffle(x, 4, permutations(2, 16, seed=1))  # patches of 7: rows and columns 28, 29 stay
    assert torch.equal(shuffled[:, :, 28:], x[:, :, 28:].float()) and torch.equal(shuffled[:, :, :, 28:], x[:, :, :, 28:].float())
    assert _histograms_equal(shuffled, x.float())


def test_permutations_depend_on_the_image_index_only():
    whole = permutations(10, 16, seed=5)
    assert torch.equal(permutations(10, 16, seed=5)[4:], whole[4:])
    assert all(sorted(row.tolist()) == list(range(16)) for row in whole)


@pytest.mark.parametrize("cutoff", [2.0, 4.0, 8.0])
def test_the_low_and_high_pass_pair_sums_back_to_the_image(cutoff):
    x = _images()
    low, high = split_frequencies(x, cutoff)
    np.testing.assert_allclose((low + high).numpy(), x.float().numpy(), atol=1e-3)
    # the high-pass keeps no mean; the low-pass keeps the image's mean exactly
    np.testing.assert_allclose(high.mean(dim=(2, 3)).numpy(), 0.0, atol=1e-3)
    np.testing.assert_allclose(low.mean(dim=(2, 3)).numpy(), x.float().mean(dim=(2, 3)).numpy(), atol=1e-3)


def test_the_low_pass_matches_a_numpy_filter_built_frequency_by_frequency():
    x = _images(n=2)
    cutoff = 4.0
    gain = np.zeros((32, 32))
    for a in range(32):
        for b in range(32):
            u, v = (a + 16) % 32 - 16, (b + 16) % 32 - 16  # signed frequency of DFT index (a, b)
            gain[a, b] = np.exp(-(u * u + v * v) / (2 * cutoff**2))
    expected = np.fft.ifft2(np.fft.fft2(x.numpy().astype(np.float64)) * gain).real
    low, _ = split_frequencies(x, cutoff)
    np.testing.assert_allclose(low.numpy(), expected, atol=1e-3)
    np.testing.assert_allclose(lowpass_gain(32, 32, cutoff).numpy(), gain, rtol=1e-6)
    # another cut-off is told apart by the same comparison
    other, _ = split_frequencies(x, 2.0)
    assert np.abs(other.numpy() - expected).max() > 1.0


def test_a_low_pass_removes_a_high_frequency_pattern_and_keeps_a_low_one():
    m = torch.arange(32, dtype=torch.float32)
    fine = 127.5 + 60 * torch.cos(2 * np.pi * 12 * m / 32).view(1, 1, 1, 32).expand(1, 3, 32, 32)  # 12 cycles per image
    coarse = 127.5 + 60 * torch.cos(2 * np.pi * 1 * m / 32).view(1, 1, 1, 32).expand(1, 3, 32, 32)  # 1 cycle
    low_fine, _ = split_frequencies(fine, 4.0)
    low_coarse, _ = split_frequencies(coarse, 4.0)
    # the gain at radius r is exp(-r^2 / 32) for cut-off 4: 0.011 at 12 cycles, 0.97 at 1 cycle
    np.testing.assert_allclose((low_fine - 127.5).numpy(), ((fine - 127.5) * np.exp(-144 / 32)).numpy(), atol=1e-3)
    assert (low_fine - 127.5).abs().max() < 1.0 < (low_coarse - 127.5).abs().max()
    np.testing.assert_allclose((low_coarse - 127.5).numpy(), ((coarse - 127.5) * np.exp(-1 / 32)).numpy(), atol=1e-3)


def test_probes_as_the_model_sees_them_stay_in_the_pixel_range():
    x = _images()
    names = probes(32, 32)
    assert names == ["shuffle_2", "shuffle_4", "shuffle_8", "lowpass_2", "lowpass_4", "lowpass_8", "highpass_2", "highpass_4", "highpass_8"]
    for name in names:
        grid = int(name.split("_")[1]) if name.startswith("shuffle") else 0
        out = apply_probe(x, name, permutations(len(x), grid * grid, 0) if grid else None)
        assert out.dtype == torch.float32 and out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    # the high-pass image carries the image's own mean colour
    high = apply_probe(torch.full((1, 3, 32, 32), 90, dtype=torch.uint8), "highpass_4")
    np.testing.assert_allclose(high.numpy(), 90.0, atol=1e-3)
    assert probes(8, 8) == ["shuffle_2", "shuffle_4", "lowpass_2", "lowpass_4", "lowpass_8", "highpass_2", "highpass_4", "highpass_8"]
    with pytest.raises(ValueError, match="permutation"):
        apply_probe(x, "shuffle_4")
