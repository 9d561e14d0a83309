"""Grad-CAM maps and the checks that tell whether they mean anything.

Grad-CAM (Selvaraju et al. 2017): for a chosen conv layer with activations
A (N, K, h, w), weight each channel by the spatial mean of d logit_c / d A_k
(the class score *before* softmax), sum, ReLU, and upsample bilinearly to the
input size. Maps are returned raw (not normalised) so that their mass can be
compared across images; `normalize_maps` scales them for display.

Faithfulness and sanity checks:
- `centre_energy_share`: how much of a map's mass sits in the central window
  (CIFAR objects are mostly centred; a shortcut-learning model may look at the border).
- `deletion_insertion` (Petsiuk et al. 2018, RISE): remove / reveal pixels in
  order of map importance and track the target probability; compared with a
  random pixel order.
- `sanity_check` (Adebayo et al. 2018, model randomisation test): maps of the
  trained model vs maps of the same architecture with re-initialised weights.

Everything is batched over images on the images' device; the model is put in
eval mode with frozen parameters for the duration of a call and restored
afterwards, and no parameter `.grad` is ever written.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from stress.models.layers import find_cam_layer
from stress.precision import autocast

# Insertion starts from a Gaussian-blurred copy of the image (RISE uses a blur
# that removes object detail but keeps colour layout). sigma=2 px on 32x32 CIFAR
# images wipes out edges while keeping the coarse colour blobs.
BLUR_SIGMA = 2.0
BLUR_KERNEL_SIZE = 2 * math.ceil(3 * BLUR_SIGMA) + 1  # covers +-3 sigma


class ActivationsAndGradients:
    """Forward hook on one named module that records its output and the gradient w.r.t. it.

    The layer's output is replaced by a detached leaf tensor that requires grad:
    backward then stops at this layer (no work through earlier convs, works with
    frozen parameters), and a tensor hook on that leaf records its gradient.
    A tensor hook is used instead of a module backward hook: the legacy one sees
    only the gradient of the module's last op, and the full one breaks when a
    later op works in place on the output. Use as a context manager, or call `release()`.
    """

    def __init__(self, model: nn.Module, layer: str):
        modules = dict(model.named_modules())
        if layer not in modules:
            raise ValueError(f"no module named {layer!r} in {type(model).__name__}")
        self.activations: torch.Tensor | None = None  # (N, K, h, w) of the last forward
        self.gradients: torch.Tensor | None = None  # (N, K, h, w) of the last backward
        self._handle = modules[layer].register_forward_hook(self._on_forward)

    def _on_forward(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        # float32 even under bf16 autocast: the map is built from these activations and their gradients.
        leaf = output.detach().float().requires_grad_(True)
        leaf.register_hook(self._on_gradient)
        self.activations = leaf
        self.gradients = None
        return leaf  # returning a value from a forward hook replaces the module's output

    def _on_gradient(self, gradient: torch.Tensor) -> None:
        self.gradients = gradient

    def release(self) -> None:
        """Remove the hook (idempotent)."""
        self._handle.remove()

    def __enter__(self) -> "ActivationsAndGradients":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with every parameter's requires_grad off; both restored on exit."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _cam_from(activations: torch.Tensor, gradients: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, K, h, w) activations and gradients -> (N, H, W) upsampled ReLU maps."""
    weights = gradients.mean(dim=(2, 3))  # (N, K): global-average-pooled gradients
    cam = F.relu((weights[:, :, None, None] * activations).sum(dim=1))  # (N, h, w)
    # Bilinear interpolation is a convex combination of neighbours, so maps stay >= 0.
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]  # (N, H, W)


def gradcam_for_targets(
    model: nn.Module,
    images: torch.Tensor,
    target_sets: dict[str, torch.Tensor],
    layer: str | None = None,
    batch_size: int = 1000,
    precision: str = "fp32",
) -> dict[str, torch.Tensor]:
    """Grad-CAM maps for several target sets (e.g. predicted and true class) from one forward pass.

    precision "bf16"/"auto": the forward pass runs under bf16 autocast; the hooked activations,
    their gradients and the maps stay float32.

    images: normalised float (N, 3, H, W); each target set: long (N,).
    Returns {name: (N, H, W) float maps >= 0, not normalised}. Images are processed in
    chunks of `batch_size`; per chunk one forward and one backward per target set. `layer` names
    the hooked module; None takes stress.models.find_cam_layer's choice (SimpleCNN: features.relu3).
    """
    layer = resolve_layer(model, images, layer)
    size = (images.shape[-2], images.shape[-1])
    maps: dict[str, list[torch.Tensor]] = {name: [] for name in target_sets}
    with frozen_eval(model), torch.enable_grad(), ActivationsAndGradients(model, layer) as hooks:
        for start in range(0, images.shape[0], batch_size):
            with autocast(precision, images.device):
                logits = model(images[start : start + batch_size]).float()  # (B, classes)
            activations = hooks.activations
            for i, (name, targets) in enumerate(target_sets.items()):
                chunk_targets = targets[start : start + batch_size].to(logits.device).view(-1, 1)
                # Images are independent in eval mode, so the gradient of the summed
                # scores w.r.t. A gives each image's own d logit / d A.
                score = logits.gather(1, chunk_targets).sum()
                torch.autograd.grad(score, activations, retain_graph=i < len(target_sets) - 1)
                maps[name].append(_cam_from(activations.detach(), hooks.gradients, size))
    return {name: torch.cat(parts) if parts else images.new_zeros((0, *size)) for name, parts in maps.items()}


def gradcam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: str | None = None, batch_size: int = 1000,
    precision: str = "fp32",
) -> torch.Tensor:
    """images: normalised float (N, 3, H, W); targets: long (N,) -> maps (N, H, W), >= 0, not normalised."""
    return gradcam_for_targets(model, images, {"target": targets}, layer, batch_size, precision)["target"]


def resolve_layer(model: nn.Module, images: torch.Tensor, layer: str | None) -> str:
    """`layer`, or when None the last module with a spatial output on these images (find_cam_layer)."""
    if layer is not None:
        return layer
    found = find_cam_layer(model, images[:1])
    if found is None:
        raise ValueError(f"{type(model).__name__} has no module with a spatial output (N, K, h, w), h and w > 1, for Grad-CAM")
    return found


def cam_resolution(model: nn.Module, images: torch.Tensor, layer: str | None = None) -> tuple[int, int]:
    """(h, w) of the Grad-CAM layer's output for images of this size, before upsampling."""
    layer = resolve_layer(model, images, layer)
    with torch.no_grad(), ActivationsAndGradients(model, layer) as hooks:
        was_training = model.training
        model.eval()
        try:
            model(images[:1])
        finally:
            model.train(was_training)
        return tuple(hooks.activations.shape[-2:])


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> the same maps divided by their per-image maximum; all-zero maps stay zero."""
    peak = maps.amax(dim=(1, 2), keepdim=True)  # (N, 1, 1)
    return torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


def centre_energy_share(maps: torch.Tensor, centre_fraction: float = 0.5) -> torch.Tensor:
    """(N, H, W) -> (N,) share of each map's mass inside the central window.

    The window has side round(centre_fraction * H) x round(centre_fraction * W)
    (16x16 of 32x32 for 0.5), centred. An all-zero map carries no spatial preference
    and gets the window's area share (0.25 for 0.5), the same as a uniform map.
    """
    _, height, width = maps.shape
    side_h, side_w = round(centre_fraction * height), round(centre_fraction * width)
    top, left = (height - side_h) // 2, (width - side_w) // 2
    total = maps.sum(dim=(1, 2))  # (N,)
    inside = maps[:, top : top + side_h, left : left + side_w].sum(dim=(1, 2))  # (N,)
    area_share = side_h * side_w / (height * width)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(maps.dtype).tiny), torch.full_like(total, area_share))


def gaussian_blur(images: torch.Tensor, sigma: float = BLUR_SIGMA, kernel_size: int = BLUR_KERNEL_SIZE) -> torch.Tensor:
    """(N, C, H, W) float -> separable Gaussian blur with reflect padding (same as torchvision's)."""
    channels = images.shape[1]
    offsets = torch.arange(kernel_size, dtype=images.dtype, device=images.device) - (kernel_size - 1) / 2
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()  # sums to 1, so blurring commutes with per-channel normalisation
    pad = kernel_size // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, kernel_size), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, kernel_size, 1), groups=channels)


def _ranks_from_order(order: torch.Tensor) -> torch.Tensor:
    """(N, P) pixel indices, most important first -> (N, P) rank of each pixel in that order."""
    ranks = torch.empty_like(order)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def deletion_insertion(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 16,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
) -> dict[str, torch.Tensor]:
    """Deletion and insertion curves (Petsiuk et al. 2018) for map order and a random order.

    images: normalised float (N, 3, H, W); maps: (N, H, W); targets: long (N,).
    At point s (0..steps) the first floor(s * H*W / steps) pixels of the order are
    removed (set to 0 = dataset mean in normalised space) for deletion, or revealed
    on a blurred copy for insertion; the curve is the softmax probability of the
    target. Ties in a map are broken by the random order, so an all-zero map gives
    exactly the random curves. `batch_size` bounds the model inputs per forward pass.

    Returns curves (N, steps+1) under "deletion", "insertion", "random_deletion",
    "random_insertion", their trapezoid areas over the removed fraction in [0, 1]
    under "<name>_auc" (N,), and "fraction" (steps+1,), the x axis.
    """
    n, _, height, width = images.shape
    pixels = height * width
    device = images.device
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    random_order = torch.rand(n, pixels, generator=generator, device=generator.device).argsort(dim=1).to(device)
    # Sort map values in random order with a stable sort: ties keep the random order.
    shuffled_values = maps.reshape(n, pixels).to(device).gather(1, random_order)  # (N, P)
    map_order = random_order.gather(1, shuffled_values.argsort(dim=1, descending=True, stable=True))
    ranks = {"": _ranks_from_order(map_order), "random_": _ranks_from_order(random_order)}  # (N, P) each

    counts = torch.arange(steps + 1, device=device) * pixels // steps  # (S+1,) pixels removed at each point
    fraction = counts.to(images.dtype) / pixels
    blurred = gaussian_blur(images)  # (N, 3, H, W)
    chunk = max(1, batch_size // (4 * (steps + 1)))  # images per forward: 4 curves x (S+1) points each
    curves: dict[str, list[torch.Tensor]] = {f"{p}{kind}": [] for p in ranks for kind in ("deletion", "insertion")}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                clean = images[start:stop, None]  # (B, 1, 3, H, W)
                base = blurred[start:stop, None]  # (B, 1, 3, H, W)
                inputs = []
                for rank in ranks.values():
                    # (B, S+1, 1, H, W): True where the pixel is among the first counts[s] of the order
                    chosen = (rank[start:stop, None, :] < counts[None, :, None]).view(stop - start, steps + 1, 1, height, width)
                    inputs.append(torch.where(chosen, 0.0, clean))  # deletion
                    inputs.append(torch.where(chosen, clean, base))  # insertion
                batch = torch.stack(inputs, dim=1).view(-1, *images.shape[1:])  # (B*4*(S+1), 3, H, W)
                probabilities = model(batch).float().softmax(dim=1).view(stop - start, 4, steps + 1, -1)
                chunk_targets = targets[start:stop].to(device).view(-1, 1, 1, 1).expand(-1, 4, steps + 1, 1)
                scores = probabilities.gather(3, chunk_targets)[..., 0]  # (B, 4, S+1)
                for i, name in enumerate(curves):
                    curves[name].append(scores[:, i])
    finally:
        model.train(was_training)
    result: dict[str, torch.Tensor] = {"fraction": fraction}
    for name, parts in curves.items():
        result[name] = torch.cat(parts) if parts else images.new_zeros((0, steps + 1))
        result[f"{name}_auc"] = torch.trapezoid(result[name], fraction, dim=1)
    return result


def randomized_copy(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Deep copy of `model` with every weight re-drawn from its layer's default initialisation.

    The model randomisation test (Adebayo et al. 2018) compares explanations of the
    trained model with those of this copy. The seed comes from `generator` (default
    seed 0), so the copy is reproducible; the global RNG state is left untouched.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    clone = copy.deepcopy(model)
    covered = {id(p) for m in clone.modules() if hasattr(m, "reset_parameters") for p in m.parameters(recurse=False)}
    missing = [name for name, p in clone.named_parameters() if id(p) not in covered]
    if missing:
        raise ValueError(f"cannot re-initialise parameters without a reset_parameters() module: {missing}")
    cuda_devices = sorted({p.device.index or 0 for p in clone.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        for module in clone.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return clone


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """(N, P) -> (N, P) 1-based ranks per row, tied values sharing their average rank (as scipy)."""
    ordered = values.sort(dim=1).values.contiguous()
    below = torch.searchsorted(ordered, values.contiguous(), right=False)  # values strictly smaller
    at_most = torch.searchsorted(ordered, values.contiguous(), right=True)  # values smaller or equal
    # The tied block occupies ranks below+1 .. at_most; its average is their midpoint.
    return (below + at_most + 1).to(torch.float64) / 2


def spearman_rows(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(N, ...) x (N, ...) -> (N,) Spearman rank correlation per row; NaN where a row is constant."""
    if first.shape != second.shape:
        raise ValueError(f"shapes differ: {tuple(first.shape)} vs {tuple(second.shape)}")
    a = _average_ranks(first.reshape(first.shape[0], -1))
    b = _average_ranks(second.reshape(second.shape[0], -1))
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denominator = (a.square().sum(dim=1) * b.square().sum(dim=1)).sqrt()
    # 0/0 -> NaN for a constant row: a correlation is undefined there (scipy says the same).
    return (a * b).sum(dim=1) / denominator


def sanity_check(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: str | None = None,
    generator: torch.Generator | None = None,
) -> dict:
    """Model randomisation test: Spearman correlation of trained vs randomised-model Grad-CAM maps.

    Returns {"correlations": (N,) float64, NaN where either map is constant (e.g. all zero),
    "mean": float, "median": float (middle-average, over the defined ones; NaN if none), "undefined": int}.
    A faithful explainer depends on the weights, so correlations should be low.
    """
    layer = resolve_layer(model, images, layer)
    trained_maps = gradcam(model, images, targets, layer)
    random_maps = gradcam(randomized_copy(model, generator), images, targets, layer)
    correlations = spearman_rows(trained_maps, random_maps)  # (N,)
    defined = correlations[~correlations.isnan()]
    return {
        "correlations": correlations,
        "mean": float(defined.mean()) if defined.numel() else math.nan,
        "median": float(defined.quantile(0.5)) if defined.numel() else math.nan,
        "undefined": int(correlations.isnan().sum()),
    }
