"""Fourier-basis perturbations (Yin et al. 2019, "A Fourier perspective on model robustness").

For a frequency k = (k1, k2) of an H x W image's 2-D DFT, the basis image U_k is the real image
of unit L2 norm whose DFT is supported on k and on its mirror -k only. With theta(m, n) =
2 pi (k1 m / H + k2 n / W):

    U_k = (cos theta - sin theta) / sqrt(H W)     when k != -k (mod H, W)
    U_k = cos theta / sqrt(H W)                   for the four self-mirrored k (0 or H/2, 0 or W/2)

This is the real part of the inverse DFT of (1 + i)/2 at k and (1 - i)/2 at -k, scaled to unit
norm; tests/unit/perturb/test_fourier.py checks it against numpy.fft. U_k = U_-k, so a heat map
needs only one frequency of each mirrored pair: `frequencies` lists those (514 of 1,024 for
32 x 32). A perturbed image is x + norm * s_c * U_k per channel c, with a random sign s_c per
image and channel, on the [0, 1] pixel scale, clipped to [0, 1]; norm 4 is Yin et al.'s CIFAR-10
setting. The result stays float (0..255 scale, not rounded to uint8), so the perturbation has
exactly the norm asked for wherever clipping leaves it alone.

Frequencies are named in centred coordinates (u, v) = k shifted into [-H/2, H/2) x [-W/2, W/2),
the layout of numpy.fft.fftshift, where (0, 0) is the image mean and |(u, v)| its radial frequency.
"""

from __future__ import annotations

import math
import zlib

import torch

DEFAULT_NORM = 4.0
MAX_SIDE = 64  # larger images have too many frequencies for a full heat map (about H W / 2 of them)


def centred(k: int, size: int) -> int:
    """A DFT index in [0, size) as a signed frequency in [-size/2, size/2)."""
    return (k + size // 2) % size - size // 2


def frequencies(height: int, width: int) -> list[tuple[int, int]]:
    """One (k1, k2) per mirrored pair {k, -k} of DFT indices: the smaller of the two, in row-major order."""
    out = []
    for k1 in range(height):
        for k2 in range(width):
            mirror = ((-k1) % height, (-k2) % width)
            if (k1, k2) <= mirror:
                out.append((k1, k2))
    return out


def basis(height: int, width: int, k1: int, k2: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """U_k: float32 (H, W) of unit L2 norm whose DFT is supported on (k1, k2) and its mirror."""
    m = torch.arange(height, dtype=torch.float64, device=device).view(-1, 1)
    n = torch.arange(width, dtype=torch.float64, device=device).view(1, -1)
    theta = 2 * math.pi * (k1 * m / height + k2 * n / width)
    mirrored = ((-k1) % height, (-k2) % width) == (k1, k2)
    image = torch.cos(theta) if mirrored else torch.cos(theta) - torch.sin(theta)
    return (image / math.sqrt(height * width)).float()


def frequency_seed(seed: int, k1: int, k2: int) -> int:
    """Seed of one frequency's signs: fixed by the run seed and the frequency, not by how images are sharded."""
    return (seed * 1_000_003 + zlib.crc32(f"fourier{k1},{k2}".encode())) % 2**63


def signs(n_images: int, channels: int, seed: int, k1: int, k2: int) -> torch.Tensor:
    """±1 float32 (n_images, channels): the sign of the basis image per image and channel, for images 0..n_images-1."""
    generator = torch.Generator().manual_seed(frequency_seed(seed, k1, k2))
    return torch.randint(0, 2, (n_images, channels), generator=generator).float() * 2 - 1


def perturb(images: torch.Tensor, pattern: torch.Tensor, image_signs: torch.Tensor, norm: float = DEFAULT_NORM) -> torch.Tensor:
    """uint8 (N, C, H, W) + norm * sign * pattern on the [0, 1] scale, clipped; float32 on the 0..255 scale.

    pattern: (H, W) unit-norm basis image; image_signs: (N, C) of ±1, on the images' device.
    """
    step = (norm * 255.0) * image_signs.to(images.device)[:, :, None, None] * pattern.to(images.device)[None, None]
    return (images.float() + step).clamp_(0.0, 255.0)
