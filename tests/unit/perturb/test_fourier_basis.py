"""Fourier basis images against numpy.fft: support, norm, the inverse-DFT construction, and the half-plane."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stress.perturb.fourier import basis, centred, frequencies, perturb, signs


def ifft_reference(height: int, width: int, k1: int, k2: int) -> np.ndarray:
    """The construction in words: (1+i)/2 at k and (1-i)/2 at -k (1 at a self-mirrored k), inverse DFT, real part, unit norm."""
    spectrum = np.zeros((height, width), dtype=np.complex128)
    mirror = ((-k1) % height, (-k2) % width)
    if mirror == (k1, k2):
        spectrum[k1, k2] = 1.0
    else:
        spectrum[k1, k2], spectrum[mirror] = 0.5 + 0.5j, 0.5 - 0.5j
    image = np.real(np.fft.ifft2(spectrum))
    return image / np.linalg.norm(image)


def support(image: np.ndarray, tolerance: float = 1e-4) -> set[tuple[int, int]]:
    spectrum = np.abs(np.fft.fft2(image))
    return {tuple(int(i) for i in k) for k in np.argwhere(spectrum > tolerance * spectrum.max())}


@pytest.mark.parametrize(("height", "width"), [(32, 32), (8, 6), (5, 7)])
def test_every_basis_image_matches_the_inverse_dft_and_has_unit_norm(height, width):
    for k1, k2 in frequencies(height, width):
        image = basis(height, width, k1, k2).double().numpy()
        assert np.linalg.norm(image) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(image, ifft_reference(height, width, k1, k2), atol=1e-6)
        assert support(image) == {(k1, k2), ((-k1) % height, (-k2) % width)}


def test_the_half_plane_holds_one_frequency_of_each_mirrored_pair():
    half = frequencies(32, 32)
    assert len(half) == (32 * 32 + 4) // 2  # four self-mirrored frequencies: (0,0), (0,16), (16,0), (16,16)
    pairs = {frozenset({k, ((-k[0]) % 32, (-k[1]) % 32)}) for k in half}
    assert len(pairs) == len(half)
    every = {(a, b) for a in range(32) for b in range(32)}
    assert set().union(*pairs) == every
    # 5 x 7 (odd sides): only (0, 0) is its own mirror
    assert len(frequencies(5, 7)) == (35 + 1) // 2


def test_the_check_fails_on_a_wrong_basis():
    """Planted: the conjugate pair swapped, a phase shift, gives another image with the same support; the check sees it."""
    k1, k2 = 3, 5
    image = basis(32, 32, k1, k2).double().numpy()
    spectrum = np.zeros((32, 32), dtype=np.complex128)
    spectrum[k1, k2], spectrum[-k1 % 32, -k2 % 32] = 0.5 - 0.5j, 0.5 + 0.5j
    swapped = np.real(np.fft.ifft2(spectrum))
    swapped /= np.linalg.norm(swapped)
    assert support(swapped) == support(image)
    assert np.abs(swapped - image).max() > 0.05
    # ... and an off-by-one frequency has another support
    assert support(basis(32, 32, k1, k2 + 1).numpy()) != support(image)


def test_centred_coordinates_follow_fftshift():
    shifted = np.fft.fftshift(np.arange(32))  # the index that lands at each centred position
    for position, k in enumerate(shifted):
        assert centred(int(k), 32) == position - 16


def test_perturbation_has_the_norm_asked_for_and_stays_in_range():
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(100, 156, (4, 3, 32, 32), dtype=torch.uint8, generator=generator)  # far from 0 and 255: no clipping
    pattern = basis(32, 32, 2, 7)
    s = signs(4, 3, seed=0, k1=2, k2=7)
    out = perturb(images, pattern, s, norm=4.0)
    delta = (out - images.float()) / 255.0
    norms = delta.flatten(2).norm(dim=2)
    torch.testing.assert_close(norms, torch.full((4, 3), 4.0), rtol=1e-4, atol=1e-4)
    # the sign per (image, channel) is the one drawn
    assert torch.equal(torch.sign((delta * pattern).sum((2, 3))), s)
    saturated = perturb(torch.full((1, 3, 32, 32), 250, dtype=torch.uint8), basis(32, 32, 0, 0), torch.ones(1, 3), norm=4.0)
    assert saturated.max() == 255.0 and saturated.min() >= 0.0


def test_signs_do_not_depend_on_how_images_are_sharded():
    assert torch.equal(signs(60, 3, 42, 1, 2), signs(100, 3, 42, 1, 2)[:60])  # a shard draws for its stop and keeps its own rows
    assert not torch.equal(signs(100, 3, 42, 1, 2), signs(100, 3, 42, 1, 3))
    assert set(signs(1000, 3, 42, 1, 2).unique().tolist()) == {-1.0, 1.0}
