"""The stress suite: corruptions, geometric shifts and calibration for both variants.

`stress_shard` is the plain-PyTorch task body: one image range, one group of
perturbations, both models on the very same perturbed images. `summarise_robustness`
and `summarise_calibration` turn the merged per-image results into the figures of the
robustness literature (Hendrycks & Dietterich 2019; Guo et al. 2017).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from stress.calibration import (
    calibration_summary,
    expected_calibration_error_from_confidences,
    fit_temperature,
    reliability_bins,
    softmax,
)
from stress.config import VARIANTS
from stress.corruptions import CIFAR10_C_MAIN, corrupt
from stress.evaluate import predict_logits
from stress.shards import load_model, task_device
from stress.shifts import apply_shift, shift_family
from stress.stats import accuracy_with_interval, bootstrap_ci, t_interval


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
) -> dict[str, dict[str, np.ndarray]]:
    """Evaluate both models on images [start, stop) under each perturbation.

    perturbations: (corruption name, severity) pairs, or (shift name, 0) for shifts.
    Returns {"<variant>|<name>|<severity>": {correct, confidence, nll, brier}} with (n,) arrays.
    """
    device = task_device()
    models = {v: load_model(w, model_config, device) for v, w in weights.items()}
    if compile:
        import logging

        # Inductor's C++ build warns once per process that a CPU-only torch has no CUDA runtime.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        # Forward passes only; the compiled graph is cached per process, so a worker compiles once.
        models = {v: torch.compile(m) for v, m in models.items()}
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
        for v, model in models.items():
            out[f"{v}|{name}|{severity}"] = _per_image(predict_logits(model, perturbed, batch_size, precision), y)
    return out


def summarise_robustness(clean_correct: dict[str, np.ndarray], merged: dict, corruptions: list[str], severities: list[int], shifts: list[str]) -> dict:
    """Accuracy per corruption and severity, mean corruption accuracy, CE and relative CE, shifts.

    CE and relative CE follow Hendrycks & Dietterich (2019) with the baseline model in the
    role of AlexNet: CE_c = sum_s E(model, c, s) / sum_s E(baseline, c, s), relative CE_c =
    sum_s (E(model, c, s) - E_clean(model)) / sum_s (E(baseline, c, s) - E_clean(baseline));
    mCE is their mean over corruptions (so the baseline's mCE is 1 by construction), hence
    relative to this run's own baseline and not comparable with published mCE figures.

    Alongside absolute accuracy: the drop from clean (clean − mean corruption accuracy) and the
    mean over the CIFAR-10-C main corruptions that are implemented. Every interval here is over
    the test images of this one trained pair (`interval_unit`).
    """
    result: dict = {"interval_unit": IMAGE_UNIT}
    main = [c for c in CIFAR10_C_MAIN if c in corruptions]
    clean_error = {v: 1 - float(clean_correct[v].mean()) for v in VARIANTS}
    error = {v: {c: [1 - float(merged[f"{v}|{c}|{s}"]["correct"].mean()) for s in severities] for c in corruptions} for v in VARIANTS}
    for v in VARIANTS:
        by_corruption = {c: [1 - e for e in error[v][c]] for c in corruptions}
        intervals = {
            c: [[accuracy_with_interval(merged[f"{v}|{c}|{s}"]["correct"])[k] for k in ("low", "high")] for s in severities]
            for c in corruptions
        }
        per_image = _per_image_corruption_accuracy(merged, v, corruptions, severities)  # (n,)
        ce, relative_ce = {}, {}
        for c in corruptions:
            base = sum(error["baseline"][c])
            ce[c] = sum(error[v][c]) / base if base > 0 else None
            base_rel = sum(e - clean_error["baseline"] for e in error["baseline"][c])
            rel = sum(e - clean_error[v] for e in error[v][c])
            relative_ce[c] = rel / base_rel if base_rel > 0 else None
        clean = accuracy_with_interval(clean_correct[v])
        shift_acc = {s: float(merged[f"{v}|{s}|0"]["correct"].mean()) for s in shifts}
        families: dict[str, list[float]] = {}
        for s in shifts:
            families.setdefault(shift_family(s), []).append(shift_acc[s])
        main_per_image = _per_image_corruption_accuracy(merged, v, main, severities)
        drop_per_image = clean_correct[v].astype(np.float64) - per_image if corruptions else np.zeros(0)
        result[v] = {
            "clean_acc": clean["acc"],
            "clean_acc_interval": [clean["low"], clean["high"]],
            "mean_corruption_acc": float(per_image.mean()) if corruptions else None,
            # Clean minus corrupted: how much accuracy the corruptions cost this model.
            "corruption_drop": float(drop_per_image.mean()) if corruptions else None,
            "corruption_drop_interval": _interval(drop_per_image) if corruptions else None,
            # The CIFAR-10-C main set (15 corruptions) as far as implemented: frost is missing.
            "mean_corruption_acc_main": float(main_per_image.mean()) if main else None,
            "mean_corruption_acc_main_interval": _interval(main_per_image) if main else None,
            "main_corruptions": main,
            "main_corruptions_missing": [c for c in CIFAR10_C_MAIN if c not in main],
            # Evaluations of one image are correlated, so the interval is over images: a t-interval
            # of each image's accuracy over all (corruption, severity) cells.
            "mean_corruption_acc_interval": _interval(per_image) if corruptions else None,
            "severities": list(severities),
            "by_corruption": by_corruption,
            "by_corruption_interval": intervals,
            "ce": ce,
            "relative_ce": relative_ce,
            "mce": float(np.mean([x for x in ce.values() if x is not None])) if ce else None,
            "relative_mce": float(np.mean([x for x in relative_ce.values() if x is not None])) if any(x is not None for x in relative_ce.values()) else None,
            "shifts": shift_acc,
            "shift_families": {k: float(np.mean(vals)) for k, vals in families.items()},
        }
    result["gain"] = _gains(clean_correct, merged, corruptions, severities, shifts)
    return result


def _ece_intervals(logits: np.ndarray, labels: np.ndarray, temperature: float, n_bins: int, n_boot: int = 1000) -> dict:
    """95% bootstrap intervals over test images for ECE, ECE after temperature, and their difference (paired)."""
    before, after = softmax(logits), softmax(np.asarray(logits) / temperature)
    correct = (before.argmax(1) == labels).astype(np.float64)  # temperature does not change the argmax
    table = np.stack([before.max(1), after.max(1), correct], axis=1)  # (n, 3): resampled together

    def ece(column: int):
        return lambda sample: expected_calibration_error_from_confidences(sample[:, column], sample[:, 2], n_bins)

    def reduction(sample: np.ndarray) -> float:
        return ece(0)(sample) - ece(1)(sample)

    return {
        "ece_interval": list(bootstrap_ci(ece(0), table, n_boot=n_boot)),
        "ece_after_temperature_interval": list(bootstrap_ci(ece(1), table, n_boot=n_boot)),
        "ece_reduction_interval": list(bootstrap_ci(reduction, table, n_boot=n_boot)),
    }


IMAGE_UNIT = "test images of one trained pair"


def _per_image_corruption_accuracy(merged: dict, variant: str, corruptions: list[str], severities: list[int]) -> np.ndarray:
    cells = [merged[f"{variant}|{c}|{s}"]["correct"] for c in corruptions for s in severities]
    return np.mean(np.stack(cells), axis=0) if cells else np.zeros(0)


def _interval(values: np.ndarray) -> list[float | None]:
    result = t_interval(np.asarray(values, dtype=np.float64))
    return [result["low"], result["high"]]


def _gains(clean_correct: dict, merged: dict, corruptions: list[str], severities: list[int], shifts: list[str]) -> dict:
    """Augmented minus baseline, paired over the same images, with 95% t-intervals over images."""

    def paired(a: np.ndarray, b: np.ndarray) -> dict:
        difference = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
        interval = t_interval(difference)
        return {"mean": interval["mean"], "low": interval["low"], "high": interval["high"], "n": interval["n"]}

    gains = {"unit": IMAGE_UNIT, "clean": paired(clean_correct["baseline"], clean_correct["augmented"])}
    if corruptions:
        corrupted = {v: _per_image_corruption_accuracy(merged, v, corruptions, severities) for v in VARIANTS}
        gains["mean_corruption"] = paired(corrupted["baseline"], corrupted["augmented"])
        # Change of the drop from clean (positive: the augmented model loses more to corruptions).
        gains["corruption_drop"] = paired(clean_correct["baseline"] - corrupted["baseline"],
                                          clean_correct["augmented"] - corrupted["augmented"])
        main = [c for c in CIFAR10_C_MAIN if c in corruptions]
        if main:
            gains["mean_corruption_main"] = paired(_per_image_corruption_accuracy(merged, "baseline", main, severities),
                                                   _per_image_corruption_accuracy(merged, "augmented", main, severities))
        gains["by_corruption"] = {
            c: paired(
                _per_image_corruption_accuracy(merged, "baseline", [c], severities),
                _per_image_corruption_accuracy(merged, "augmented", [c], severities),
            )
            for c in corruptions
        }
        gains["by_corruption_severity"] = {
            c: [float(merged[f"augmented|{c}|{s}"]["correct"].mean() - merged[f"baseline|{c}|{s}"]["correct"].mean()) for s in severities]
            for c in corruptions
        }
    families: dict[str, list[str]] = {}
    for name in shifts:
        families.setdefault(shift_family(name), []).append(name)
    family_accuracy = {
        (v, family): np.mean([merged[f"{v}|{n}|0"]["correct"] for n in names], axis=0)
        for v in VARIANTS for family, names in families.items()
    }
    gains["shift_families"] = {
        family: paired(family_accuracy["baseline", family], family_accuracy["augmented", family]) for family in families
    }
    if "translation" in families and "translation_zerofill" in families:
        # The black-border effect: how much more the augmented model gains when translations
        # leave black borders (which it saw in training) than when they replicate the edge.
        per_variant = {v: family_accuracy[v, "translation_zerofill"] - family_accuracy[v, "translation"] for v in VARIANTS}
        zero, edge = gains["shift_families"]["translation_zerofill"]["mean"], gains["shift_families"]["translation"]["mean"]
        gains["border_effect"] = {
            **paired(per_variant["baseline"], per_variant["augmented"]),
            "gain_zero_fill": zero, "gain_edge_fill": edge,
            "share_of_zero_fill_gain": (zero - edge) / zero if zero else None,
        }
    return gains


def summarise_calibration(
    test_logits: dict[str, np.ndarray], val_logits: dict[str, np.ndarray], test_labels: np.ndarray, val_labels: np.ndarray,
    merged: dict, corruptions: list[str], severities: list[int], n_bins: int,
) -> dict:
    """ECE (15 bins), NLL, Brier clean and under each corruption; temperature fitted on validation."""
    result = {}
    for v in VARIANTS:
        temperature = fit_temperature(val_logits[v], val_labels)
        clean = calibration_summary(test_logits[v], test_labels, temperature=temperature, n_bins=n_bins)
        by_corruption = {}
        for c in corruptions:
            values = []
            for s in severities:
                cell = merged[f"{v}|{c}|{s}"]
                values.append(expected_calibration_error_from_confidences(cell["confidence"], cell["correct"], n_bins))
            by_corruption[c] = values
        nll = {c: [float(merged[f"{v}|{c}|{s}"]["nll"].mean()) for s in severities] for c in corruptions}
        brier = {c: [float(merged[f"{v}|{c}|{s}"]["brier"].mean()) for s in severities] for c in corruptions}
        all_ece = [e for values in by_corruption.values() for e in values]
        intervals = _ece_intervals(test_logits[v], test_labels, temperature, n_bins)
        result[v] = {
            "ece": clean["ece"],
            "ece_after_temperature": clean["ece_after_temperature"],
            **intervals,
            "temperature": temperature,
            "nll": clean["nll"],
            "nll_after_temperature": clean["nll_after_temperature"],
            "brier": clean["brier"],
            "ece_by_corruption": by_corruption,
            "mean_corrupted_ece": float(np.mean(all_ece)) if all_ece else None,
            "nll_by_corruption": nll,
            "brier_by_corruption": brier,
            "reliability": reliability_bins(softmax(test_logits[v]), test_labels, n_bins),
            "reliability_after_temperature": reliability_bins(softmax(np.asarray(test_logits[v]) / temperature), test_labels, n_bins),
        }
    return result
