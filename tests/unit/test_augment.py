"""stress.augment against torchvision's per-image transforms and hand formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from torchvision import transforms
from torchvision.transforms.v2 import functional as TF

from stress.augment import CIFAR10_MEAN, CIFAR10_STD, augment_batch, crop_flip, normalize, sample_crop_flip


def random_images(n: int, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), generator=generator, dtype=torch.uint8)


def reference_crop_flip(images, top, left, flips, padding):
    """torchvision, one image at a time: pad with zeros, crop HxW at (top, left), then flip."""
    _, _, h, w = images.shape
    out = []
    for image, t, l, f in zip(images, top.tolist(), left.tolist(), flips.tolist()):
        padded = TF.pad(image, [padding], fill=0)
        cropped = TF.crop(padded, t, l, h, w)
        out.append(TF.horizontal_flip(cropped) if f else cropped)
    return torch.stack(out)


@pytest.mark.parametrize("height, width, padding", [(32, 32, 4), (16, 24, 3), (32, 32, 0)])
def test_crop_flip_matches_torchvision_per_image(height, width, padding):
    n = 24
    images = random_images(n, height, width)
    generator = torch.Generator().manual_seed(1)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    if padding:
        # Make sure the extreme offsets (touching the zero border on either side) are covered.
        top[:4] = torch.tensor([0, 2 * padding, 0, 2 * padding])
        left[:4] = torch.tensor([0, 0, 2 * padding, 2 * padding])
    out = crop_flip(images, top, left, flips, padding)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    torch.testing.assert_close(out, reference_crop_flip(images, top, left, flips, padding), rtol=0, atol=0)


def test_crop_flip_corner_offsets_by_hand():
    # A 1-channel 4x4 ramp, padding 1: the (0, 0) crop has a zero row and column on top/left.
    image = torch.arange(1, 17, dtype=torch.uint8).view(1, 1, 4, 4)
    out = crop_flip(image, torch.tensor([0]), torch.tensor([0]), torch.tensor([False]), padding=1)
    expected = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3], [0, 5, 6, 7], [0, 9, 10, 11]], dtype=torch.uint8)
    assert torch.equal(out[0, 0], expected)
    # Offset (2, 2) with a flip: bottom-right window, mirrored.
    out = crop_flip(image, torch.tensor([2]), torch.tensor([2]), torch.tensor([True]), padding=1)
    expected = torch.tensor([[0, 8, 7, 6], [0, 12, 11, 10], [0, 16, 15, 14], [0, 0, 0, 0]], dtype=torch.uint8)
    assert torch.equal(out[0, 0], expected)
    # The centre offset without flip is the identity.
    assert torch.equal(crop_flip(image, torch.tensor([1]), torch.tensor([1]), torch.tensor([False]), 1), image)


def test_crop_flip_keeps_float_images_and_does_not_modify_input():
    images = random_images(5).float() / 255
    before = images.clone()
    top, left, flips = torch.tensor([0, 1, 2, 3, 8]), torch.tensor([8, 0, 4, 4, 4]), torch.tensor([1, 0, 1, 0, 1]).bool()
    out = crop_flip(images, top, left, flips, 4)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference_crop_flip(images, top, left, flips, 4), rtol=0, atol=0)
    assert torch.equal(images, before)


def test_random_crop_with_fixed_params_agrees():
    # torchvision's RandomCrop(32, padding=4) draws (i, j) on the padded 40x40 image; replay those draws.
    images = random_images(16)
    crop = transforms.RandomCrop(32, padding=4)
    torch.manual_seed(0)
    params = [crop.get_params(TF.pad(image, [4]), (32, 32)) for image in images]
    top = torch.tensor([p[0] for p in params])
    left = torch.tensor([p[1] for p in params])
    expected = torch.stack([TF.crop(TF.pad(image, [4]), i, j, h, w) for image, (i, j, h, w) in zip(images, params)])
    out = crop_flip(images, top, left, torch.zeros(16, dtype=torch.bool), 4)
    assert torch.equal(out, expected)
    # The offsets RandomCrop can draw are exactly the range sample_crop_flip draws from.
    torch.manual_seed(1)
    torchvision_range = {crop.get_params(torch.zeros(3, 40, 40), (32, 32))[0] for _ in range(400)}
    ours_top, ours_left, _ = sample_crop_flip(400, 4, 0.5, torch.Generator().manual_seed(1))
    assert torchvision_range == set(ours_top.tolist()) == set(ours_left.tolist()) == set(range(9))


def test_augment_batch_is_deterministic_for_a_seeded_generator():
    images = random_images(32)
    first = augment_batch(images, 4, 0.5, torch.Generator().manual_seed(7))
    second = augment_batch(images, 4, 0.5, torch.Generator().manual_seed(7))
    other = augment_batch(images, 4, 0.5, torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    # The generator advances: two calls on one generator draw different crops.
    generator = torch.Generator().manual_seed(7)
    assert torch.equal(augment_batch(images, 4, 0.5, generator), first)
    assert not torch.equal(augment_batch(images, 4, 0.5, generator), first)


def test_augment_batch_replays_sampled_offsets():
    images = random_images(20)
    out = augment_batch(images, 4, 0.5, torch.Generator().manual_seed(3))
    top, left, flips = sample_crop_flip(20, 4, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(out, reference_crop_flip(images, top, left, flips, 4))


@pytest.mark.parametrize("probability", [0.0, 0.3, 1.0])
def test_flip_frequency_matches_probability(probability):
    n = 4000
    # Padding 0 isolates the flip; random images are never symmetric, so a flip is detectable.
    images = random_images(n, 8, 8)
    out = augment_batch(images, 0, probability, torch.Generator().manual_seed(11))
    flipped = (out == images.flip(3)).flatten(1).all(1)
    unchanged = (out == images).flatten(1).all(1)
    assert bool((flipped ^ unchanged).all())  # each image is either kept or mirrored
    rate = flipped.float().mean().item()
    assert abs(rate - probability) < 0.03  # 0.03 is > 4 standard errors at n = 4000


def test_sampled_offsets_are_uniform():
    top, left, flips = sample_crop_flip(9000, 4, 0.5, torch.Generator().manual_seed(5))
    assert top.dtype == torch.int64 and flips.dtype == torch.bool
    for offsets in (top, left):
        counts = np.bincount(offsets.numpy(), minlength=9)
        assert len(counts) == 9
        assert scipy_stats.chisquare(counts).pvalue > 1e-4
    # Top and left are drawn independently, not equal.
    assert (top != left).float().mean() > 0.8


def test_normalize_matches_manual_formula():
    images = random_images(6)
    out = normalize(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    pixels = images.numpy().astype(np.float64) / 255.0
    mean = np.array(CIFAR10_MEAN).reshape(1, 3, 1, 1)
    std = np.array(CIFAR10_STD).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(out.numpy(), (pixels - mean) / std, rtol=0, atol=1e-5)
    # Spot check one value by hand: pixel 255 in the red channel.
    white = normalize(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8))
    assert white[0, 0, 0, 0].item() == pytest.approx((1 - 0.4914) / 0.2470, abs=1e-5)
