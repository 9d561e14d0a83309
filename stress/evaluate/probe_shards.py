"""Shard functions of the texture-versus-shape probes and of the adversarial attacks (stress.driver.probe_stages).

Like stress.evaluate.shards: plain PyTorch on one slice [start, stop) of the images, returning
per-image results only. Randomness is keyed by the image's index, never by the shard, so a
result does not depend on how the images were sharded.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from stress.augment import input_stats, normalize
from stress.evaluate.predict import predict_logits
from stress.evaluate.shards import load_model, task_device
from stress.precision import autocast, resolve_precision


@torch.no_grad()
def texture_shard(
    weights: dict[str, dict],
    model_config: dict,
    images: np.ndarray,
    labels: np.ndarray,
    start: int,
    stop: int,
    probe_names: list[str],
    seed: int = 0,
    batch_size: int = 500,
    precision: str = "fp32",
    device: str | None = None,
) -> dict[str, np.ndarray]:
    """{"<variant>|<probe>": bool (n,)}: is each image of [start, stop) still classified correctly under the probe; and
    "precision": what `precision` resolved to on this task's device.

    Every model sees the very same probed images; the patch order of image i is row i of
    stress.perturb.texture.permutations for the probe's seed.
    """
    from stress.perturb.texture import apply_probe, permutations, probe_seed

    device = task_device(device)
    stats = input_stats(model_config)
    models = {v: load_model(w, model_config, device) for v, w in weights.items()}
    x = torch.tensor(np.asarray(images[start:stop]), device=device)
    y = torch.tensor(np.asarray(labels[start:stop]), device=device)
    out = {}
    for name in probe_names:
        order = None
        if name.startswith("shuffle_"):
            grid = int(name.partition("_")[2])
            order = permutations(stop, grid * grid, probe_seed(seed, name))[start:]
        probed = torch.cat([apply_probe(x[i : i + batch_size], name, None if order is None else order[i : i + batch_size])
                            for i in range(0, len(x), batch_size)])
        for v, model in models.items():
            out[f"{v}|{name}"] = (predict_logits(model, probed, batch_size, precision, stats=stats).argmax(1) == y).cpu().numpy()
    out["precision"] = np.array(resolve_precision(precision, device))
    return out


def attack_seed(seed: int, attack: str, index: int) -> int:
    """Seed of one image's random start: the run seed, the attack and the image's index."""
    return (seed * 1_000_003 + zlib.crc32(f"attack:{attack}".encode()) * 7 + index) % 2**63


def starts(shape: tuple[int, ...], norm: str, eps: float, seed: int, name: str, first: int) -> torch.Tensor:
    """Random starts (0..255 scale) of images first, first+1, ...: one generator per image."""
    from stress.perturb.pgd import random_start

    return torch.cat([random_start((1, *shape[1:]), norm, eps * 255.0, torch.Generator().manual_seed(attack_seed(seed, name, first + i)))
                      for i in range(shape[0])])


class PixelModel(torch.nn.Module):
    """The model on [0, 1] pixels, as torchattacks expects: normalisation inside."""

    def __init__(self, model: torch.nn.Module, stats, scale: float = 255.0):
        super().__init__()
        self.model, self.stats, self.scale = model, stats, scale
        self.training = model.training  # torchattacks restores the mode it finds: a new module's True would leave `model` training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(x * self.scale, self.stats))


class AutocastModel(torch.nn.Module):
    """`model` run under `precision`'s autocast (stress.precision.autocast), returning float32 logits.

    Gradients reach the input in float32: autocast casts at each layer's input, and the backward
    pass casts back. A model under fp32 is returned unwrapped by `under_precision`.
    """

    def __init__(self, model: torch.nn.Module, precision: str, device: torch.device):
        super().__init__()
        self.model, self.precision, self.device = model, precision, device
        self.training = model.training  # as PixelModel: the wrapper reports the wrapped model's mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, self.device):
            return self.model(x).float()


def under_precision(model: torch.nn.Module, precision: str, device: torch.device) -> torch.nn.Module:
    return model if resolve_precision(precision, device) == "fp32" else AutocastModel(model, precision, device)


def _correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Pearson correlation of each pair of maps (N, H, W); NaN where a map is constant."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    denominator = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1) / denominator
    r[denominator == 0] = float("nan")
    return r.cpu().numpy()


def _cams(model: torch.nn.Module, pixels: torch.Tensor, stats, layer: str | None,
          precision: str = "fp32", classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(Grad-CAM maps of each image's predicted class, the predictions): the class predicted in `precision`, as the
    attacks saw it, and its map in float32. `classes` given: the maps of those classes instead (the predictions are
    still returned)."""
    from stress.analyses.gradcam import gradcam

    inputs = normalize(pixels, stats)
    with torch.no_grad():
        predicted = under_precision(model, precision, pixels.device)(inputs).argmax(1)
    return gradcam(model, inputs, predicted if classes is None else classes, layer), predicted


def attack_shard(
    weights: dict[str, dict],
    model_config: dict,
    images: np.ndarray,
    labels: np.ndarray,
    start: int,
    stop: int,
    attacks: list[tuple[str, float]],
    steps: int = 20,
    seed: int = 0,
    autoattack: bool = True,
    batch_size: int = 250,
    device: str | None = None,
    cam_layer: str | None = None,
    precision: str = "fp32",
) -> dict[str, np.ndarray]:
    """Per model v, for images [start, stop), all (n,) arrays:

    - "v|clean": correct without attack;
    - "v|<attack name>": fooled by PGD (stress.perturb.pgd) for each (norm, eps) of `attacks`;
    - "v|autoattack": still correct after AutoAttack (standard, L-inf 8/255, torchattacks), if asked;
    - "v|flip": index into the L-inf attacks of the smallest eps that fooled the image (-1: none did; an image
      misclassified clean is fooled by the first one, and stress.analyses.adversarial leaves it out);
    - "v|cam_adversarial", "v|cam_random": Pearson correlation of the Grad-CAM of the prediction on the
      clean image with that on the adversarial image at the flip eps, and on the clean image plus random
      signs of the same L-inf size (NaN where no L-inf attack fooled the image);
    - "v|cam_same_class": the same correlation with the adversarial image's Grad-CAM of the clean prediction's
      class: the adversarial map explains another class, the noisy one (mostly) the same, and this separates the
      change of class from the change of evidence.

    precision: the forward and backward passes of the attacks and the predictions ("fp32", "bf16", "auto";
    stress.precision); the attack stage passes the run's. "precision" in the result says what it resolved to on
    this task's device ("fp32" or "bf16"): "auto" depends on the device. Grad-CAM's gradients stay float32. On the default
    run's CIFAR-10 models, bf16 attacks gave fp32's robust accuracy to within 0.003 at every radius
    (benchmarks/bench_attack_stage.py --precision fp32,bf16; benchmarks/README.md).
    """
    from stress.perturb.pgd import AUTOATTACK_EPSILON, Attack, pgd

    device = task_device(device)
    stats = input_stats(model_config)
    models = {v: load_model(w, model_config, device) for v, w in weights.items()}
    x_all = torch.tensor(np.asarray(images[start:stop]), device=device)
    y_all = torch.tensor(np.asarray(labels[start:stop]), device=device)
    n = len(x_all)
    specs = [Attack(norm, eps) for norm, eps in attacks]
    linf = [a for a in specs if a.norm == "linf"]
    out: dict[str, np.ndarray] = {}
    for v, model in models.items():
        attacked = under_precision(model, precision, device)
        forward = PixelModel(attacked, stats, scale=1.0)  # PGD works on the 0..255 scale
        parts: dict[str, list[np.ndarray]] = {}
        for first in range(0, n, batch_size):
            x, y = x_all[first : first + batch_size], y_all[first : first + batch_size]
            with torch.no_grad():
                clean = forward(x.float()).argmax(1) == y
            parts.setdefault("clean", []).append(clean.cpu().numpy())
            flip = torch.full((len(x),), -1, dtype=torch.long, device=device)
            at_flip = x.float().clone()
            for attack in specs:
                noise = starts(tuple(x.shape), attack.norm, attack.eps, seed, attack.name, start + first).to(device)
                result = pgd(forward, x, y, attack.norm, attack.eps, steps, start=noise)
                parts.setdefault(attack.name, []).append(result.fooled.cpu().numpy())
                if attack in linf:
                    newly = result.fooled & (flip < 0)
                    flip[newly] = linf.index(attack)
                    at_flip[newly] = result.adversarial[newly]
            parts.setdefault("flip", []).append(flip.cpu().numpy())
            similarity = {name: np.full(len(x), np.nan) for name in ("cam_adversarial", "cam_random", "cam_same_class")}
            flipped = (flip >= 0).nonzero().flatten()
            if len(flipped):
                eps = torch.tensor([linf[i].eps * 255.0 for i in flip[flipped].tolist()], device=device).view(-1, 1, 1, 1)
                generator = torch.Generator().manual_seed(attack_seed(seed, "random_signs", start + first))
                signs = (torch.randint(0, 2, x[flipped].shape, generator=generator).float() * 2 - 1).to(device)
                base, clean_class = _cams(model, x[flipped].float(), stats, cam_layer, precision)
                adversarial, _ = _cams(model, at_flip[flipped], stats, cam_layer, precision)
                same_class, _ = _cams(model, at_flip[flipped], stats, cam_layer, precision, classes=clean_class)
                noisy, _ = _cams(model, (x[flipped].float() + eps * signs).clamp(0, 255), stats, cam_layer, precision)
                similarity["cam_adversarial"][flipped.cpu().numpy()] = _correlation(base, adversarial)
                similarity["cam_random"][flipped.cpu().numpy()] = _correlation(base, noisy)
                similarity["cam_same_class"][flipped.cpu().numpy()] = _correlation(base, same_class)
            for key, value in similarity.items():
                parts.setdefault(key, []).append(value)
            if autoattack:
                import torchattacks

                attack = torchattacks.AutoAttack(PixelModel(attacked, stats), norm="Linf", eps=AUTOATTACK_EPSILON, version="standard",
                                                 n_classes=int(model(normalize(x[:1], stats)).shape[1]), seed=seed)
                adversarial = attack(x.float() / 255.0, y)
                with torch.no_grad():
                    parts.setdefault("autoattack", []).append((PixelModel(attacked, stats)(adversarial).argmax(1) == y).cpu().numpy())
        for key, chunks in parts.items():
            out[f"{v}|{key}"] = np.concatenate(chunks)
    out["precision"] = np.array(resolve_precision(precision, device))
    return out
