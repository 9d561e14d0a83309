"""ROAD: a faithfulness test for saliency maps that removes the out-of-distribution bias.

Deletion with a constant fill (Petsiuk et al. 2018, `stress.analyses.gradcam.deletion_insertion`)
compares a smooth map with i.i.d. random pixel order. Random order scatters constant-valued
holes over every receptive field, which is out of distribution for the model, so random
removal is unusually destructive and a good map can look "worse than random".

ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
Methods") fixes both halves of that:
- removed pixels are filled by *noisy linear imputation*: each removed pixel is the weighted
  mean of its 8 neighbours (weight 1/6 for the 4 direct, 1/12 for the 4 diagonal ones), solved
  jointly for all removed pixels with the kept ones as boundary values, plus Gaussian noise
  (std 0.01 in the model's input units). The fill carries no information about where the
  pixels were removed;
- the map is read both ways: most relevant first (MoRF; a faithful map makes the target
  probability fall fast) and least relevant first (LeRF; it makes it fall slowly).

The comparison order is *structure-matched*: a random map at the CAM's own resolution,
upsampled bilinearly exactly as the CAM is, so that both orders remove pixels in blobs of
the same size. A map is faithful when it beats that random order on both MoRF (lower
probability) and LeRF (higher probability).

Everything is batched over images on the images' device; `impute` solves the linear systems
of a whole batch with matrix-free conjugate gradients (the 3x3 neighbour sum as shifted slices).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ROAD's removal fractions (its percentiles 10 .. 90): at 100 % nothing is left to impute from.
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
NOISE = 0.01  # std of the noise added to imputed values, in the model's (normalised) input units
DIRECT, DIAGONAL = 1 / 6, 1 / 12  # neighbour weights of the linear imputation
CG_TOLERANCE = 1e-4  # relative residual at which conjugate gradients stop (the fill gets noise of 0.01 anyway)
CG_MAX_ITERATIONS = 500
COMPACT_BELOW = 0.8  # the solve drops converged rows once fewer than this share of its rows are still active


def neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """Weighted sum of each pixel's 8 neighbours (DIRECT for the 4 direct, DIAGONAL for the 4 diagonal
    ones) of (..., H, W) planes, zero outside the image: the 3x3 convolution with that kernel, as
    shifted slices of one padded copy (2-3x faster than a one-channel F.conv2d on the CPU)."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1))
    direct = p[..., 0:h, 1 : w + 1] + p[..., 2 : h + 2, 1 : w + 1] + p[..., 1 : h + 1, 0:w] + p[..., 1 : h + 1, 2 : w + 2]
    diagonal = p[..., 0:h, 0:w] + p[..., 0:h, 2 : w + 2] + p[..., 2 : h + 2, 0:w] + p[..., 2 : h + 2, 2 : w + 2]
    return DIRECT * direct + DIAGONAL * diagonal


def impute(images: torch.Tensor, keep: torch.Tensor, noise: float = NOISE, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noisy linear imputation of the removed pixels.

    images: float (N, C, H, W); keep: bool (N, H, W), True where a pixel stays. Every removed
    pixel x_i satisfies sum_j w_ij (x_i - x_j) = 0 over its in-image neighbours j (kept ones
    are fixed), i.e. it is the weighted mean of its neighbours; then N(0, noise^2) is added to
    the removed pixels only. An image with no kept pixel has no solution and is returned with
    its removed pixels set to 0 plus noise. Channels are independent systems with the same
    matrix.
    """
    n, c, h, w = images.shape
    dtype = torch.float32
    removed = (~keep).to(dtype).unsqueeze(1).expand(n, c, h, w).reshape(n * c, 1, h, w)  # (NC, 1, H, W)
    x_known = images.to(dtype).reshape(n * c, 1, h, w) * (1 - removed)
    degree = neighbour_sum(torch.ones(1, 1, h, w, dtype=dtype, device=images.device))  # sum of in-image weights (1, 1, H, W)

    b = removed * neighbour_sum(x_known)  # known neighbours on the right-hand side
    solvable = (removed.flatten(1).sum(1) < h * w).view(-1, 1, 1, 1)  # at least one kept pixel
    x = _conjugate_gradients(removed, degree, b)
    x = torch.where(solvable, x, torch.zeros_like(x))
    filled = x_known + removed * x
    if noise > 0:
        draws = torch.randn(filled.shape, generator=generator, device=generator.device if generator else images.device, dtype=torch.float32)
        filled = filled + removed * noise * draws.to(images.device, dtype)
    return filled.reshape(n, c, h, w).to(images.dtype)


def _conjugate_gradients(removed: torch.Tensor, degree: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve A x = b for every row (plane) of a (R, 1, H, W) batch, A x = removed * (degree * x - neighbour_sum(x)).

    A row stops where its residual falls below CG_TOLERANCE of its right-hand side: its x, r and p
    stay as they were (step and direction weight 0). Once fewer than COMPACT_BELOW of the rows in the
    working batch are active, the converged ones leave it, so later iterations pay only for the rows
    still iterating; the rows' arithmetic does not depend on which others share the batch.
    """
    out = torch.zeros_like(b)
    rows = torch.arange(b.shape[0], device=b.device)  # each working row's place in `out`
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).flatten(1).sum(1)
    threshold = (CG_TOLERANCE**2) * (b * b).flatten(1).sum(1).clamp_min(1e-30)
    for _ in range(CG_MAX_ITERATIONS):
        active = rs > threshold
        still = int(active.sum())
        if still == 0:
            break
        if still < COMPACT_BELOW * len(rows):
            out[rows[~active]] = x[~active]
            rows, x, r, p, rs, threshold, removed = (t[active] for t in (rows, x, r, p, rs, threshold, removed))
            active = active[active]
        ap = removed * (degree * p - neighbour_sum(p))
        denominator = (p * ap).flatten(1).sum(1)
        alpha = torch.where(active & (denominator > 0), rs / denominator.clamp_min(1e-300), torch.zeros_like(rs)).view(-1, 1, 1, 1)
        x = x + alpha * p
        r = r - alpha * ap
        rs_next = (r * r).flatten(1).sum(1)
        beta = torch.where(active, rs_next / rs.clamp_min(1e-300), torch.zeros_like(rs)).view(-1, 1, 1, 1)
        p = r + beta * p
        rs = rs_next
    out[rows] = x
    return out


def structured_random_maps(n: int, cam_size: tuple[int, int], image_size: tuple[int, int], generator: torch.Generator,
                           device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W) random maps with the CAM's spatial structure: uniform noise at the CAM's own
    resolution (h, w), upsampled bilinearly to the image size as Grad-CAM upsamples its maps."""
    coarse = torch.rand(n, 1, *cam_size, generator=generator, device=generator.device).to(device)
    return F.interpolate(coarse, size=image_size, mode="bilinear", align_corners=False)[:, 0]


def _ranks(maps: torch.Tensor, tie_break: torch.Tensor) -> torch.Tensor:
    """(N, H, W) maps -> (N, P) rank of each pixel, most relevant first; ties by `tie_break` (N, P) noise."""
    n = maps.shape[0]
    values = maps.reshape(n, -1)
    order = torch.argsort(tie_break, dim=1)
    sorted_values = values.gather(1, order)
    order = order.gather(1, sorted_values.argsort(dim=1, descending=True, stable=True))
    ranks = torch.empty_like(order)
    return ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))


def road_curves(model: nn.Module, images: torch.Tensor, maps: dict[str, torch.Tensor], targets: torch.Tensor,
                fractions: tuple[float, ...] = FRACTIONS, generator: torch.Generator | None = None,
                batch_size: int = 512) -> dict[str, torch.Tensor]:
    """ROAD curves of the target probability for each named map, most and least relevant first.

    images: normalised float (N, 3, H, W); maps: {name: (N, H, W)}; targets: long (N,).
    Returns "<name>_morf" and "<name>_lerf" curves (N, len(fractions)) and their means over the
    fractions under "<name>_morf_auc" / "<name>_lerf_auc" (N,), as ROAD averages over its
    percentiles. The same imputation noise is drawn for every map, so maps differ only in order.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    n, _, h, w = images.shape
    pixels = h * w
    tie_break = torch.rand(n, pixels, generator=generator, device=generator.device).to(images.device)
    counts = [int(round(f * pixels)) for f in fractions]
    noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    was_training = model.training
    model.eval()
    result: dict[str, torch.Tensor] = {}
    try:
        for name, m in maps.items():
            ranks = _ranks(m.to(images.device), tie_break)  # (N, P)
            for direction in ("morf", "lerf"):
                # MoRF removes the `count` most relevant pixels, LeRF the `count` least relevant.
                position = ranks if direction == "morf" else pixels - 1 - ranks
                columns = []
                noise_generator = torch.Generator(device=generator.device).manual_seed(noise_seed)
                for count in counts:
                    keep = (position >= count).view(n, h, w)
                    scores = []
                    for start in range(0, n, batch_size):
                        stop = min(start + batch_size, n)
                        filled = impute(images[start:stop], keep[start:stop], generator=noise_generator)
                        with torch.no_grad():
                            probabilities = model(filled).float().softmax(dim=1)
                        scores.append(probabilities.gather(1, targets[start:stop].to(images.device).view(-1, 1))[:, 0])
                    columns.append(torch.cat(scores) if scores else images.new_zeros(0))
                curve = torch.stack(columns, dim=1) if columns else images.new_zeros((n, 0))
                result[f"{name}_{direction}"] = curve
                result[f"{name}_{direction}_auc"] = curve.mean(dim=1)
    finally:
        model.train(was_training)
    return result
