"""Texture-versus-shape probes: patch shuffling, and Gaussian low-pass / high-pass filtering.

Patch shuffling cuts an image into a g x g grid of patches and puts them back in a seeded random
order (a permutation per image): local texture survives, global shape does not. A low-pass
filter keeps coarse structure (shape, layout, colour blobs) and removes fine texture; the
high-pass filter keeps what the low-pass one removed. For a grid of g patches per side and a
low-pass cut-off of g cycles per image, both keep structure at the same scale, side / g pixels,
from opposite ends: the patches are side / g wide, and the low-pass keeps periods longer than
about side / g. `PAIRED_SCALES` pairs them so; the texture-reliance index
(stress.analyses.texture) compares the two.

The filters are Gaussian in the frequency domain: gain exp(-r^2 / (2 c^2)) at radial frequency
r = |(u, v)| (cycles per image, centred coordinates as in stress.perturb.fourier) for cut-off c;
the high-pass gain is 1 minus that, so low + high is the image exactly. The DFT treats the image
as periodic, so each border mixes a little with the opposite one. The high-pass image has zero
mean; the model sees it with the image's own per-channel mean added back (the mean is frequency
(0, 0), which carries colour and brightness but no texture or shape).

All functions take uint8 or float (N, C, H, W) images on the 0..255 scale, on any device, and
return float32 on that scale, clipped to [0, 255] where the model sees them.
"""

from __future__ import annotations

import zlib

import torch

GRIDS = (2, 4, 8)  # patches per side
CUTOFFS = (2.0, 4.0, 8.0)  # Gaussian cut-offs, cycles per image
PAIRED_SCALES = ((2, 2.0), (4, 4.0), (8, 8.0))  # (grid, cut-off) keeping structure at the same scale
HEADLINE_SCALE = (4, 4.0)  # 8-pixel structure on a 32 x 32 image


def probes(height: int, width: int) -> list[str]:
    """Names of the probes for an H x W image: shuffle_<g> for every grid that fits (patches of >= 2 pixels), lowpass_<c>, highpass_<c>."""
    names = [f"shuffle_{g}" for g in GRIDS if min(height, width) // g >= 2]
    return names + [f"lowpass_{c:g}" for c in CUTOFFS] + [f"highpass_{c:g}" for c in CUTOFFS]


def probe_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(f"texture:{name}".encode())) % 2**63


def permutations(n_images: int, patches: int, seed: int) -> torch.Tensor:
    """long (n_images, patches): the patch order of images 0..n_images-1, one seeded permutation per image."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n_images, patches, generator=generator).argsort(dim=1)


def patch_shuffle(images: torch.Tensor, grid: int, order: torch.Tensor) -> torch.Tensor:
    """Rearrange each image's grid x grid patches: output patch j is input patch order[i, j] (row-major patch indices).

    order: long (N, grid * grid), one permutation per image. Rows and columns beyond the last
    whole patch (H or W not divisible by the grid) stay where they are.
    """
    n, c, height, width = images.shape
    ph, pw = height // grid, width // grid
    out = images.float().clone()
    body = out[:, :, : ph * grid, : pw * grid]
    patches = body.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, ph, pw)
    index = order.to(images.device).view(n, grid * grid, 1, 1, 1).expand_as(patches)
    shuffled = patches.gather(1, index)
    out[:, :, : ph * grid, : pw * grid] = shuffled.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, ph * grid, pw * grid)
    return out


def lowpass_gain(height: int, width: int, cutoff: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 (H, W) in numpy.fft's (uncentred) layout: exp(-r^2 / (2 cutoff^2)) at radial frequency r."""
    u = torch.fft.fftfreq(height, d=1.0 / height, device=device).view(-1, 1)  # cycles per image, signed
    v = torch.fft.fftfreq(width, d=1.0 / width, device=device).view(1, -1)
    return torch.exp(-(u**2 + v**2) / (2.0 * cutoff**2)).float()


def split_frequencies(images: torch.Tensor, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) float32, unclipped, with low + high == images: the Gaussian low-pass of cut-off `cutoff` and its complement."""
    x = images.float()
    gain = lowpass_gain(x.shape[-2], x.shape[-1], cutoff, x.device)
    low = torch.fft.ifft2(torch.fft.fft2(x) * gain).real
    return low, x - low


def apply_probe(images: torch.Tensor, name: str, order: torch.Tensor | None = None) -> torch.Tensor:
    """The probe `name` (see `probes`) applied to every image, as the model sees it: float32 in [0, 255].

    order: the patch permutations of shuffle_<g> probes (`permutations`), one row per image.
    """
    kind, _, value = name.partition("_")
    if kind == "shuffle":
        if order is None:
            raise ValueError("patch shuffling needs one permutation per image")
        return patch_shuffle(images, int(value), order)
    low, high = split_frequencies(images, float(value))
    if kind == "lowpass":
        return low.clamp_(0.0, 255.0)
    if kind == "highpass":
        return (high + images.float().mean(dim=(2, 3), keepdim=True)).clamp_(0.0, 255.0)
    raise ValueError(f"unknown texture probe {name!r}")
