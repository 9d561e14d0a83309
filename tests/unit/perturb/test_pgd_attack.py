"""PGD: it stays in its eps-ball and the pixel range, reaches a linear model's analytic robust accuracy, defeats an
undefended model, and takes torchattacks' steps exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stress.augment import CIFAR10_STATS
from stress.config import ModelConfig
from stress.evaluate.probe_shards import PixelModel, starts
from stress.models import create_model
from stress.perturb.pgd import ATTACKS, project, pgd, random_start

torchattacks = pytest.importorskip("torchattacks")  # installed by `make setup` (see the Makefile)


def _cnn(seed=0):
    torch.manual_seed(seed)
    return create_model(ModelConfig(widths=(8, 16, 32), hidden=32)).eval()


def _batch(n=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def _inside(adversarial: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> bool:
    """Within the eps-ball (eps on the [0, 1] scale) and the pixel range, up to float rounding."""
    delta = (adversarial - x.float()) / 255.0
    size = delta.abs().flatten(1).max(1).values if norm == "linf" else delta.flatten(1).norm(dim=1)
    return bool((size <= eps * (1 + 1e-5) + 1e-6).all() and adversarial.min() >= 0 and adversarial.max() <= 255)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_pgd_never_leaves_its_ball_or_the_pixel_range(attack):
    model, (x, y) = _cnn(), _batch()
    x[:4] = 0  # images at the range's edges, where the ball pokes out of it
    x[4:8] = 255
    forward = PixelModel(model, CIFAR10_STATS, scale=1.0)
    start = starts(tuple(x.shape), attack.norm, attack.eps, 0, attack.name, 0)
    result = pgd(forward, x, y, attack.norm, attack.eps, steps=10, start=start)
    assert _inside(result.adversarial, x, attack.norm, attack.eps) and _inside(result.last, x, attack.norm, attack.eps)
    # the fooled flags are what the returned images do to the model
    with torch.no_grad():
        wrong = forward(result.adversarial).argmax(1) != y
    assert torch.equal(wrong, result.fooled)


def test_the_ball_check_catches_steps_without_projection():
    x, _ = _batch(4)
    unprojected = (x.float() + 10 * 2.5 * (4 / 255) / 10 * 255 * 4).clamp(0, 255)  # ten steps of the update, never pulled back
    assert not _inside(unprojected, x, "linf", 4 / 255)
    assert not _inside(x.float() - 1.0, x, "linf", 8 / 255)  # out of the pixel range


def test_projection_and_random_starts_lie_in_the_ball():
    generator = torch.Generator().manual_seed(0)
    for norm in ("linf", "l2"):
        start = random_start((50, 3, 8, 8), norm, 5.0, generator)
        size = start.abs().flatten(1).max(1).values if norm == "linf" else start.flatten(1).norm(dim=1)
        assert (size <= 5.0 + 1e-4).all() and size.std() > 0
        big = torch.randn(10, 3, 8, 8) * 100
        projected = project(big, norm, 5.0)
        size = projected.abs().flatten(1).max(1).values if norm == "linf" else projected.flatten(1).norm(dim=1)
        np.testing.assert_allclose(size.numpy(), 5.0, rtol=1e-5)


class Linear2(torch.nn.Module):
    """Two classes on 0..255 pixels: logits (0, w . x + b)."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x):
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)


def _analytic_robust(w, b, x, y, norm, eps255):
    """Exact robust correctness of the linear model: the worst score over the ball and the pixel box.

    L-inf: each pixel moves against the label by min(eps, room to the box edge). L2 (images far from the box
    edges): the score moves by eps ||w||_2.
    """
    xf = x.flatten(1).double()
    wd = w.double()
    score = xf @ wd + b
    toward = torch.where((y == 1).view(-1, 1), -torch.sign(wd).expand_as(xf), torch.sign(wd).expand_as(xf))  # the direction that hurts
    if norm == "linf":
        room = torch.where(toward > 0, 255 - xf, xf)
        move = (wd.abs() * torch.minimum(room, torch.full_like(room, eps255))).sum(1)
    else:
        move = torch.full_like(score, eps255 * float(wd.norm()))
    worst = torch.where(y == 1, score - move, score + move)
    return torch.where(y == 1, worst > 0, worst < 0) & torch.where(y == 1, score > 0, score < 0)


@pytest.mark.parametrize("norm, eps, low, high", [("linf", 4 / 255, 0, 256), ("linf", 8 / 255, 0, 256), ("l2", 0.1, 20, 236)])
def test_pgd_reaches_a_linear_models_analytic_robust_accuracy(norm, eps, low, high):
    generator = torch.Generator().manual_seed(1)
    w = torch.randn(3 * 4 * 4, generator=generator) / 50
    x = torch.randint(low, high, (400, 3, 4, 4), generator=generator).to(torch.uint8)
    if norm == "l2":  # the L2 formula holds where the optimal step stays inside the pixel box
        step = (eps * 255 * w.abs() / w.norm()).max()
        assert low - step >= 0 and high - 1 + step <= 255
    score = x.flatten(1).float() @ w
    b = -float(score.median())
    y = (score + b > 0).long()
    y[::7] = 1 - y[::7]  # some images wrong from the start
    model = Linear2(w, b)
    expected = _analytic_robust(w, b, x, y, norm, eps * 255)
    assert 0.2 < expected.float().mean() < 0.8  # robust and fooled images both occur
    result = pgd(model, x, y, norm, eps, steps=20)
    np.testing.assert_array_equal((~result.fooled).numpy(), expected.numpy())
    # the comparison can fail: half the budget leaves images robust that the analytic answer says are not
    weaker = pgd(model, x, y, norm, eps / 2, steps=20)
    assert (~weaker.fooled != expected).sum() > 10


def test_pgd_defeats_an_undefended_model_that_was_trained():
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (512, 3, 8, 8), dtype=torch.uint8, generator=generator)
    y = (x[:, 0].float().mean(dim=(1, 2)) > x[:, 2].float().mean(dim=(1, 2))).long()  # red brighter than blue
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    forward = PixelModel(model, CIFAR10_STATS, scale=1.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        optimiser.zero_grad()
        F.cross_entropy(forward(x.float()), y).backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        clean = forward(x.float()).argmax(1) == y
    assert clean.float().mean() > 0.7
    # the red-blue mean difference of these images is under 60 grey levels, which L-inf 32/255 can close everywhere
    result = pgd(forward, x, y, "linf", 32 / 255, steps=20, start=starts(tuple(x.shape), "linf", 32 / 255, 0, "linf_32/255", 0))
    assert (clean & ~result.fooled).float().mean() < 0.05
    weak = pgd(forward, x, y, "linf", 2 / 255, steps=20)  # a small budget leaves most of them standing
    assert (clean & ~weak.fooled).float().mean() > 0.5


@pytest.mark.parametrize("norm, eps, alpha", [("linf", 4 / 255, 1 / 255), ("l2", 0.5, 0.1)])
def test_pgd_takes_torchattacks_steps(norm, eps, alpha):
    model, (x, y) = _cnn(), _batch(48)
    ours = pgd(PixelModel(model, CIFAR10_STATS, scale=1.0), x, y, norm, eps, steps=10, step_size=alpha)
    reference = (torchattacks.PGD if norm == "linf" else torchattacks.PGDL2)(PixelModel(model, CIFAR10_STATS), eps=eps, alpha=alpha,
                                                                                 steps=10, random_start=False)
    theirs = reference(x.float() / 255.0, y)
    differs = (ours.last / 255.0 - theirs).abs() > 1e-4
    assert differs.float().mean() < 1e-3  # float rounding can flip the sign of a gradient that is almost 0
    # the comparison can fail: another step size gives other images
    other = pgd(PixelModel(model, CIFAR10_STATS, scale=1.0), x, y, norm, eps, steps=10, step_size=alpha / 2)
    assert ((other.last / 255.0 - theirs).abs() > 1e-4).float().mean() > 0.1


def test_autoattack_through_torchattacks_is_at_least_as_strong_as_pgd_on_the_same_images():
    model, (x, y) = _cnn(), _batch(24)
    pixel = PixelModel(model, CIFAR10_STATS)
    adversarial = torchattacks.AutoAttack(pixel, norm="Linf", eps=8 / 255, version="standard", n_classes=10, seed=0)(x.float() / 255, y)
    assert ((adversarial - x.float() / 255).abs().max() <= 8 / 255 + 1e-6) and adversarial.min() >= 0 and adversarial.max() <= 1
    with torch.no_grad():
        robust_aa = pixel(adversarial).argmax(1) == y
    robust_pgd = ~pgd(PixelModel(model, CIFAR10_STATS, scale=1.0), x, y, "linf", 8 / 255, steps=20).fooled
    assert robust_aa.sum() <= robust_pgd.sum()
