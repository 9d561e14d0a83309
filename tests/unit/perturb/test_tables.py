"""Severity tables by image size: Tiny-ImageNet-C's at 64x64, checked value by value against make_tinyimagenet_c.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stress.perturb import tables
from stress.perturb.corruptions import corrupt

# Transcribed from hendrycks/robustness, ImageNet-C/create_c/make_tinyimagenet_c.py, in that file's own
# notation (c = [...][severity - 1] per corruption; IMSIZE = 64 in elastic_transform; zoom_blur's
# np.arange(1, end, 0.01) ends).
IMSIZE = 64
MAKE_TINYIMAGENET_C = {
    "GAUSSIAN_NOISE": [0.04, 0.08, .12, .15, .18],
    "SHOT_NOISE": [250, 100, 50, 30, 15],
    "IMPULSE_NOISE": [.01, .02, .05, .08, .14],
    "SPECKLE_NOISE": [.15, .2, 0.25, 0.3, 0.35],
    "GAUSSIAN_BLUR": [.5, .75, 1, 1.25, 1.5],
    "GLASS_BLUR": [(0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)],
    "DEFOCUS_BLUR": [(0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)],
    "MOTION_BLUR": [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],
    "ZOOM_BLUR_END": [1.06, 1.11, 1.16, 1.21, 1.26],
    "FOG": [(.4, 3), (.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)],
    "SNOW": [(0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)],
    "CONTRAST": [.4, .3, .2, .1, 0.05],
    "BRIGHTNESS": [.1, .2, .3, .4, .5],
    "SATURATE": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)],
    "JPEG_QUALITY": [65, 58, 50, 40, 25],
    "PIXELATE": [0.9, 0.8, 0.7, 0.6, 0.5],
    "ELASTIC": [(IMSIZE * 0, IMSIZE * 0, IMSIZE * 0.08), (IMSIZE * 0.05, IMSIZE * 0.3, IMSIZE * 0.06),
                (IMSIZE * 0.1, IMSIZE * 0.08, IMSIZE * 0.06), (IMSIZE * 0.1, IMSIZE * 0.03, IMSIZE * 0.03),
                (IMSIZE * 0.16, IMSIZE * 0.03, IMSIZE * 0.02)],
}


def flat(values) -> list[float]:
    return [float(v) for entry in values for v in (entry if isinstance(entry, tuple) else (entry,))]


def test_the_64_pixel_tables_are_make_tinyimagenet_c_value_by_value():
    ours = tables.tables_for(64)
    assert set(vars(ours)) == set(MAKE_TINYIMAGENET_C)
    for name, theirs in MAKE_TINYIMAGENET_C.items():
        np.testing.assert_allclose(flat(getattr(ours, name)), flat(theirs), rtol=0, atol=1e-12, err_msg=name)


def test_the_check_fails_on_cifar_tables_at_64_pixels():
    """Planted: CIFAR-10-C's tables in Tiny-ImageNet-C's place differ in most corruptions."""
    differing = [name for name, theirs in MAKE_TINYIMAGENET_C.items()
                 if not np.allclose(flat(getattr(tables.CIFAR, name)), flat(theirs))]
    assert len(differing) >= 14, differing
    assert tables.tables_for(32) is tables.CIFAR and tables.tables_for(64) is tables.TINY_IMAGENET


def test_tables_apply_by_image_size():
    """Gaussian noise's spread is the size's table value: 0.08 at 64x64 and 0.06 at 32x32 (severity 2)."""
    for size, expected in ((64, 0.08), (32, 0.06)):
        grey = torch.full((8, 3, size, size), 128, dtype=torch.uint8)
        noisy = corrupt(grey, "gaussian_noise", 2, seed=0).float() / 255
        assert abs(float((noisy - 128 / 255).std()) - expected) < 0.003, size
    # Contrast against its formula at 64x64: (x - mean) * 0.4 + mean per image and channel, rounded.
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    xf = x.double() / 255
    means = xf.mean((2, 3), keepdim=True)
    reference = torch.round(((xf - means) * 0.4 + means).clamp(0, 1) * 255)
    assert (corrupt(x, "contrast", 1).double() - reference).abs().max() <= 1


@pytest.mark.parametrize("size, supported", [(32, True), (64, True), (48, False), (96, False)])
def test_corruption_support_names_the_sizes_with_tables(size, supported):
    note = tables.corruption_support(size)
    assert (note is None) == supported
    if not supported:
        assert f"{size}x{size}" in note and "Tiny-ImageNet-C" in note and "--image-size 32 or 64" in note


def test_every_corruption_runs_on_64_pixel_images():
    from stress.constants import CORRUPTIONS

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (2, 3, 64, 64), dtype=np.uint8))
    for name in CORRUPTIONS:
        for severity in (1, 5):
            out = corrupt(images, name, severity, seed=1)
            assert out.shape == images.shape and out.dtype == torch.uint8, (name, severity)
            assert (out != images).any(), (name, severity)
