"""Shard functions: plain PyTorch work on one slice of the test set.

The driver runs them through an executor, as Ray tasks (stress.driver.cluster.RayExecutor)
or in its own process (LocalExecutor); both give the same answer. Each takes the weights and the whole test
array (object-store references resolve to arrays in the task) plus a [start, stop)
range, and returns only per-image results, never the images.
"""

from __future__ import annotations

import sys
import time
import zlib

import numpy as np
import torch

from stress.augment import CIFAR10_STATS, input_stats, normalize
from stress.config import ModelConfig
from stress.evaluate.predict import predict_logits
from stress.models import create_model
from stress.perturb.corruptions import corrupt
from stress.perturb.shifts import apply_shift
from stress.precision import autocast, resolve_precision


def task_device(device: str | None = None) -> torch.device:
    """The task's device: `device` when the caller decided (Ray passes "cuda" only to tasks it gave a
    GPU, stress.driver.cluster.run_tasks), else the GPU if there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_model(state_dict: dict, model_config: dict, device: torch.device) -> torch.nn.Module:
    config = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in model_config.items()})
    model = create_model(config)
    model.load_state_dict(state_dict)
    if device.type == "cpu":
        # CPU max-pooling and convolution are markedly faster in channels-last layout (benchmarks/bench_gradcam.py).
        return model.to(device, memory_format=torch.channels_last).eval()
    return model.to(device).eval()


def evaluate_shard(
    state_dict: dict,
    model_config: dict,
    images: np.ndarray,
    labels: np.ndarray,
    start: int,
    stop: int,
    batch_size: int = 500,
    gradcam: bool = True,
    faithfulness_every: int = 0,
    faithfulness_steps: int = 16,
    seed: int = 0,
    precision: str = "fp32",
    device: str | None = None,
    cam_layer: str | None = None,
) -> dict[str, np.ndarray]:
    """Predictions (and Grad-CAM statistics) for test images [start, stop).

    Returns indices (n,), logits float32 (n, C), predicted, confidence, correct, and with
    gradcam=True the centre-energy share of the Grad-CAM map for the predicted and for the
    true class (n,) each, and precision: what `precision` resolved to on this task's device. With faithfulness_every=k > 0, the images whose global index is a
    multiple of k also get deletion/insertion AUCs (map order and random order) and the
    model-randomisation rank correlation; these come back under faithful_* keys with their
    global indices. Random orders and the randomised model are seeded by `seed` and the
    image index range, so the result does not depend on which worker ran the shard.
    Grad-CAM hooks `cam_layer` (None: stress.models.find_cam_layer's choice); inputs are
    standardised with the statistics in `model_config` (stress.augment.input_stats).
    """
    device = task_device(device)
    model = load_model(state_dict, model_config, device)
    stats = input_stats(model_config)
    x = torch.tensor(np.asarray(images[start:stop]), device=device)  # (n, 3, H, W) uint8
    y = torch.tensor(np.asarray(labels[start:stop]), device=device)
    started = time.perf_counter()
    logits = predict_logits(model, x, batch_size, precision, stats=stats)
    probs = logits.softmax(1)
    confidence, predicted = probs.max(1)
    out = {
        "indices": np.arange(start, stop),
        "logits": logits.cpu().numpy().astype(np.float32),
        "predicted": predicted.cpu().numpy(),
        "confidence": confidence.cpu().numpy(),
        "correct": (predicted == y).cpu().numpy(),
        "seconds_predict": np.array([time.perf_counter() - started]),
        "precision": np.array(resolve_precision(precision, device)),  # what "auto" resolved to on this task's device
    }
    if gradcam:
        from stress.analyses.gradcam import centre_energy_share, gradcam_for_targets

        started = time.perf_counter()
        shares = {"predicted": [], "true": []}
        for i in range(0, len(x), batch_size):
            maps = gradcam_for_targets(
                model, normalize(x[i : i + batch_size], stats), {"predicted": predicted[i : i + batch_size], "true": y[i : i + batch_size]},
                layer=cam_layer, precision=precision,
            )
            for key in shares:
                shares[key].append(centre_energy_share(maps[key]).cpu())
        out["centre_share_predicted"] = torch.cat(shares["predicted"]).numpy()
        out["centre_share_true"] = torch.cat(shares["true"]).numpy()
        out["seconds_gradcam"] = np.array([time.perf_counter() - started])  # maps for two targets per image
    if faithfulness_every > 0:
        out.update(_faithfulness(model, x, predicted, start, faithfulness_every, faithfulness_steps, seed, batch_size, precision,
                                 stats, cam_layer))
    return out


def embed_shard(
    state_dict: dict,
    model_config: dict,
    images: np.ndarray,
    start: int,
    stop: int,
    batch_size: int = 500,
    precision: str = "fp32",
    device: str | None = None,
) -> dict[str, np.ndarray]:
    """Penultimate-layer embeddings (the input of the model's last nn.Linear) of images [start, stop).

    Returns indices (n,) and embedding float32 (n, D); without a Linear layer, embedding is (n, 0); and precision,
    what `precision` resolved to on this task's device.
    """
    from stress.models.layers import embed, embedding_layer

    device = task_device(device)
    model = load_model(state_dict, model_config, device)
    stats = input_stats(model_config)
    layer = embedding_layer(model)
    x = torch.tensor(np.asarray(images[start:stop]), device=device)
    used = np.array(resolve_precision(precision, device))
    if layer is None:
        return {"indices": np.arange(start, stop), "embedding": np.zeros((stop - start, 0), dtype=np.float32), "precision": used}
    with autocast(precision, device):
        parts = [embed(model, normalize(x[i : i + batch_size], stats), layer).cpu() for i in range(0, len(x), batch_size)]
    return {"indices": np.arange(start, stop), "embedding": torch.cat(parts).numpy().astype(np.float32), "precision": used}


FAITHFUL_KEYS = (
    "deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc",  # Petsiuk et al., i.i.d. random order
    "road_morf_auc", "road_lerf_auc", "road_random_morf_auc", "road_random_lerf_auc",  # ROAD, structure-matched random order
)


def _faithfulness(model, x, predicted, start: int, every: int, steps: int, seed: int, batch_size: int, precision: str,
                  stats, cam_layer: str | None) -> dict:
    """Deletion/insertion and ROAD AUCs and the randomisation sanity check on every `every`-th image."""
    from stress.analyses.faithfulness import road_curves, structured_random_maps
    from stress.analyses.gradcam import cam_resolution, deletion_insertion, gradcam, sanity_check

    first = (-start) % every
    local = torch.arange(first, len(x), every, device=x.device)
    if len(local) == 0:
        return {"faithful_indices": np.zeros(0, dtype=np.int64), **{f"faithful_{k}": np.zeros(0) for k in FAITHFUL_KEYS},
                "faithful_randomisation_correlation": np.zeros(0)}
    images, targets = normalize(x[local], stats), predicted[local]
    maps = gradcam(model, images, targets, layer=cam_layer, precision=precision)
    generator = torch.Generator().manual_seed(seed * 7919 + start)
    with autocast(precision, x.device):  # the curves' forward passes; probabilities are read as float32
        curves = deletion_insertion(model, images, maps, targets, steps=steps, generator=generator, batch_size=batch_size * 2)
        random_maps = structured_random_maps(len(local), cam_resolution(model, images, cam_layer), tuple(images.shape[-2:]),
                                           generator, x.device)
        road = road_curves(model, images, {"road": maps, "road_random": random_maps}, targets, generator=generator, batch_size=batch_size)
    curves.update(road)
    # The same randomised weights for every shard: seeded by `seed` alone.
    sanity = sanity_check(model, images, targets, layer=cam_layer, generator=torch.Generator().manual_seed(seed))
    return {
        "faithful_indices": (local + start).cpu().numpy(),
        **{f"faithful_{k}": curves[k].float().cpu().numpy() for k in FAITHFUL_KEYS},
        "faithful_randomisation_correlation": sanity["correlations"].cpu().numpy(),
    }


def corruption_seed(seed: int, name: str, severity: int, start: int) -> int:
    """Seed of one corrupted shard: fixed by the run seed, the corruption and the image range."""
    return (seed * 1_000_003 + zlib.crc32(name.encode()) * 11 + severity * 101 + start) % 2**63


def _per_image(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    probs = logits.softmax(1)
    confidence, predicted = probs.max(1)
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).float()
    return {
        "correct": (predicted == labels).cpu().numpy(),
        "confidence": confidence.cpu().numpy().astype(np.float32),
        "nll": torch.nn.functional.cross_entropy(logits, labels, reduction="none").cpu().numpy().astype(np.float32),
        "brier": ((probs - onehot) ** 2).sum(1).cpu().numpy().astype(np.float32),
    }


_COMPILE_FAILED: list[str] = []  # why torch.compile failed in this process, if it did


class ForwardPasses:
    """The forward passes of a task's models, compiled when asked, eager otherwise.

    torch caches a compiled SimpleCNN per process whatever the instance, so a worker compiles once for
    all its stress and Fourier tasks. Where compiling fails (no compiler, an unsupported op), the
    failing pass is re-run eagerly, the worker says so once on stderr (prefixed by `stage`), and its
    later tasks run eagerly without trying again.
    """

    def __init__(self, eager: dict[str, torch.nn.Module], compile: bool, stage: str):
        self.eager, self.models, self.stage = eager, eager, stage
        if compile and not _COMPILE_FAILED:
            import logging

            # Inductor's C++ build warns once per process that a CPU-only torch has no CUDA runtime.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            self.models = {v: torch.compile(m) for v, m in eager.items()}  # forward passes only

    def logits(self, v: str, images: torch.Tensor, batch_size: int, precision: str, stats) -> torch.Tensor:
        try:
            return predict_logits(self.models[v], images, batch_size, precision, stats=stats)
        except Exception as exc:  # noqa: BLE001 - compiling can fail in many ways (no compiler, an unsupported op)
            if self.models is self.eager:
                raise
            reason = (str(exc).strip().splitlines() or [""])[0][:200]
            print(f"{self.stage}: torch.compile failed ({type(exc).__name__}: {reason}); this worker's forward passes run eagerly",
                  file=sys.stderr, flush=True)
            _COMPILE_FAILED.append(reason)  # later tasks in this process do not try again (nor say so again)
            self.models = self.eager
            return predict_logits(self.eager[v], images, batch_size, precision, stats=stats)


def stress_shard(
    weights: dict[str, dict],
    model_config: dict,
    images: np.ndarray,
    labels: np.ndarray,
    start: int,
    stop: int,
    perturbations: list[tuple[str, int]],
    seed: int = 0,
    batch_size: int = 500,
    precision: str = "fp32",
    compile: bool = False,
    device: str | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Evaluate both models on images [start, stop) under each perturbation.

    perturbations: (corruption name, severity) pairs, or (shift name, 0) for shifts.
    Returns {"<variant>|<name>|<severity>": {correct, confidence, nll, brier}} with (n,) arrays, and "precision":
    what `precision` resolved to on this task's device.
    """
    device = task_device(device)
    stats = input_stats(model_config)
    passes = ForwardPasses({v: load_model(w, model_config, device) for v, w in weights.items()}, compile, "stress")
    x = torch.tensor(np.asarray(images[start:stop]), device=device)  # (n, 3, H, W) uint8
    y = torch.tensor(np.asarray(labels[start:stop]), device=device)
    out = {}
    for name, severity in perturbations:
        if severity == 0:
            perturbed = apply_shift(x, name)
        else:
            perturbed = torch.cat([
                corrupt(x[i : i + batch_size], name, severity, corruption_seed(seed, name, severity, start + i))
                for i in range(0, len(x), batch_size)
            ])
        for v in passes.eager:
            out[f"{v}|{name}|{severity}"] = _per_image(passes.logits(v, perturbed, batch_size, precision, stats), y)
    out["precision"] = np.array(resolve_precision(precision, device))
    return out


@torch.no_grad()
def fourier_correct(models: dict[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor, frequencies: list[tuple[int, int]],
                    seed: int, start: int, norm: float, batch_size: int = 500, precision: str = "fp32",
                    stats=None, compile: bool = False) -> dict[str, np.ndarray]:
    """Per model, bool (F, n): is image start+i still classified correctly with the basis image of frequency f added.

    Every model sees the same perturbed images. The signs of image start+i are row start+i of
    stress.perturb.fourier.signs, so they do not depend on the sharding. Frequencies are stacked
    into batches of about `batch_size` images (fourier_batches counts them). compile: forward
    passes through torch.compile (ForwardPasses).
    """
    from stress.perturb.fourier import basis, perturb, signs

    stats = stats or CIFAR10_STATS
    passes = ForwardPasses(models, compile, "fourier")
    n, channels, height, width = x.shape
    out = {v: np.zeros((len(frequencies), n), dtype=bool) for v in models}
    per_batch = frequencies_per_batch(n, batch_size)
    for first in range(0, len(frequencies), per_batch):
        group = frequencies[first : first + per_batch]
        perturbed = torch.cat([perturb(x, basis(height, width, k1, k2, x.device), signs(start + n, channels, seed, k1, k2)[start:], norm)
                               for k1, k2 in group])
        labels = y.repeat(len(group))
        for v in models:
            correct = passes.logits(v, perturbed, batch_size, precision, stats).argmax(1) == labels
            out[v][first : first + len(group)] = correct.view(len(group), n).cpu().numpy()
    return out


def frequencies_per_batch(images: int, batch_size: int) -> int:
    """How many frequencies fourier_correct stacks into one batch for a shard of `images` images."""
    return max(1, batch_size // max(images, 1))


def fourier_batches(images: int, frequencies: int, batch_size: int) -> int:
    """Forward batches of fourier_correct for one model: per group of frequencies, ceil(its images / batch_size)."""
    per_batch = frequencies_per_batch(images, batch_size)
    full, rest = divmod(frequencies, per_batch)
    return full * -(-per_batch * images // batch_size) + (-(-rest * images // batch_size) if rest else 0)


def fourier_shard(
    weights: dict[str, dict],
    model_config: dict,
    images: np.ndarray,
    labels: np.ndarray,
    start: int,
    stop: int,
    frequencies: list[tuple[int, int]],
    seed: int = 0,
    norm: float = 4.0,
    batch_size: int = 500,
    precision: str = "fp32",
    compile: bool = False,
    device: str | None = None,
) -> dict[str, np.ndarray]:
    """fourier_correct of every model on images [start, stop) of `images` (the heat map's subset): {variant: (F, n) bool},
    and "precision": what `precision` resolved to on this task's device."""
    device = task_device(device)
    models = {v: load_model(w, model_config, device) for v, w in weights.items()}
    x = torch.tensor(np.asarray(images[start:stop]), device=device)
    y = torch.tensor(np.asarray(labels[start:stop]), device=device)
    out = fourier_correct(models, x, y, [tuple(k) for k in frequencies], seed, start, norm, batch_size, precision,
                          input_stats(model_config), compile)
    return {**out, "precision": np.array(resolve_precision(precision, device))}
