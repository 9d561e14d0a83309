"""The stress suite: corruptions, geometric shifts and calibration for both variants.

`stress_shard` is the plain-PyTorch task body: one image range, one group of
perturbations, both models on the very same perturbed images. `summarise_robustness`
and `summarise_calibration` turn the merged per-image results into the figures of the
robustness literature (Hendrycks & Dietterich 2019; Guo et al. 2017).
"""

from __future__ import annotations

import numpy as np

from stress.analyses.stats import accuracy_with_interval, paired_proportion_difference, t_interval
from stress.constants import CIFAR10_C_MAIN, VARIANTS
from stress.perturb.shifts import shift_family


def summarise_robustness(clean_correct: dict[str, np.ndarray], merged: dict, corruptions: list[str], severities: list[int], shifts: list[str],
                         names: tuple[str, ...] = VARIANTS) -> dict:
    """Accuracy per corruption and severity, mean corruption accuracy, CE and relative CE, shifts.

    CE and relative CE follow Hendrycks & Dietterich (2019) with the baseline model in the
    role of AlexNet: CE_c = sum_s E(model, c, s) / sum_s E(baseline, c, s), relative CE_c =
    sum_s (E(model, c, s) - E_clean(model)) / sum_s (E(baseline, c, s) - E_clean(baseline));
    mCE is their mean over corruptions (so the baseline's mCE is 1 by construction), hence
    relative to this run's own baseline and not comparable with published mCE figures.

    Alongside absolute accuracy: the drop from clean (clean − mean corruption accuracy) and the
    mean over the CIFAR-10-C main corruptions that are implemented. Every interval here is over
    the test images of this one trained pair (`interval_unit`).

    names: the models under test, the first being the reference (the baseline's role: CE, and every
    gain is model − reference). gains[other] compares each other model with it; gain is gains[names[1]].
    """
    reference = names[0]
    result: dict = {"interval_unit": IMAGE_UNIT}
    main = [c for c in CIFAR10_C_MAIN if c in corruptions]
    clean_error = {v: 1 - float(clean_correct[v].mean()) for v in names}
    error = {v: {c: [1 - float(merged[f"{v}|{c}|{s}"]["correct"].mean()) for s in severities] for c in corruptions} for v in names}
    for v in names:
        by_corruption = {c: [1 - e for e in error[v][c]] for c in corruptions}
        intervals = {
            c: [[accuracy_with_interval(merged[f"{v}|{c}|{s}"]["correct"])[k] for k in ("low", "high")] for s in severities]
            for c in corruptions
        }
        per_image = _per_image_corruption_accuracy(merged, v, corruptions, severities)  # (n,)
        ce, relative_ce = {}, {}
        for c in corruptions:
            base = sum(error[reference][c])
            ce[c] = sum(error[v][c]) / base if base > 0 else None
            base_rel = sum(e - clean_error[reference] for e in error[reference][c])
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
            "mce": _mean_of_defined(ce),
            "relative_mce": _mean_of_defined(relative_ce),
            "shifts": shift_acc,
            "shift_families": {k: float(np.mean(vals)) for k, vals in families.items()},
        }
    result["reference"] = reference
    result["gains"] = {other: _gains(clean_correct, merged, corruptions, severities, shifts, reference, other) for other in names[1:]}
    result["gain"] = result["gains"][names[1]] if len(names) > 1 else {"unit": IMAGE_UNIT}
    return result


IMAGE_UNIT = "test images of one trained pair"


def _per_image_corruption_accuracy(merged: dict, variant: str, corruptions: list[str], severities: list[int]) -> np.ndarray:
    cells = [merged[f"{variant}|{c}|{s}"]["correct"] for c in corruptions for s in severities]
    return np.mean(np.stack(cells), axis=0) if cells else np.zeros(0)


def _interval(values: np.ndarray) -> list[float | None]:
    result = t_interval(np.asarray(values, dtype=np.float64))
    return [result["low"], result["high"]]


def _gains(clean_correct: dict, merged: dict, corruptions: list[str], severities: list[int], shifts: list[str],
           a: str = "baseline", b: str = "augmented") -> dict:
    """Model `b` minus model `a` (augmented minus baseline), paired over the same images, with 95% intervals over images:
    Newcombe's paired interval where each image's values are 0/1 (clean correctness, one severity), else a t-interval."""

    def paired(a: np.ndarray, b: np.ndarray) -> dict:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all():
            d = paired_proportion_difference(a, b)
            return {k: d[k] for k in ("mean", "low", "high", "n", "method")}
        interval = t_interval(b - a)
        return {"mean": interval["mean"], "low": interval["low"], "high": interval["high"], "n": interval["n"], "method": "t"}

    gains = {"unit": IMAGE_UNIT, "models": [a, b], "clean": paired(clean_correct[a], clean_correct[b])}
    if corruptions:
        corrupted = {v: _per_image_corruption_accuracy(merged, v, corruptions, severities) for v in (a, b)}
        gains["mean_corruption"] = paired(corrupted[a], corrupted[b])
        # Change of the drop from clean (positive: the augmented model loses more to corruptions).
        gains["corruption_drop"] = paired(clean_correct[a] - corrupted[a],
                                          clean_correct[b] - corrupted[b])
        main = [c for c in CIFAR10_C_MAIN if c in corruptions]
        if main:
            gains["mean_corruption_main"] = paired(_per_image_corruption_accuracy(merged, a, main, severities),
                                                   _per_image_corruption_accuracy(merged, b, main, severities))
        gains["by_corruption"] = {
            c: paired(
                _per_image_corruption_accuracy(merged, a, [c], severities),
                _per_image_corruption_accuracy(merged, b, [c], severities),
            )
            for c in corruptions
        }
        gains["by_corruption_severity"] = {
            c: [float(merged[f"{b}|{c}|{s}"]["correct"].mean() - merged[f"{a}|{c}|{s}"]["correct"].mean()) for s in severities]
            for c in corruptions
        }
    families: dict[str, list[str]] = {}
    for name in shifts:
        families.setdefault(shift_family(name), []).append(name)
    family_accuracy = {
        (v, family): np.mean([merged[f"{v}|{n}|0"]["correct"] for n in names], axis=0)
        for v in (a, b) for family, names in families.items()
    }
    gains["shift_families"] = {
        family: paired(family_accuracy[a, family], family_accuracy[b, family]) for family in families
    }
    if "translation" in families and "translation_zerofill" in families:
        # The black-border effect: how much more the augmented model gains when translations
        # leave black borders (which it saw in training) than when they replicate the edge.
        per_variant = {v: family_accuracy[v, "translation_zerofill"] - family_accuracy[v, "translation"] for v in (a, b)}
        zero, edge = gains["shift_families"]["translation_zerofill"]["mean"], gains["shift_families"]["translation"]["mean"]
        gains["border_effect"] = {
            **paired(per_variant[a], per_variant[b]),
            "gain_zero_fill": zero, "gain_edge_fill": edge,
            "share_of_zero_fill_gain": (zero - edge) / zero if zero else None,
        }
    return gains


def _mean_of_defined(values: dict[str, float | None]) -> float | None:
    """The mean of the values that are defined (a reference without errors leaves a CE undefined); None without any."""
    defined = [x for x in values.values() if x is not None]
    return float(np.mean(defined)) if defined else None
