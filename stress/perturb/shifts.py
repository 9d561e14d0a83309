"""Geometric shifts for the stress suite: translations, flips, rotations, scaling.

The augmentation under study is RandomCrop(padding) + RandomHorizontalFlip, so
translations and horizontal flips are invariances the augmented model was
trained for, while rotations and scaling are not. Comparing accuracy across
these families separates "learned the invariance it was shown" from "became
generally more robust".

Pixels a shift uncovers are filled by replicating the nearest edge pixel. Zero
(black) fill would favour the augmented model, which saw zero-padded borders in
training (RandomCrop pads with zeros) while the baseline never did; it stays
available as its own labelled family (`zerofill_` prefix, family `<family>_zerofill`),
and the default grid measures translations under both fills, so the black-border
effect is a number of its own.

Every shift is a pure, batched function of uint8 images (N, 3, H, W) on any
device and returns uint8 of the same shape on the same device. Shifts are named
by strings (`translate_<dx>_<dy>`, `hflip`, `rotate_<degrees>`, `scale_<factor>`,
each but hflip optionally prefixed `zerofill_`) so that they can travel through
configs and result files unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from stress.errors import StressError

ROTATION_DEGREES = (-15, -10, -5, 5, 10, 15)
SCALE_FACTORS = (0.8, 0.9, 1.1, 1.2)
SHIFT_FORMS = ("translate_<dx>_<dy> (integers), hflip, rotate_<degrees>, scale_<factor> (> 0); "
               "prefix zerofill_ for black instead of edge-replicated borders")
ZERO_FILL = "zerofill_"
FILLS = ("edge", "zero")


def list_shifts(translation_step: int = 2, max_translation: int = 4) -> list[str]:
    """Names of the standard shift grid: translations (incl. 0_0) under edge and under zero
    fill, hflip, rotations and scales (edge fill)."""
    if translation_step < 1 or max_translation < 0:
        raise StressError(
            f"translation grid needs step >= 1 and max >= 0, got step={translation_step}, max={max_translation}"
        )
    offsets = range(-max_translation, max_translation + 1, translation_step)
    names = [f"translate_{dx}_{dy}" for dx in offsets for dy in offsets]
    names += [f"{ZERO_FILL}translate_{dx}_{dy}" for dx in offsets for dy in offsets]
    names.append("hflip")
    names += [f"rotate_{degrees}" for degrees in ROTATION_DEGREES]
    names += [f"scale_{factor}" for factor in SCALE_FACTORS]
    return names


def _parse(name: str) -> tuple[str, tuple[float, ...], str]:
    """Split a shift name into its family, numeric parameters and fill; StressError if malformed."""
    if isinstance(name, str) and name.startswith(ZERO_FILL) and name != f"{ZERO_FILL}hflip":
        family, parameters = _parse_edge(name[len(ZERO_FILL):])
        if family != "flip":
            return family, parameters, "zero"
        raise StressError(f"unknown shift {name!r}; valid forms: {SHIFT_FORMS}")
    return (*_parse_edge(name), "edge")


def _parse_edge(name: str) -> tuple[str, tuple[float, ...]]:
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
    """"translation" | "flip" | "rotation" | "scale" for a shift name, with "_zerofill"
    appended for zero-filled shifts ("translation_zerofill")."""
    family, _, fill = _parse(name)
    return family if fill == "edge" else f"{family}_zerofill"


def translate(images: torch.Tensor, dx: int, dy: int, fill: str = "edge") -> torch.Tensor:
    """Move content dx pixels right and dy pixels down.

    fill="edge": uncovered pixels repeat the nearest border pixel (output (y, x) reads input
    (clamp(y - dy), clamp(x - dx))). fill="zero": they are black, which equals cropping an
    HxW window at offset (pad - dy, pad - dx) from the image zero-padded by pad >= |dx|, |dy|,
    i.e. exactly one draw of the RandomCrop augmentation.
    """
    _, _, height, width = images.shape  # (N, 3, H, W)
    if fill == "edge":
        rows = (torch.arange(height, device=images.device) - dy).clamp(0, height - 1)
        cols = (torch.arange(width, device=images.device) - dx).clamp(0, width - 1)
        return images[:, :, rows][:, :, :, cols].contiguous()
    out = torch.zeros_like(images)
    if abs(dx) >= width or abs(dy) >= height:
        return out
    # Destination rows/cols [dst_start, dst_end) receive source rows/cols shifted back by the offset.
    out[:, :, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = images[
        :, :, max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def _warp(images: torch.Tensor, inverse: torch.Tensor, fill: str = "edge") -> torch.Tensor:
    """Resample images through an inverse 2x2 map about the image centre (bilinear; outside the
    image, the nearest border value for fill="edge", zero for fill="zero").

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
    warped = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border" if fill == "edge" else "zeros", align_corners=False)
    # Bilinear weights are convex, so values stay in [0, 255]; clamp only guards float error.
    return warped.round().clamp(0, 255).to(torch.uint8)


def rotate(images: torch.Tensor, degrees: float, fill: str = "edge") -> torch.Tensor:
    """Rotate counter-clockwise (as displayed, y down) by `degrees` about the centre, like torchvision's rotate."""
    if degrees == 0:
        return images.clone()
    radians = math.radians(degrees)
    cos, sin = math.cos(radians), math.sin(radians)
    # A counter-clockwise turn on screen (y pointing down) is the matrix [[cos, sin], [-sin, cos]];
    # sampling needs its inverse, the transpose.
    inverse = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64)
    return _warp(images, inverse, fill)


def scale(images: torch.Tensor, factor: float, fill: str = "edge") -> torch.Tensor:
    """Zoom by `factor` about the centre (< 1 shrinks content and fills the border, > 1 crops in)."""
    if factor == 1:
        return images.clone()
    inverse = torch.eye(2, dtype=torch.float64) / factor
    return _warp(images, inverse, fill)


def apply_shift(images: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, H, W) on the same device, shifted as `name` says."""
    family, parameters, fill = _parse(name)
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise StressError(f"shifts expect uint8 images of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if family == "translation":
        return translate(images, int(parameters[0]), int(parameters[1]), fill)
    if family == "flip":
        return images.flip(3)
    if family == "rotation":
        return rotate(images, parameters[0], fill)
    return scale(images, parameters[0], fill)
