"""The building blocks of the corruptions, batched on device tensors: separable and 2-D filters, HSV,
PIL-compatible resizes, clipped zoom, motion-blur taps, bilinear sampling, the sparse plane
operators of zoom and defocus blur, exact Poisson by table inversion, and the plasma fractal.

Each is tested against a slow reference (scipy, PIL, a per-pixel loop) in tests/unit/perturb/.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from stress.perturb.tables import ZOOM_BLUR_END, tables_for


def fold_indices(index: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Map out-of-range integer indices into [0, size) for a border mode.

    'edge' repeats the border pixel, 'mirror' reflects about it (d c b | a b c d, OpenCV
    REFLECT_101, scipy 'mirror'), 'symmetric' reflects about its outer edge (c b a | a b c,
    scipy 'reflect').
    """
    if mode == "edge" or size == 1:
        return index.clamp(0, size - 1)
    period = 2 * size - 2 if mode == "mirror" else 2 * size
    index = index.remainder(period)
    return torch.where(index >= size, period - index - (0 if mode == "mirror" else 1), index)


def _pad(x: torch.Tensor, radius: int, dim: int, mode: str) -> torch.Tensor:
    index = torch.arange(-radius, x.shape[dim] + radius, device=x.device)
    return x.index_select(dim, fold_indices(index, x.shape[dim], mode))


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian: radius int(truncate * sigma + 0.5), normalised."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * offsets**2 / sigma**2)
    return weights / weights.sum()


@functools.lru_cache(maxsize=64)
def filter_matrix(size: int, kernel: tuple[float, ...], mode: str) -> np.ndarray:
    """(size, size) matrix of a 1-D correlation with `kernel`, border `mode` folded in.

    A small dense matmul is much faster on CPU than conv2d with a one-channel 1-D kernel.
    """
    radius = len(kernel) // 2
    matrix = np.zeros((size, size))
    targets = np.arange(size)
    for tap, weight in enumerate(kernel):
        sources = fold_indices(torch.from_numpy(targets + tap - radius), size, mode).numpy()
        np.add.at(matrix, (targets, sources), weight)
    return matrix


def filter_separable(x: torch.Tensor, kernel: np.ndarray, mode: str) -> torch.Tensor:
    """Correlate every (H, W) plane of x (N, C, H, W) with `kernel` along rows then columns."""
    kernel_key = tuple(float(k) for k in kernel)
    rows = torch.as_tensor(filter_matrix(x.shape[2], kernel_key, mode), dtype=x.dtype, device=x.device)
    cols = torch.as_tensor(filter_matrix(x.shape[3], kernel_key, mode), dtype=x.dtype, device=x.device)
    return torch.matmul(rows, torch.matmul(x, cols.T))  # (N, C, H, W)


def gaussian_filter(x: torch.Tensor, sigma: float, mode: str = "edge", truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian / scipy gaussian_filter over H and W (default border: nearest)."""
    if sigma <= 0:  # scipy leaves an axis untouched when its sigma is zero
        return x
    return filter_separable(x, gaussian_kernel(sigma, truncate), mode)


def filter_2d(x: torch.Tensor, kernel: np.ndarray, mode: str) -> torch.Tensor:
    """Correlate every plane of x (N, C, H, W) with an odd square 2-D kernel.

    A weighted sum of shifted views of the padded batch: cheaper than a one-channel conv2d here.
    """
    h, w = x.shape[2:]
    radius = kernel.shape[0] // 2
    padded = _pad(_pad(x, radius, 2, mode), radius, 3, mode)  # (N, C, H + 2r, W + 2r)
    out = torch.zeros_like(x)
    for row, col in zip(*np.nonzero(kernel)):
        out += float(kernel[row, col]) * padded[:, :, row: row + h, col: col + w]
    return out


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV in [0, 1], with scikit-image's conventions (hue 0 for greys)."""
    red, green, blue = rgb.unbind(1)
    value = rgb.amax(1)
    delta = value - rgb.amin(1)
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    saturation = torch.where(value > 0, delta / torch.where(value > 0, value, torch.ones_like(value)), 0.0)
    hue = torch.where(red == value, (green - blue) / safe_delta, 0.0)
    hue = torch.where(green == value, 2.0 + (blue - red) / safe_delta, hue)
    hue = torch.where(blue == value, 4.0 + (red - green) / safe_delta, hue)  # blue wins ties, as in skimage
    hue = torch.where(delta > 0, (hue / 6.0).remainder(1.0), 0.0)
    return torch.stack((hue, saturation, value), 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv`; the closed form equals the usual six-sector case split."""
    hue, saturation, value = hsv.unbind(1)
    offsets = torch.tensor((5.0, 3.0, 1.0), device=hsv.device).view(1, 3, 1, 1)
    sector = (offsets + hue.unsqueeze(1) * 6.0).remainder(6.0)  # (N, 3, H, W)
    ramp = torch.minimum(sector, 4.0 - sector).clamp(0.0, 1.0)
    return value.unsqueeze(1) * (1.0 - saturation.unsqueeze(1) * ramp)


@functools.lru_cache(maxsize=64)
def pil_resize_weights(in_size: int, out_size: int, box: bool) -> np.ndarray:
    """(out_size, in_size) weights of Pillow's BOX (or NEAREST) resampling along one axis."""
    scale = in_size / out_size
    weights = np.zeros((out_size, in_size))
    for out_index in range(out_size):
        center = (out_index + 0.5) * scale
        if not box:
            weights[out_index, min(int(center), in_size - 1)] = 1.0
            continue
        support = 0.5 * max(scale, 1.0)
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), in_size)
        for in_index in range(first, last):
            # Pillow's box filter is 1 on (-0.5, 0.5] of the (rescaled) distance to the centre.
            distance = (in_index - center + 0.5) / max(scale, 1.0)
            weights[out_index, in_index] = 1.0 if -0.5 < distance <= 0.5 else 0.0
        weights[out_index] /= weights[out_index].sum()
    return weights


def resize_like_pil(x255: torch.Tensor, height: int, width: int, box: bool = True) -> torch.Tensor:
    """Pillow's 8-bit separable resize: horizontal pass, round, vertical pass, round.

    x255: (N, C, H, W) float holding integers 0..255. Pillow rounds half up after each pass.
    """
    rows = torch.as_tensor(pil_resize_weights(x255.shape[2], height, box), dtype=x255.dtype, device=x255.device)
    cols = torch.as_tensor(pil_resize_weights(x255.shape[3], width, box), dtype=x255.dtype, device=x255.device)
    if width != x255.shape[3]:
        x255 = torch.floor(torch.matmul(x255, cols.T).add_(0.5 + 1e-4)).clamp_(0, 255)
    if height != x255.shape[2]:
        x255 = torch.floor(torch.matmul(rows, x255).add_(0.5 + 1e-4)).clamp_(0, 255)
    return x255


@functools.lru_cache(maxsize=64)
def clipped_zoom_weights(size: int, zoom: float) -> np.ndarray:
    """(size, size) linear map of the original `clipped_zoom` along one axis.

    Centre crop of ceil(size / zoom) pixels, scipy.ndimage.zoom(order=1) to round(crop * zoom)
    pixels (corner-aligned sampling), then centre trim back to `size`.
    """
    crop = int(np.ceil(size / zoom))
    top = (size - crop) // 2
    zoomed = int(round(crop * zoom))
    trim = (zoomed - size) // 2
    step = (crop - 1) / (zoomed - 1) if zoomed > 1 else 0.0
    weights = np.zeros((size, size))
    for out_index in range(size):
        position = (out_index + trim) * step
        low = min(int(np.floor(position)), crop - 1)
        fraction = position - low
        weights[out_index, top + low] += 1.0 - fraction
        if fraction > 0:
            weights[out_index, top + min(low + 1, crop - 1)] += fraction
    return weights


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """Zoom the centre of every plane of x (N, C, H, W) by `zoom`, keeping H x W."""
    rows = torch.as_tensor(clipped_zoom_weights(x.shape[2], zoom), dtype=x.dtype, device=x.device)
    cols = torch.as_tensor(clipped_zoom_weights(x.shape[3], zoom), dtype=x.dtype, device=x.device)
    return torch.matmul(rows, torch.matmul(x, cols.T))  # (N, C, H, W)


def motion_blur_taps(radius: int, sigma: float, angles: torch.Tensor) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """ImageMagick MotionBlurImage geometry: 2*radius+1 half-Gaussian weights and, per image,
    integer (row, column) offsets ceil(i * sin/cos(angle) - 0.5) along the blur direction."""
    width = 2 * int(math.ceil(radius)) + 1
    weights = np.exp(-np.arange(width, dtype=np.float64) ** 2 / (2.0 * sigma**2))
    steps = torch.arange(width, dtype=torch.float64, device=angles.device).view(1, -1)
    radians = torch.deg2rad(angles.double()).view(-1, 1)
    row_offsets = torch.ceil(steps * torch.sin(radians) - 0.5).long()  # (N, width)
    col_offsets = torch.ceil(steps * torch.cos(radians) - 0.5).long()
    return weights / weights.sum(), row_offsets, col_offsets


def motion_blur_planes(x: torch.Tensor, radius: int, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """One-sided line blur of x (N, C, H, W) with a per-image angle, replicating edges.

    Equivalent to ImageMagick's motion blur as used by the original code (same kernel and
    tap offsets); the original also round-trips through 8-bit PNG, which `corrupt` mimics by
    its final rounding.
    """
    n, c, h, w = x.shape
    weights, row_offsets, col_offsets = motion_blur_taps(radius, sigma, angles.to(x.device))
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    for tap, weight in enumerate(weights):
        source_rows = (rows + row_offsets[:, tap].view(n, 1, 1)).clamp(0, h - 1)
        source_cols = (cols + col_offsets[:, tap].view(n, 1, 1)).clamp(0, w - 1)
        index = (source_rows * w + source_cols).view(n, 1, h * w).expand(n, c, h * w)
        out += float(weight) * flat.gather(2, index)
    return out.view(n, c, h, w)


def grid_sample_bilinear(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mode: str) -> torch.Tensor:
    """Bilinear lookup of x (N, C, H, W) at float coordinates rows, cols (N, H', W') with `F.grid_sample`.

    Reflection padding with align_corners=True reflects about the border pixel centres ('mirror',
    REFLECT_101); with align_corners=False it folds the coordinate into [-0.5, size - 0.5] and
    clamps the taps, which is scipy's mode='reflect' ('symmetric'). Tested against explicit taps.
    """
    n, _, h, w = x.shape
    if mode == "mirror":
        grid_x, grid_y = cols * (2.0 / max(w - 1, 1)) - 1.0, rows * (2.0 / max(h - 1, 1)) - 1.0
    elif mode == "symmetric":
        grid_x, grid_y = (2.0 * cols + 1.0) / w - 1.0, (2.0 * rows + 1.0) / h - 1.0
    else:
        raise ValueError(f"grid_sample_bilinear: mode {mode!r} is not 'mirror' or 'symmetric'")
    grid = torch.stack((grid_x, grid_y), -1).to(x.dtype).expand(n, *rows.shape[1:], 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=mode == "mirror")


def _kron_sum(terms: list[tuple[float, np.ndarray, np.ndarray]]):
    """sum of weight * kron(rows, cols) over `terms`, as a scipy CSR matrix: the map X -> rows X cols^T
    on a row-major flattened (H, W) plane, summed."""
    from scipy import sparse

    return sum(weight * sparse.kron(sparse.csr_matrix(rows), sparse.csr_matrix(cols), format="csr")
               for weight, rows, cols in terms).tocsr()


def _zoom_blur_matrix(h: int, w: int, severity: int):
    """(I + sum_f Z_f) / (F + 1), Z_f the clipped zoom by factor f (separable: rows, cols)."""
    factors = zoom_factors(severity)
    terms = [(1.0, np.eye(h), np.eye(w))]
    terms += [(1.0, clipped_zoom_weights(h, float(f)), clipped_zoom_weights(w, float(f))) for f in factors]
    return _kron_sum(terms) / (len(factors) + 1)


def _defocus_blur_matrix(h: int, w: int, severity: int):
    """Correlation with the 2-D disk kernel, REFLECT_101 borders: one separable shift per kernel tap."""
    kernel = defocus_kernel(*tables_for(h).DEFOCUS_BLUR[severity - 1])
    size = kernel.shape[0]

    def shift(length: int, tap: int) -> np.ndarray:  # the 1-D map x -> x[fold(i + tap - radius)]
        return filter_matrix(length, tuple(1.0 if t == tap else 0.0 for t in range(size)), "mirror")

    return _kron_sum([(float(kernel[a, b]), shift(h, a), shift(w, b)) for a, b in zip(*np.nonzero(kernel))])


_PLANE_MATRICES = {"zoom_blur": _zoom_blur_matrix, "defocus_blur": _defocus_blur_matrix}


@functools.lru_cache(maxsize=32)
def plane_operator(name: str, severity: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """The fixed linear map of corruption `name` on one (H, W) plane as a sparse CSR (H*W, H*W)
    float32 matrix, built from its separable 1-D factors (milliseconds; about 10 non-zeros per row
    for zoom blur instead of two dense 32 x 32 products per zoom factor). Tested equal to the dense
    transform."""
    matrix = _PLANE_MATRICES[name](h, w, severity)
    with warnings.catch_warnings():  # torch flags sparse CSR as beta; CSR @ dense is the fast path on CPU and CUDA
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(matrix.indptr.astype(np.int64)),
                                       torch.from_numpy(matrix.indices.astype(np.int64)),
                                       torch.from_numpy(matrix.data.astype(np.float32)),
                                       size=matrix.shape, device=device)


def apply_plane_operator(x: torch.Tensor, name: str, severity: int) -> torch.Tensor:
    """x (N, C, H, W) float32 through `plane_operator(name, severity)`."""
    n, c, h, w = x.shape
    operator = plane_operator(name, severity, h, w, x.device)
    return torch.sparse.mm(operator, x.reshape(n * c, h * w).T).T.reshape(n, c, h, w)


POISSON_GUIDE_BINS = 1024  # a power of two, so that floor(u * bins) is exact


@functools.lru_cache(maxsize=16)
def poisson_tables(scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-CDF tables for Poisson(level / 255 * scale), level = 0..255.

    cdf (256, K) float64 with the last column set to 1 (the tail beyond K has mass < 1e-20), and
    guide (256, bins + 1) int16: guide[l, g] = #{k : cdf[l, k] <= g / bins}, so that a uniform u
    in [g / bins, (g + 1) / bins) has its count between guide[l, g] and guide[l, g + 1]. The guide
    is kept small (0.5 MB) because random lookups into it are the sampler's main cost.
    """
    from scipy.special import gammaln

    width = int(scale + 12 * math.sqrt(scale) + 16)
    if width > np.iinfo(np.int16).max:
        raise ValueError(f"poisson_tables: scale {scale} is too large for the int16 guide table")
    rates = np.arange(1, 256) / 255.0 * scale
    counts = np.arange(width)
    log_pmf = counts[None, :] * np.log(rates[:, None]) - rates[:, None] - gammaln(counts + 1)[None, :]
    cdf = np.vstack([np.ones(width), np.minimum(np.cumsum(np.exp(log_pmf), axis=1), 1.0)])  # level 0: always 0
    cdf[:, -1] = 1.0
    edges = np.arange(POISSON_GUIDE_BINS + 1) / POISSON_GUIDE_BINS
    guide = np.stack([np.searchsorted(row, edges, side="right") for row in cdf])
    return cdf, guide.astype(np.int16)


@functools.lru_cache(maxsize=16)
def _poisson_tensors(scale: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    cdf, guide = poisson_tables(scale)
    return torch.as_tensor(cdf.reshape(-1), device=device), torch.as_tensor(guide.reshape(-1), device=device)


def poisson_inverse_cdf(levels: torch.Tensor, uniforms: torch.Tensor, scale: float) -> torch.Tensor:
    """Poisson(levels / 255 * scale) counts by inversion: #{k : cdf(k) <= u} for u ~ U[0, 1).

    levels: integer tensor in 0..255; uniforms: float64 of the same shape. A guide table brackets
    every count; about 99% of brackets are a single value, the rest are settled by a vectorised
    bisection over their CDF rows. Exact up to float64 rounding of the CDF.
    """
    cdf, guide = _poisson_tensors(float(scale), levels.device)
    bins, width = POISSON_GUIDE_BINS, cdf.numel() // 256
    level, u = levels.reshape(-1).long(), uniforms.reshape(-1)
    base = level * (bins + 1) + (u * bins).long().clamp_(max=bins - 1)
    counts, upper = guide.take(base), guide.take(base + 1)
    active = (counts != upper).nonzero().squeeze(1)
    counts = counts.long()
    if active.numel():
        low, high, row, u_active = counts[active], upper[active].long(), level[active] * width, u[active]
        while bool((low < high).any()):  # invariant: the count lies in [low, high]
            middle = (low + high) // 2
            above = cdf.take(row + middle) > u_active
            high = torch.where(above, middle, high)
            low = torch.where(above, low, torch.minimum(middle + 1, high))
        counts[active] = low
    return counts.view(levels.shape)


def plasma_fractal(draws: list[torch.Tensor], map_size: int, wibble_decay: float) -> torch.Tensor:
    """Batched diamond-square heightmaps (N, map_size, map_size) in [0, 1].

    draws: per level (step size map_size, map_size/2, ..., 2) three U(-1, 1) tensors
    (N, k, k), k = map_size / step, for the square step and the two diamond steps.
    The original adds wibble * U(-wibble, wibble), i.e. wibble**2 * U(-1, 1).
    """
    n = draws[0].shape[0]
    heights = torch.zeros(n, map_size, map_size, dtype=torch.float64, device=draws[0].device)
    step, wibble, level = map_size, 100.0, 0
    while step >= 2:
        half = step // 2
        square_noise, diamond_noise_a, diamond_noise_b = (d.double() * wibble**2 for d in draws[3 * level: 3 * level + 3])
        corners = heights[:, 0::step, 0::step]
        square_sum = corners + corners.roll(-1, 1)
        square_sum = square_sum + square_sum.roll(-1, 2)
        heights[:, half::step, half::step] = square_sum / 4 + square_noise
        centres = heights[:, half::step, half::step]
        corners = heights[:, 0::step, 0::step]
        top_sum = centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        heights[:, 0::step, half::step] = top_sum / 4 + diamond_noise_a
        left_sum = centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        heights[:, half::step, 0::step] = left_sum / 4 + diamond_noise_b
        step, wibble, level = half, wibble / wibble_decay, level + 1
    heights = heights - heights.amin((1, 2), keepdim=True)
    return (heights / heights.amax((1, 2), keepdim=True)).float()


def _fractal_size(h: int, w: int) -> int:
    return max(32, 1 << (max(h, w) - 1).bit_length())


@functools.lru_cache(maxsize=8)
def defocus_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """Anti-aliased disk: binary disk (17 x 17 grid for radius <= 8), normalised, then a 3-tap
    (radius <= 8) Gaussian of sigma `alias_blur` as cv2.GaussianBlur; cropped to its non-zero support."""
    half = 8 if radius <= 8 else int(radius)
    taps = 3 if radius <= 8 else 5
    grid = np.arange(-half, half + 1)
    disk = (grid[None, :] ** 2 + grid[:, None] ** 2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    offsets = np.arange(taps) - taps // 2
    blur = np.exp(-offsets**2 / (2 * alias_blur**2))
    blur /= blur.sum()
    padded = np.pad(disk, taps // 2)
    smoothed = sum(blur[a] * blur[b] * padded[a:a + disk.shape[0], b:b + disk.shape[1]]
                   for a in range(taps) for b in range(taps))
    support = int(np.abs(grid[np.nonzero(smoothed.any(0))[0]]).max())
    return smoothed[half - support: half + support + 1, half - support: half + support + 1]


def zoom_factors(severity: int) -> np.ndarray:
    return np.arange(1, ZOOM_BLUR_END[severity - 1], 0.01)  # float arange as the original (sev 1 has 7); the same at 64x64
