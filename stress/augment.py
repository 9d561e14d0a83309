"""Normalisation and batched crop/flip augmentation on device tensors.

Images travel as uint8 tensors of shape (N, 3, H, W) on whatever device holds
them; `normalize` turns them into the float input the model expects. The
augmentation functions are pure: randomness comes from an explicit
`torch.Generator`, so a run is reproducible and the same offsets can be
replayed in tests.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from stress.constants import CIFAR10_MEAN, CIFAR10_STD

Stats = tuple[tuple[float, ...], tuple[float, ...]]  # per-channel (mean, std) in [0, 1] units
CIFAR10_STATS: Stats = (CIFAR10_MEAN, CIFAR10_STD)


def input_stats(model_config) -> Stats:
    """(mean, std) of a ModelConfig or its dict; a config whose statistics were not measured yet
    (empty lists) gets CIFAR-10's, the seed's dataset. A run always measures or is given them."""
    get = model_config.get if isinstance(model_config, dict) else lambda k: getattr(model_config, k)
    mean, std = tuple(get("mean") or ()), tuple(get("std") or ())
    return (mean, std) if mean and std else CIFAR10_STATS


@functools.lru_cache(maxsize=32)
def _stats_tensors(stats: Stats, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: on a GPU each torch.tensor(..., device=) is a copy that waits for the queue.
    c = len(stats[0])
    return (torch.tensor(stats[0], device=device, dtype=torch.float32).view(1, c, 1, 1),
            torch.tensor(stats[1], device=device, dtype=torch.float32).view(1, c, 1, 1))


def normalize(images: torch.Tensor, stats: Stats = CIFAR10_STATS) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, C, H, W), scaled to [0, 1] then standardised per channel."""
    mean, std = _stats_tensors((tuple(stats[0]), tuple(stats[1])), images.device)
    return (images.float() / 255.0 - mean) / std


def sample_crop_flip(
    n: int, padding: int, flip_probability: float, generator: torch.Generator, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw per-image crop offsets in [0, 2*padding] and flip flags, as RandomCrop/RandomHorizontalFlip do."""
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=generator.device)
    flips = torch.rand(n, generator=generator, device=generator.device) < flip_probability
    if torch.device(device).type == "cuda" and generator.device.type == "cpu":
        # From pinned memory the copies do not wait for the GPU's queue (the draws stay the CPU generator's).
        offsets, flips = offsets.pin_memory().to(device, non_blocking=True), flips.pin_memory().to(device, non_blocking=True)
    else:
        offsets, flips = offsets.to(device), flips.to(device)
    return offsets[0], offsets[1], flips


def crop_flip(
    images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flips: torch.Tensor, padding: int
) -> torch.Tensor:
    """Zero-pad by `padding`, crop an HxW window at (top, left) per image, then flip where `flips`.

    images: (N, C, H, W) of any dtype; top, left: (N,) int offsets into the padded image;
    flips: (N,) bool. Equivalent to torchvision's RandomCrop(H, padding) followed by
    RandomHorizontalFlip applied image by image with the same draws.
    """
    n, _, h, w = images.shape
    if padding == 0:
        out = images.clone()
    else:
        padded = F.pad(images, (padding, padding, padding, padding))  # (N, C, H+2p, W+2p), zeros
        rows = top.view(n, 1) + torch.arange(h, device=images.device).view(1, h)  # (N, H)
        cols = left.view(n, 1) + torch.arange(w, device=images.device).view(1, w)  # (N, W)
        batch = torch.arange(n, device=images.device).view(n, 1, 1)
        # Advanced indexing gathers (N, H, W, C); move channels back to dim 1.
        out = padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
    return torch.where(flips.view(n, 1, 1, 1), out.flip(3), out).contiguous()


def augment_batch(
    images: torch.Tensor, padding: int, flip_probability: float, generator: torch.Generator
) -> torch.Tensor:
    """RandomCrop(32, padding) + RandomHorizontalFlip(p) on a whole batch at once."""
    top, left, flips = sample_crop_flip(images.shape[0], padding, flip_probability, generator, images.device)
    return crop_flip(images, top, left, flips, padding)
