"""Severity tables of the CIFAR-10-C corruptions, from the authors' CIFAR-10 generator `make_cifar_c.py`."""

from __future__ import annotations

TABLE_SIZES = (32,)  # image sizes with severity tables: CIFAR-10-C's (CIFAR-100-C was made with the same)


def corruption_support(size: int) -> str | None:
    """None where the corruptions have severity tables for `size`-pixel images, else why they are skipped."""
    if size in TABLE_SIZES:
        return None
    return (f"the corruptions' severity tables are for {' or '.join(f'{s}x{s}' for s in TABLE_SIZES)} images "
            f"(CIFAR-10-C, CIFAR-100-C), and this dataset's are {size}x{size}; pass --image-size 32 to resize on purpose")

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
