"""Slow per-image numpy/scipy/PIL reference of the CIFAR-10-C corruptions.

Written independently of `stress.perturb.corruptions` from the published formulas (make_cifar_c.py),
in the style of the `imagecorruptions` package: one HxWx3 image at a time, scipy filters,
PIL resizing and JPEG. OpenCV, scikit-image and Wand are not available, so their calls are
replaced by the scipy/numpy equivalents named in each function.

Every function takes one uint8 image (H, W, 3), a severity 1..5 and `draws`: this image's
random draws as numpy arrays in the layout `stress.perturb.corruptions.draw_corruption_noise`
produces (channels first), so that tests can feed both implementations identical noise.
It returns floats in [0, 255] (clipped, not rounded). Used by the unit tests and the benchmark.

`reference_generate` is the whole per-image generation as imagecorruptions does it: each call
draws its own randomness from numpy's global generator (`reference_draws`, the same layout),
applies the corruption and returns uint8. The benchmark times it against `stress.perturb.corruptions.corrupt`.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from scipy import ndimage

from stress.perturb import tables as table  # the severity tables (data), not the code under test


def _float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / 255.0


def _finish(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 1) * 255


def _hwc(array: np.ndarray) -> np.ndarray:
    return np.moveaxis(array, 0, -1)


def _blur(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """skimage.filters.gaussian(multichannel=True): scipy gaussian over the two spatial axes."""
    sigmas = (sigma, sigma, 0) if x.ndim == 3 else sigma
    return ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def gaussian_noise(image, severity, draws):
    return _finish(_float(image) + _hwc(draws["normal"]) * table.GAUSSIAN_NOISE[severity - 1])


def shot_noise(image, severity, draws):
    return _finish(_hwc(draws["counts"]) / table.SHOT_NOISE[severity - 1])


def impulse_noise(image, severity, draws):
    x = _float(image)
    flipped, salted = _hwc(draws["flipped"]), _hwc(draws["salted"])
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return _finish(x)


def speckle_noise(image, severity, draws):
    x = _float(image)
    return _finish(x + x * _hwc(draws["normal"]) * table.SPECKLE_NOISE[severity - 1])


def gaussian_blur(image, severity, draws):
    return _finish(_blur(_float(image), table.GAUSSIAN_BLUR[severity - 1]))


def glass_blur(image, severity, draws):
    sigma, delta, iterations = table.GLASS_BLUR[severity - 1]
    h, w = image.shape[:2]
    x = np.uint8(_blur(_float(image), sigma) * 255)
    shifts = draws["shifts"]
    for iteration in range(iterations):
        position = 0
        for row in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                dx, dy = shifts[iteration, position]
                other_row, other_col = row + dy, col + dx
                # The original's line, verbatim in effect: both sides are numpy views of x, so
                # (row, col) receives the neighbour and the neighbour keeps its value (a copy, not a swap).
                x[row, col], x[other_row, other_col] = x[other_row, other_col], x[row, col]
                position += 1
    return _finish(_blur(x / 255.0, sigma))


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    coords = np.arange(-8, 9)  # radius <= 8 in every CIFAR severity
    xs, ys = np.meshgrid(coords, coords)
    disk = (xs**2 + ys**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    taps = np.exp(-np.array([-1.0, 0.0, 1.0]) ** 2 / (2 * alias_blur**2))  # cv2 3x3 Gaussian
    taps /= taps.sum()
    return ndimage.correlate(disk, np.outer(taps, taps), mode="mirror")


def defocus_blur(image, severity, draws):
    kernel = _disk(*table.DEFOCUS_BLUR[severity - 1])
    x = _float(image)
    # cv2.filter2D = correlation with BORDER_REFLECT_101 (scipy 'mirror').
    channels = [ndimage.correlate(x[..., c], kernel, mode="mirror") for c in range(3)]
    return _finish(np.stack(channels, -1))


def _motion(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick MotionBlurImage on an (H, W, C) float image, by edge-padded shifts."""
    width = 2 * radius + 1
    kernel = np.exp(-np.arange(width) ** 2 / (2 * sigma**2))
    kernel /= kernel.sum()
    h, w = x.shape[:2]
    padded = np.pad(x, ((width, width), (width, width), (0, 0)), mode="edge")
    out = np.zeros_like(x)
    for i in range(width):
        dy = math.ceil(i * math.sin(math.radians(angle)) - 0.5)
        dx = math.ceil(i * math.cos(math.radians(angle)) - 0.5)
        out += kernel[i] * padded[width + dy: width + dy + h, width + dx: width + dx + w]
    return out


def motion_blur(image, severity, draws):
    radius, sigma = table.MOTION_BLUR[severity - 1]
    out = _motion(image.astype(np.float64), radius, sigma, float(draws["angles"]))
    return np.clip(np.round(out), 0, 255)  # ImageMagick writes an 8-bit PNG


def _clipped_zoom(x: np.ndarray, zoom: float) -> np.ndarray:
    h = x.shape[0]
    crop = int(np.ceil(h / zoom))
    top = (h - crop) // 2
    zoomed = ndimage.zoom(x[top:top + crop, top:top + crop], (zoom, zoom, 1), order=1)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim:trim + h, trim:trim + h]


def zoom_blur(image, severity, draws):
    x = _float(image)
    factors = np.arange(1, table.ZOOM_BLUR_END[severity - 1], 0.01)
    out = np.zeros_like(x)
    for factor in factors:
        out += _clipped_zoom(x, factor)
    return _finish((x + out) / (len(factors) + 1))


def snow(image, severity, draws):
    loc, scale, zoom, threshold, radius, sigma, blend = table.SNOW[severity - 1]
    x = _float(image)
    flakes = _clipped_zoom(_hwc(draws["normal"]) * scale + loc, zoom)  # (H, W, 1)
    flakes[flakes < threshold] = 0
    flakes = (np.clip(flakes, 0, 1) * 255).astype(np.uint8).astype(np.float64)
    flakes = np.clip(np.round(_motion(flakes, radius, sigma, float(draws["angles"]))), 0, 255) / 255.0
    grey = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]
    x = blend * x + (1 - blend) * np.maximum(x, grey * 1.5 + 0.5)
    return _finish(x + flakes + np.rot90(flakes, k=2))


def _plasma(draws: dict, map_size: int, decay: float) -> np.ndarray:
    """Diamond-square as the original, with its uniform draws replaced by the given U(-1, 1)."""
    heights = np.zeros((map_size, map_size))
    step, wibble, level = map_size, 100.0, 0
    while step >= 2:
        half = step // 2
        noise = [draws[f"plasma_{level}_{part}"] * wibble**2 for part in range(3)]
        corners = heights[0::step, 0::step]
        accumulated = corners + np.roll(corners, -1, axis=0)
        accumulated += np.roll(accumulated, -1, axis=1)
        heights[half::step, half::step] = accumulated / 4 + noise[0]
        centres = heights[half::step, half::step]
        corners = heights[0::step, 0::step]
        heights[0::step, half::step] = (centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)) / 4 + noise[1]
        heights[half::step, 0::step] = (centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)) / 4 + noise[2]
        step, wibble, level = half, wibble / decay, level + 1
    heights -= heights.min()
    return heights / heights.max()


def fog(image, severity, draws):
    strength, decay = table.FOG[severity - 1]
    x = _float(image)
    max_value = x.max()
    x = x + strength * _plasma(draws, 32, decay)[:32, :32][..., None]
    return _finish(x * max_value / (max_value + strength))


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """scikit-image's rgb2hsv (case by case on the channel holding the maximum)."""
    value = rgb.max(-1)
    delta = rgb.ptp(-1) if hasattr(rgb, "ptp") else np.ptp(rgb, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        saturation = np.where(delta == 0, 0.0, delta / value)
        hue = np.zeros_like(value)
        for channel, base, (a, b) in ((0, 0.0, (1, 2)), (1, 2.0, (2, 0)), (2, 4.0, (0, 1))):
            is_max = rgb[..., channel] == value
            hue[is_max] = base + (rgb[..., a] - rgb[..., b])[is_max] / delta[is_max]
    hue = np.where(delta == 0, 0.0, (hue / 6.0) % 1.0)
    return np.stack([hue, saturation, value], -1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """scikit-image's hsv2rgb: six hue sectors."""
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = np.floor(hue * 6)
    fraction = hue * 6 - sector
    sector = sector.astype(int) % 6
    p, q, t = value * (1 - saturation), value * (1 - fraction * saturation), value * (1 - (1 - fraction) * saturation)
    choices = [np.stack(c, -1) for c in ((value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q))]
    return np.choose(sector[..., None], choices)


def brightness(image, severity, draws):
    hsv = rgb_to_hsv(_float(image))
    hsv[..., 2] = np.clip(hsv[..., 2] + table.BRIGHTNESS[severity - 1], 0, 1)
    return _finish(hsv_to_rgb(hsv))


def saturate(image, severity, draws):
    scale, shift = table.SATURATE[severity - 1]
    hsv = rgb_to_hsv(_float(image))
    hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
    return _finish(hsv_to_rgb(hsv))


def contrast(image, severity, draws):
    x = _float(image)
    means = x.mean(axis=(0, 1), keepdims=True)
    return _finish((x - means) * table.CONTRAST[severity - 1] + means)


def pixelate(image, severity, draws):
    h, w = image.shape[:2]
    factor = table.PIXELATE[severity - 1]
    picture = Image.fromarray(image).resize((int(w * factor), int(h * factor)), Image.BOX)
    return np.asarray(picture.resize((w, h), Image.BOX), dtype=np.float64)


def jpeg_compression(image, severity, draws):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=table.JPEG_QUALITY[severity - 1])
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float64)


def _affine_from_points(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """cv2.getAffineTransform: the 2x3 matrix taking three (x, y) points to three others."""
    system = np.zeros((6, 6))
    system[0::2, 0:2], system[0::2, 2] = source, 1
    system[1::2, 3:5], system[1::2, 5] = source, 1
    return np.linalg.solve(system, target.reshape(-1)).reshape(2, 3)


def elastic_transform(image, severity, draws):
    alpha, sigma, _ = table.ELASTIC[severity - 1]
    x = _float(image)
    h, w = x.shape[:2]
    centre, half = np.array([w // 2, h // 2], dtype=np.float64), min(h, w) // 3
    anchors = np.array([centre + half, [centre[0] + half, centre[1] - half], centre - half])
    forward = np.vstack([_affine_from_points(anchors, anchors + draws["affine"]), [0, 0, 1]])
    inverse = np.linalg.inv(forward)  # warpAffine samples the source at M^-1(destination)
    # scipy works in (row, col): swap the (x, y) roles of the inverse matrix.
    matrix = np.array([[inverse[1, 1], inverse[1, 0]], [inverse[0, 1], inverse[0, 0]]])
    offset = np.array([inverse[1, 2], inverse[0, 2]])
    warped = np.stack([ndimage.affine_transform(x[..., c], matrix, offset, order=1, mode="mirror")
                       for c in range(3)], -1)
    if sigma > 0:
        dx = ndimage.gaussian_filter(draws["dx"].astype(np.float64), sigma, mode="reflect", truncate=3) * alpha
        dy = ndimage.gaussian_filter(draws["dy"].astype(np.float64), sigma, mode="reflect", truncate=3) * alpha
    else:
        dx = dy = np.zeros((h, w))
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.stack([ndimage.map_coordinates(warped[..., c], [rows + dy, cols + dx], order=1, mode="reflect")
                    for c in range(3)], -1)
    return _finish(out)


REFERENCES = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise, "defocus_blur": defocus_blur, "glass_blur": glass_blur,
    "motion_blur": motion_blur, "zoom_blur": zoom_blur, "gaussian_blur": gaussian_blur, "snow": snow,
    "fog": fog, "brightness": brightness, "contrast": contrast, "saturate": saturate,
    "elastic_transform": elastic_transform, "pixelate": pixelate, "jpeg_compression": jpeg_compression,
}


def reference_corrupt(images: np.ndarray, name: str, severity: int, draws: dict) -> np.ndarray:
    """Loop over images (N, H, W, 3) uint8 with batched `draws` (numpy, first axis N) -> float (N, H, W, 3)."""
    function = REFERENCES[name]
    return np.stack([function(image, severity, {k: v[i] for k, v in draws.items()})
                     for i, image in enumerate(images)])


def reference_draws(image: np.ndarray, name: str, severity: int) -> dict:
    """One image's random draws from numpy's global generator, as the per-image code draws them
    (np.random.normal / poisson / uniform / randint, skimage's salt & pepper), in the layout of
    `stress.perturb.corruptions.draw_corruption_noise` (channels first, no batch axis)."""
    h, w = image.shape[:2]
    index = severity - 1
    if name in ("gaussian_noise", "speckle_noise"):
        return {"normal": np.random.normal(size=(3, h, w))}
    if name == "shot_noise":
        return {"counts": np.random.poisson(np.moveaxis(image, -1, 0) / 255.0 * table.SHOT_NOISE[index]).astype(np.float64)}
    if name == "impulse_noise":  # skimage.util.random_noise(mode="s&p"): two uniform fields
        return {"flipped": np.random.random((3, h, w)) < table.IMPULSE_NOISE[index],
                "salted": np.random.random((3, h, w)) < 0.5}
    if name == "glass_blur":  # the original calls np.random.randint per pixel; one call is cheaper
        _, delta, iterations = table.GLASS_BLUR[index]
        positions = max(h - 2 * delta, 0) * max(w - 2 * delta, 0)
        return {"shifts": np.random.randint(-delta, delta, size=(iterations, positions, 2))}
    if name == "motion_blur":
        return {"angles": np.random.uniform(-45, 45)}
    if name == "snow":
        return {"normal": np.random.normal(size=(1, h, w)), "angles": np.random.uniform(-135, -45)}
    if name == "fog":
        size = max(32, 1 << (max(h, w) - 1).bit_length())
        return {f"plasma_{level}_{part}": np.random.uniform(-1, 1, (2**level, 2**level))
                for level in range(int(math.log2(size))) for part in range(3)}
    if name == "elastic_transform":
        jitter = table.ELASTIC[index][2]
        return {"affine": np.random.uniform(-jitter, jitter, size=(3, 2)),
                "dx": np.random.uniform(-1, 1, size=(h, w)), "dy": np.random.uniform(-1, 1, size=(h, w))}
    return {}


def reference_generate(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """imagecorruptions-style generation: per image, draw, corrupt, round to uint8. (N, H, W, 3) uint8 in and out."""
    np.random.seed(seed)
    function = REFERENCES[name]
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i] = np.uint8(np.round(function(image, severity, reference_draws(image, name, severity))))
    return out
