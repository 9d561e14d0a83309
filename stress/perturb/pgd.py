"""Projected gradient descent (Madry et al. 2018), batched, in pixel space.

The attack works on images on the 0..255 scale and differentiates through the model's own
normalisation (`forward` maps pixels to logits), so the threat model is the pixel-space one
RobustBench uses: an L-inf or L2 ball of radius eps on the [0, 1] scale around the image,
intersected with the valid pixel range. Each step ascends the cross-entropy:

    L-inf:  x <- x + alpha * sign(grad)
    L2:     x <- x + alpha * grad / ||grad||_2
    then    delta <- projection of x - x0 onto the eps-ball;  x <- clip(x0 + delta, 0, 255)

with step alpha = 2.5 eps / steps (Madry et al.'s choice), from a random start in the ball.
These are torchattacks' PGD and PGDL2 updates (tests/unit/perturb/test_pgd_attack.py checks ours
against theirs, step for step). An image counts as fooled if any iterate is misclassified; the
returned adversarial image is the first iterate that fooled the model, else the last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

NORMS = ("linf", "l2")
LINF_EPSILONS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)  # on the [0, 1] scale
L2_EPSILONS = (0.25, 0.5)
AUTOATTACK_EPSILON = 8 / 255  # RobustBench's CIFAR-10 L-inf setting


@dataclass(frozen=True)
class Attack:
    norm: str  # "linf" | "l2"
    eps: float  # radius on the [0, 1] pixel scale

    @property
    def name(self) -> str:
        return f"{self.norm}_{self.label}"

    @property
    def label(self) -> str:
        return f"{round(self.eps * 255)}/255" if self.norm == "linf" else f"{self.eps:g}"


ATTACKS = tuple(Attack("linf", e) for e in LINF_EPSILONS) + tuple(Attack("l2", e) for e in L2_EPSILONS)


def _norms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """delta moved onto the closed eps-ball of `norm` (eps on delta's own scale)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        return delta * torch.clamp(eps / (_norms(delta) + 1e-12), max=1.0)
    raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


def random_start(shape: tuple[int, ...], norm: str, eps: float, generator: torch.Generator) -> torch.Tensor:
    """A random point of the eps-ball (eps on the 0..255 scale): uniform per pixel for L-inf; a uniform direction at a
    uniform radius for L2."""
    if norm == "linf":
        return (torch.rand(shape, generator=generator) * 2 - 1) * eps
    direction = torch.randn(shape, generator=generator)
    radius = torch.rand(shape[0], generator=generator).view(-1, *([1] * (len(shape) - 1)))
    return direction / _norms(direction) * radius * eps


@dataclass
class PGDResult:
    adversarial: torch.Tensor  # float32 (N, C, H, W) on the 0..255 scale
    fooled: torch.Tensor  # bool (N,): some iterate was misclassified
    last: torch.Tensor  # the final iterate, float32 (N, C, H, W), as torchattacks returns it


def pgd(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor, norm: str, eps: float,
        steps: int = 20, step_size: float | None = None, start: torch.Tensor | None = None) -> PGDResult:
    """PGD on `images` (uint8 or float, 0..255) within the eps-ball (eps and step_size on the [0, 1] scale).

    forward: float pixels (0..255) -> logits, differentiable (the model with its normalisation).
    start: the initial offset on the 0..255 scale (random_start), or None to start at the image.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    x0 = images.float()
    radius = eps * 255.0
    alpha = (2.5 * eps / steps if step_size is None else step_size) * 255.0
    delta = torch.zeros_like(x0) if start is None else project(start.to(x0.device, torch.float32), norm, radius)
    x = (x0 + delta).clamp(0.0, 255.0)
    kept = x.clone()
    fooled = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
    for step in range(steps + 1):
        x.requires_grad_(True)
        with torch.enable_grad():
            logits = forward(x).float()
            wrong = logits.argmax(1) != labels
            grad = None if step == steps else torch.autograd.grad(F.cross_entropy(logits, labels, reduction="sum"), x)[0]
        x = x.detach()
        # torch.where, not kept[newly] = x[newly]: boolean indexing waits for the GPU at every step.
        kept = torch.where((wrong & ~fooled).view(-1, *([1] * (x.dim() - 1))), x, kept)
        fooled |= wrong
        if grad is None:
            break
        with torch.no_grad():
            if norm == "linf":
                x = x + alpha * grad.sign()
            else:
                x = x + alpha * grad / (_norms(grad) + 1e-10)
            x = (x0 + project(x - x0, norm, radius)).clamp(0.0, 255.0)
    kept = torch.where(fooled.view(-1, *([1] * (x.dim() - 1))), kept, x)
    return PGDResult(kept, fooled, x)
