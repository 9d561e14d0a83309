"""Statistics across seeds: intervals, paired augmented-minus-baseline tests, failure stability.

Inputs are the per-seed run folders' summary.json dicts and prediction tables; nothing
here imports Ray. The sweep's own summary.json has `seeds`, `per_seed` and `aggregate`
blocks (plus `stability`).
"""

from __future__ import annotations

import numpy as np

from stress.analyses.stats import holm_bonferroni, paired_difference, t_interval
from stress.constants import VARIANTS

CONFIDENT_KEYS = ("0.9", "0.99")


def seed_metrics(summary: dict) -> dict[str, dict]:
    """The per-variant numbers of one seed's summary that the sweep aggregates."""
    out = {}
    for v in VARIANTS:
        entry = {"test_acc": summary["variants"][v]["test_acc"]}
        robustness = summary.get("robustness", {}).get(v)
        if robustness:
            entry["clean_acc"] = robustness["clean_acc"]
            entry["mean_corruption_acc"] = robustness["mean_corruption_acc"]
            for key in ("mean_corruption_acc_main", "corruption_drop"):
                if robustness.get(key) is not None:
                    entry[key] = robustness[key]
            families = robustness.get("shift_families", {})
            for family, accuracy in families.items():
                entry[f"shift_{family}_acc"] = accuracy
            if "translation" in families and "translation_zerofill" in families:
                # Paired across variants, this is the black-border effect (see robustness.border_effect).
                entry["translation_zero_fill_advantage"] = families["translation_zerofill"] - families["translation"]
            entry["by_corruption"] = {c: float(np.mean(accs)) for c, accs in robustness["by_corruption"].items()}
        calibration = summary.get("calibration", {}).get(v)
        if calibration:
            entry["ece"] = calibration["ece"]
            entry["ece_after_temperature"] = calibration["ece_after_temperature"]
        road = summary.get("explanations", {}).get(v, {}).get("road")
        if road and road["combined_gain"]["mean"] is not None:
            entry["road_combined_gain"] = road["combined_gain"]["mean"]
        failures = summary.get("failures", {}).get(v)
        if failures:
            entry["errors"] = failures["n_errors"]
            for key in CONFIDENT_KEYS:
                entry[f"confident_errors_{key}"] = failures["confident_errors"][key]
        out[v] = entry
    return out


def _interval(values: list[float]) -> dict:
    result = t_interval(np.asarray(values, dtype=np.float64))
    return {**result, "values": [float(x) for x in values]}


def aggregate(per_seed: dict[int, dict[str, dict]], alpha: float = 0.05) -> dict:
    """Mean, SD and 95% t-interval per variant and metric; paired differences with Holm-corrected corruptions."""
    seeds = sorted(per_seed)
    # Only metrics every seed has (a seed run before a metric existed lacks it).
    scalar_keys = [k for k, v in per_seed[seeds[0]]["baseline"].items()
                   if not isinstance(v, dict) and all(k in per_seed[s][variant] for s in seeds for variant in VARIANTS)]
    result: dict = {"n_seeds": len(seeds), "interval_unit": "seeds (independent trainings of both models)", "variants": {}, "paired": {}}
    for v in VARIANTS:
        block = {k: _interval([per_seed[s][v][k] for s in seeds]) for k in scalar_keys}
        if "by_corruption" in per_seed[seeds[0]][v]:
            corruptions = list(per_seed[seeds[0]][v]["by_corruption"])
            block["by_corruption"] = {c: _interval([per_seed[s][v]["by_corruption"][c] for s in seeds]) for c in corruptions}
        result["variants"][v] = block
    for k in scalar_keys:
        result["paired"][k] = paired_difference([per_seed[s]["baseline"][k] for s in seeds], [per_seed[s]["augmented"][k] for s in seeds])
    if "by_corruption" in per_seed[seeds[0]]["baseline"]:
        corruptions = list(per_seed[seeds[0]]["baseline"]["by_corruption"])
        gains = {
            c: paired_difference(
                [per_seed[s]["baseline"]["by_corruption"][c] for s in seeds],
                [per_seed[s]["augmented"]["by_corruption"][c] for s in seeds],
            )
            for c in corruptions
        }
        pvalues = [gains[c]["p"] if gains[c]["p"] is not None else 1.0 for c in corruptions]
        rejected = holm_bonferroni(pvalues, alpha) if len(seeds) > 1 else [False] * len(corruptions)
        for c, significant in zip(corruptions, rejected):
            gains[c]["significant_holm"] = bool(significant)
        result["paired"]["by_corruption"] = gains
        result["holm_alpha"] = alpha
    return result


def failure_stability(wrong: dict[str, np.ndarray]) -> dict:
    """wrong[variant]: bool (n_seeds, n_images), True where that seed's model misclassifies the image.

    Returns per variant the histogram of "fails in k seeds", the images failing in every seed
    (data-intrinsic failures) and in exactly one (seed-dependent), and the overlap of the two
    variants' always-failing sets and of their ever-failing sets (Jaccard index).
    """
    n_seeds = next(iter(wrong.values())).shape[0]
    result: dict = {"n_seeds": int(n_seeds), "variants": {}}
    always, ever = {}, {}
    for v, table in wrong.items():
        counts = table.sum(0)  # (n_images,)
        always[v] = set(np.flatnonzero(counts == n_seeds).tolist())
        ever[v] = set(np.flatnonzero(counts > 0).tolist())
        result["variants"][v] = {
            "fail_count_histogram": [int((counts == k).sum()) for k in range(n_seeds + 1)],
            "always_wrong": len(always[v]),
            "once_wrong": int((counts == 1).sum()),
            "ever_wrong": len(ever[v]),
            "always_wrong_indices": sorted(always[v]),
        }

    def jaccard(a: set, b: set) -> float | None:
        return len(a & b) / len(a | b) if a | b else None

    a, b = list(wrong)[:2]
    result["overlap"] = {
        "always_wrong_both": len(always[a] & always[b]),
        "always_wrong_jaccard": jaccard(always[a], always[b]),
        "ever_wrong_jaccard": jaccard(ever[a], ever[b]),
    }
    return result


