"""Severity tables of the common corruptions by image size (index = severity - 1).

32x32: the authors' CIFAR-10 generator `make_cifar_c.py` (CIFAR-100-C was made with the same
tables); the module-level names below are these. 64x64: their Tiny ImageNet generator
`make_tinyimagenet_c.py` (hendrycks/robustness, ImageNet-C/create_c), in TINY_IMAGENET. The
formulas are the same at both sizes; only the numbers differ. `tables_for(size)` picks them.
"""

from __future__ import annotations

from types import SimpleNamespace

# Severity tables of make_cifar_c.py (index = severity - 1).
GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)


SHOT_NOISE = (500, 250, 100, 75, 50)


IMPULSE_NOISE = (0.01, 0.02, 0.03, 0.05, 0.07)


SPECKLE_NOISE = (0.06, 0.1, 0.12, 0.16, 0.2)


GAUSSIAN_BLUR = (0.4, 0.6, 0.7, 0.8, 1.0)


GLASS_BLUR = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))  # sigma, max_delta, iterations


DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))  # disk radius, alias blur


MOTION_BLUR = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))  # radius, sigma


ZOOM_BLUR_END = (1.06, 1.11, 1.16, 1.21, 1.26)  # np.arange(1, end, 0.01)


FOG = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))  # strength, wibble decay


SNOW = (  # loc, scale, zoom, threshold, blur radius, blur sigma, blend
    (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
)


CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)


BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)


SATURATE = ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))  # scale, shift of HSV saturation


JPEG_QUALITY = (80, 65, 58, 50, 40)


PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)


ELASTIC = tuple((32 * a, 32 * b, 32 * c) for a, b, c in  # alpha, sigma, affine jitter (CIFAR: IMSIZE = 32)
                ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)))


CIFAR = SimpleNamespace(
    GAUSSIAN_NOISE=GAUSSIAN_NOISE, SHOT_NOISE=SHOT_NOISE, IMPULSE_NOISE=IMPULSE_NOISE, SPECKLE_NOISE=SPECKLE_NOISE,
    GAUSSIAN_BLUR=GAUSSIAN_BLUR, GLASS_BLUR=GLASS_BLUR, DEFOCUS_BLUR=DEFOCUS_BLUR, MOTION_BLUR=MOTION_BLUR,
    ZOOM_BLUR_END=ZOOM_BLUR_END, FOG=FOG, SNOW=SNOW, CONTRAST=CONTRAST, BRIGHTNESS=BRIGHTNESS, SATURATE=SATURATE,
    JPEG_QUALITY=JPEG_QUALITY, PIXELATE=PIXELATE, ELASTIC=ELASTIC,
)

# make_tinyimagenet_c.py, 64x64 images.
TINY_IMAGENET = SimpleNamespace(
    GAUSSIAN_NOISE=(0.04, 0.08, 0.12, 0.15, 0.18),
    SHOT_NOISE=(250, 100, 50, 30, 15),
    IMPULSE_NOISE=(0.01, 0.02, 0.05, 0.08, 0.14),
    SPECKLE_NOISE=(0.15, 0.2, 0.25, 0.3, 0.35),
    GAUSSIAN_BLUR=(0.5, 0.75, 1, 1.25, 1.5),
    GLASS_BLUR=((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),
    DEFOCUS_BLUR=((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),
    MOTION_BLUR=((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)),
    ZOOM_BLUR_END=(1.06, 1.11, 1.16, 1.21, 1.26),
    FOG=((0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)),
    SNOW=((0.1, 0.2, 1, 0.6, 8, 3, 0.8), (0.1, 0.2, 1, 0.5, 10, 4, 0.8), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
          (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)),
    CONTRAST=(0.4, 0.3, 0.2, 0.1, 0.05),
    BRIGHTNESS=(0.1, 0.2, 0.3, 0.4, 0.5),
    SATURATE=((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),
    JPEG_QUALITY=(65, 58, 50, 40, 25),
    PIXELATE=(0.9, 0.8, 0.7, 0.6, 0.5),
    ELASTIC=tuple((64 * a, 64 * b, 64 * c) for a, b, c in  # alpha, sigma, affine jitter (IMSIZE = 64)
                  ((0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03), (0.16, 0.03, 0.02))),
)

TABLES = {32: CIFAR, 64: TINY_IMAGENET}
TABLE_SIZES = tuple(TABLES)
SOURCES = {32: "CIFAR-10-C / CIFAR-100-C", 64: "Tiny-ImageNet-C"}


def tables_for(size: int) -> SimpleNamespace:
    """The severity tables for `size`-pixel images. Sizes without published tables get CIFAR's, so
    that the transforms stay usable on any size as functions; the pipeline does not run them there
    (corruption_support), since those severities were calibrated for 32x32 images."""
    return TABLES.get(size, CIFAR)


def corruption_support(size: int) -> str | None:
    """None where the corruptions have severity tables for `size`-pixel images, else why they are skipped."""
    if size in TABLES:
        return None
    known = " or ".join(f"{s}x{s} ({SOURCES[s]})" for s in TABLE_SIZES)
    return (f"the corruptions' severity tables are for {known} images, and this dataset's are {size}x{size}; "
            "pass --image-size 32 or 64 to resize on purpose")
