"""Which layer Grad-CAM hooks, found by running the model once, and the 32x32 stem for ImageNet designs."""

from __future__ import annotations

import torch
from torch import nn

from stress.errors import StressError

POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)


@torch.no_grad()
def spatial_layers(model: nn.Module, probe: torch.Tensor) -> list[str]:
    """Names of the modules whose output on `probe` is a spatial map (4-D, height and width above 1),
    in the order their forward passes finish, leaving out pooling layers and the containers that
    only pass a pooling layer's output on.

    A pooling layer only downsamples the map before it, so Grad-CAM at the map before it sees the
    same evidence at a finer resolution (SimpleCNN: `features.relu3`, not `features.pool3` or
    `features`). A container whose output is its last child's map (a ResNet stage) finishes after
    that child and so comes later: ResNet-18 gives `layer4`.
    """
    found: list[str] = []
    pooled: set[int] = set()
    kept: list[torch.Tensor] = []  # outputs stay alive during the probe, so their ids are not reused

    def hook(name: str, module: nn.Module):
        def record(_module, _inputs, output):
            if not isinstance(output, torch.Tensor) or output.ndim != 4 or min(output.shape[-2:]) <= 1:
                return
            kept.append(output)
            if isinstance(module, POOLING):
                pooled.add(id(output))
            elif id(output) not in pooled:
                found.append(name)
        return record

    handles = [m.register_forward_hook(hook(name, m)) for name, m in model.named_modules() if name]
    was_training = model.training
    model.eval()
    try:
        model(probe)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return found


def find_cam_layer(model: nn.Module, probe: torch.Tensor) -> str | None:
    """The last module whose output is a spatial map on `probe` (see spatial_layers), or None."""
    found = spatial_layers(model, probe)
    return found[-1] if found else None


def check_cam_layer(model: nn.Module, probe: torch.Tensor, layer: str, where: str = "stress.cam_layer") -> None:
    """Raise StressError unless `layer` names a module of `model` whose output on `probe` is a spatial map."""
    modules = dict(model.named_modules())
    if layer not in modules:
        close = [n for n in spatial_layers(model, probe)][-5:]
        raise StressError(f"{where}: no module named {layer!r} in {type(model).__name__}; "
                          f"layers with spatial maps end with: {', '.join(close) or 'none'}")
    shapes: list[tuple] = []
    handle = modules[layer].register_forward_hook(lambda _m, _i, out: shapes.append(tuple(getattr(out, "shape", ()))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(probe)
    finally:
        model.train(was_training)
        handle.remove()
    if not shapes or len(shapes[-1]) != 4 or min(shapes[-1][-2:]) <= 1:
        raise StressError(f"{where}: {layer!r} gives {shapes[-1] if shapes else 'no output'}, not a spatial map "
                          "(N, K, h, w) with h and w above 1, so Grad-CAM cannot use it")


def cifar_stem(model: nn.Module) -> nn.Module:
    """Adapt an ImageNet-style stem to 32x32 inputs, as CIFAR practice does: the first convolution
    becomes 3x3 with stride 1 (same channels), and a max-pool that follows it before any other
    convolution is removed. Works on ResNets, DenseNets, RegNets, MobileNets and the like."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise StressError(f"model.cifar_stem: {type(model).__name__} has no Conv2d to adapt")
    first_name, first = convs[0]
    names = [name for name, _ in model.named_modules()]
    second_at = names.index(convs[1][0]) if len(convs) > 1 else len(names)
    pool = next((name for name, m in model.named_modules()
                 if isinstance(m, nn.MaxPool2d) and names.index(first_name) < names.index(name) < second_at), None)
    _replace(model, first_name, nn.Conv2d(first.in_channels, first.out_channels, 3, stride=1, padding=1,
                                          bias=first.bias is not None))
    if pool is not None:
        _replace(model, pool, nn.Identity())
    return model


def _replace(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def embedding_layer(model: nn.Module) -> str | None:
    """The last nn.Linear module (in definition order), whose input is the penultimate-layer embedding; None without one."""
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linear[-1] if linear else None


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, layer: str) -> torch.Tensor:
    """The flattened input of module `layer` for a batch of model-ready images: float32 (N, D)."""
    captured: list[torch.Tensor] = []
    handle = model.get_submodule(layer).register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
    try:
        model(images)
    finally:
        handle.remove()
    if not captured:
        raise StressError(f"embedding layer {layer!r} was not called in the forward pass")
    return captured[-1].flatten(1).float()
