"""Turn merged per-image results into the failure and explanation findings (plain numpy/torch).

Everything here works on arrays already in memory: the merged shard outputs, the test
images and labels. The driver calls it after the fan-out; tests call it on fixtures.
"""

from __future__ import annotations

import numpy as np
import torch

from stress.analyses.gradcam import gradcam_for_targets
from stress.analyses.stats import bootstrap_ci, cohens_d, t_interval
from stress.augment import CIFAR10_STATS, Stats, normalize
from stress.constants import UNIFORM_CENTRE_SHARE

GALLERY_SIZE = 16  # most confident failures shown per variant


def _mean_interval(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return {"mean": float(values.mean()) if values.size else None, "low": None, "high": None, "n": int(values.size)}
    result = t_interval(values)
    return {"mean": result["mean"], "low": result["low"], "high": result["high"], "n": result["n"]}


def summarise_road(m: dict) -> dict:
    """ROAD AUCs (target probability averaged over removal fractions) and the paired gains over
    the structure-matched random order: MoRF (random − map: > 0 when removing the map's top
    first destroys the evidence faster), LeRF (map − random: > 0 when removing its bottom first
    keeps the evidence longer), and their mean, ROAD's combined score (LeRF − MoRF) / 2 of the map
    minus that of the random order, which the faithfulness verdict uses."""
    keys = ("road_morf_auc", "road_lerf_auc", "road_random_morf_auc", "road_random_lerf_auc")
    morf_gain = m["faithful_road_random_morf_auc"] - m["faithful_road_morf_auc"]
    lerf_gain = m["faithful_road_lerf_auc"] - m["faithful_road_random_lerf_auc"]
    return {
        **{k: _mean_interval(m[f"faithful_{k}"]) for k in keys},
        "morf_gain": _mean_interval(morf_gain),
        "lerf_gain": _mean_interval(lerf_gain),
        "combined_gain": _mean_interval((morf_gain + lerf_gain) / 2),
        "n_images": int(len(m["faithful_indices"])),
        "imputation": "noisy linear (Rong et al. 2022)",
        "random_order": "structure-matched: uniform noise at the CAM resolution, upsampled like the CAM",
    }


def analyse_explanations(merged: dict) -> dict:
    """Centre-versus-border attention of failures and successes, deletion/insertion AUCs, sanity check."""
    result = {}
    for v in merged:  # every model under test
        m = merged[v]
        correct = m["correct"].astype(bool)
        share = m["centre_share_predicted"].astype(np.float64)
        failures, successes = share[~correct], share[correct]
        entry = {
            "centre_share": {
                "failures": _mean_interval(failures),
                "successes": _mean_interval(successes),
                "cohens_d": cohens_d(failures, successes) if failures.size > 1 and successes.size > 1 else None,
                "difference_interval": list(bootstrap_ci(lambda a, b: float(a.mean() - b.mean()), failures, successes, n_boot=500))
                if failures.size > 1 and successes.size > 1 else None,
                "area_share": UNIFORM_CENTRE_SHARE,  # what uniform attention gives
            },
            "centre_share_true_class": {
                "failures": _mean_interval(m["centre_share_true"][~correct]),
                "successes": _mean_interval(m["centre_share_true"][correct]),
            },
        }
        if "faithful_indices" in m and len(m["faithful_indices"]):
            aucs = {k: _mean_interval(m[f"faithful_{k}"]) for k in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")}
            correlation = m["faithful_randomisation_correlation"]
            defined = correlation[np.isfinite(correlation)]
            entry["faithfulness"] = {
                **aucs,
                "n_images": int(len(m["faithful_indices"])),
                "deletion_gain": _mean_interval(m["faithful_random_deletion_auc"] - m["faithful_deletion_auc"]),
                "insertion_gain": _mean_interval(m["faithful_insertion_auc"] - m["faithful_random_insertion_auc"]),
            }
            if "faithful_road_morf_auc" in m:
                entry["road"] = summarise_road(m)
            entry["sanity_check"] = {
                "mean_rank_correlation": float(defined.mean()) if defined.size else None,
                "median_rank_correlation": float(np.median(defined)) if defined.size else None,
                "interval": _mean_interval(defined),
                "undefined": int(correlation.size - defined.size),
                "n_images": int(correlation.size),
            }
        result[v] = entry
    return result


def explain_cases(models: dict[str, torch.nn.Module], images: np.ndarray, labels: np.ndarray, merged: dict, failures: dict,
                  stats: Stats = CIFAR10_STATS, layer: str | None = None) -> dict[str, np.ndarray]:
    """Grad-CAM maps of every selected case under both models, for each model's predicted and the true class.

    Returns arrays for eval/gradcam_cases.npz: case_variant (which variant selected the case),
    indices, images (uint8), labels, and maps_<model>_<predicted|true> (n, H, W) raw maps.
    """
    case_variant, indices = [], []
    for v in models:
        for case in failures[v]["cases"]:
            case_variant.append(v)
            indices.append(case["index"])
    idx = np.asarray(indices, dtype=np.int64)
    x = torch.as_tensor(images[idx])
    y = torch.as_tensor(labels[idx])
    out: dict[str, np.ndarray] = {
        "case_variant": np.asarray(case_variant), "indices": idx, "images": images[idx], "labels": labels[idx],
    }
    for model_name, model in models.items():
        predicted = torch.as_tensor(merged[model_name]["predicted"][idx])
        maps = gradcam_for_targets(model, normalize(x, stats), {"predicted": predicted, "true": y}, layer)
        out[f"maps_{model_name}_predicted"] = maps["predicted"].numpy()
        out[f"maps_{model_name}_true"] = maps["true"].numpy()
        out[f"predicted_{model_name}"] = merged[model_name]["predicted"][idx]
        out[f"confidence_{model_name}"] = merged[model_name]["confidence"][idx]
    return out


