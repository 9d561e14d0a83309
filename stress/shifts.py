"""Geometric shifts for the stress suite: translations, flips, rotations, scaling.

The augmentation under study is RandomCrop(padding) + RandomHorizontalFlip, so
translations and horizontal flips are invariances the augmented model was
trained for, while rotations and scaling are not. Comparing accuracy across
these families separates "learned the invariance it was shown" from "became
generally more robust".

Every shift is a pure, batched function of uint8 images (N, 3, H, W) on any
device and returns uint8 of the same shape on the same device. Shifts are named
by strings (`translate_<dx>_<dy>`, `hflip`, `rotate_<degrees>`, `scale_<factor>`)
so that they can travel through configs and result files unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from stress.errors import StressError

ROTATION_DEGREES = (-15, -10, -5, 5, 10, 15)
SCALE_FACTORS = (0.8, 0.9, 1.1, 1.2)
SHIFT_FORMS = "translate_<dx>_<dy> (integers), hflip, rotate_<degrees>, scale_<factor> (> 0)"


def list_shifts(translation_step: int = 2, max_translation: int = 4) -> list[str]:
    """Names of the standard shift grid: translations (incl. 0_0), hflip, rotations, scales."""
    if translation_step < 1 or max_translation < 0:
        raise StressError(
            f"translation grid needs step >= 1 and max >= 0, got step={translation_step}, max={max_translation}"
        )
    offsets = range(-max_translation, max_translation + 1, translation_step)
    names = [f"translate_{dx}_{dy}" for dx in offsets for dy in offsets]
    names.append("hflip")
    names += [f"rotate_{degrees}" for degrees in ROTATION_DEGREES]
    names += [f"scale_{factor}" for factor in SCALE_FACTORS]
    return names


def _parse(name: str) -> tuple[str, tuple[float, ...]]:
    """Split a shift name into its family and numeric parameters; StressError if malformed."""
    try:
        if name == "hflip":
            return "flip", ()
        if name.startswith("translate_"):
            dx_text, dy_text = name[len("translate_") :].split("_")
            return "translation", (int(dx_text), int(dy_text))
        if name.startswith("rotate_"):
            degrees = float(name[len("rotate_") :])
            if math.isfinite(degrees):
                return "rotation", (degrees,)
        if name.startswith("scale_"):
            factor = float(name[len("scale_") :])
            if math.isfinite(factor) and factor > 0:
                return "scale", (factor,)
    except ValueError:
        pass
    raise StressError(f"unknown shift {name!r}; valid forms: {SHIFT_FORMS}")


def shift_family(name: str) -> str:
    """"translation" | "flip" | "rotation" | "scale" for a shift name."""
    return _parse(name)[0]


def translate(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move content dx pixels right and dy pixels down, filling the uncovered border with zeros.

    Equals cropping an HxW window at offset (pad - dy, pad - dx) from the image zero-padded
    by pad >= |dx|, |dy|, i.e. exactly one draw of the RandomCrop augmentation.
    """
    _, _, height, width = images.shape  # (N, 3, H, W)
    out = torch.zeros_like(images)
    if abs(dx) >= width or abs(dy) >= height:
        return out
    # Destination rows/cols [dst_start, dst_end) receive source rows/cols shifted back by the offset.
    out[:, :, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = images[
        :, :, max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def _warp(images: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Resample images through an inverse 2x2 map about the image centre (bilinear, zero outside).

    `inverse` maps output pixel offsets from the centre (x right, y down, in pixels) to
    input pixel offsets. Pixel centres follow the align_corners=False convention, the same
    one torchvision's tensor rotate/affine use, so results match them up to float rounding.
    """
    n, _, height, width = images.shape  # (N, 3, H, W)
    # affine_grid works in normalised coordinates where x spans width/2 pixels per unit and
    # y spans height/2; conjugating by that scaling keeps the map correct for non-square images.
    to_pixels = torch.diag(torch.tensor([width / 2.0, height / 2.0], dtype=torch.float64))
    normalised = torch.linalg.inv(to_pixels) @ inverse.to(torch.float64) @ to_pixels  # (2, 2)
    theta = torch.zeros(1, 2, 3, dtype=torch.float32, device=images.device)
    theta[0, :, :2] = normalised.to(torch.float32)
    grid = F.affine_grid(theta, [1, 3, height, width], align_corners=False).expand(n, -1, -1, -1)  # (N, H, W, 2)
    warped = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Bilinear weights are convex, so values stay in [0, 255]; clamp only guards float error.
    return warped.round().clamp(0, 255).to(torch.uint8)


def rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate counter-clockwise (as displayed, y down) by `degrees` about the centre, like torchvision's rotate."""
    if degrees == 0:
        return images.clone()
    radians = math.radians(degrees)
    cos, sin = math.cos(radians), math.sin(radians)
    # A counter-clockwise turn on screen (y pointing down) is the matrix [[cos, sin], [-sin, cos]];
    # sampling needs its inverse, the transpose.
    inverse = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64)
    return _warp(images, inverse)


def scale(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom by `factor` about the centre (< 1 shrinks content and zero-fills the border, > 1 crops in)."""
    if factor == 1:
        return images.clone()
    inverse = torch.eye(2, dtype=torch.float64) / factor
    return _warp(images, inverse)


def apply_shift(images: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, H, W) on the same device, shifted as `name` says."""
    family, parameters = _parse(name)
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise StressError(f"shifts expect uint8 images of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if family == "translation":
        return translate(images, int(parameters[0]), int(parameters[1]))
    if family == "flip":
        return images.flip(3)
    if family == "rotation":
        return rotate(images, parameters[0])
    return scale(images, parameters[0])
