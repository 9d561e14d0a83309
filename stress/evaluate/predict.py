"""Batched inference and accuracy of a model on uint8 device tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stress.augment import Stats, normalize
from stress.precision import autocast


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1000, precision: str = "fp32", *,
                   stats: Stats) -> torch.Tensor:
    """uint8 (N, C, H, W) on the model's device -> float32 logits (N, classes), in eval mode, model mode restored.

    stats: the per-channel (mean, std) the model's inputs are standardised with (stress.augment.input_stats of
    the run's model config; CIFAR10_STATS only where that is what the model was trained with). It has no default:
    a run on other data measures its own statistics, and a default silently evaluated such a model on wrongly
    standardised images.

    precision "bf16"/"auto" runs the forward passes under bf16 autocast; logits come back as float32.
    """
    was_training = model.training
    model.eval()
    try:
        with autocast(precision, images.device):
            chunks = [model(normalize(images[i : i + batch_size], stats)).float() for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
             precision: str = "fp32", *, stats: Stats) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy of `model` on (images, labels) standardised with `stats` (as predict_logits)."""
    logits = predict_logits(model, images, batch_size, precision, stats=stats)
    return {
        "loss": float(F.cross_entropy(logits, labels, reduction="mean")),
        "acc": float((logits.argmax(1) == labels).float().mean()),
    }


