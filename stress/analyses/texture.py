"""Texture versus shape: accuracy under patch shuffling and low / high-pass filtering, and the texture-reliance index.

Input: per model, bool (n,) correctness of the same n test images clean and under every probe
of stress.perturb.texture. Statements are about these trained models on these images.

Accuracy kept under a probe is chance-corrected, (acc_probe - 1/K) / (acc_clean - 1/K) for K
classes: 1 when the probe costs nothing, 0 at chance. The texture-reliance index at a scale
(grid g, cut-off g: both keep structure of side / g pixels, stress.perturb.texture) is

    TRI = kept(shuffle_g) / kept(lowpass_g) = (acc_shuffle_g - 1/K) / (acc_lowpass_g - 1/K)

above 1 when the model keeps more of its accuracy from local texture without global shape than
from global shape without fine texture; below 1 the other way round. Its intervals are
percentile bootstraps over the test images (both accuracies from the same resample; a model
difference from the same resamples for both models, so paired); the index is undefined (None)
when the low-pass accuracy is not above chance. Accuracies carry Wilson intervals; paired
accuracy differences between models are Newcombe's paired intervals over images with McNemar's exact
test, Holm-corrected over probes.
"""

from __future__ import annotations

import numpy as np

from stress.analyses.stats import (
    accuracy_with_interval, holm_bonferroni, holm_levels, paired_difference, paired_proportion_difference, t_interval,
)
from stress.perturb.texture import HEADLINE_SCALE, PAIRED_SCALES

UNIT = "test images of the texture probes (Wilson intervals for accuracies; percentile bootstrap over images for the index)"
BOOTSTRAP = 2000


def _index(shuffle: np.ndarray, lowpass: np.ndarray, chance: float) -> np.ndarray:
    """TRI from accuracies (any shape); NaN where the low-pass accuracy is not above chance."""
    shuffle, lowpass = np.asarray(shuffle, dtype=np.float64), np.asarray(lowpass, dtype=np.float64)
    denominator = lowpass - chance
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, (shuffle - chance) / denominator, np.nan)


def _percentile(replicates: np.ndarray) -> tuple[float | None, float | None]:
    """Percentile 95% interval of bootstrap replicates; None ends if over 2.5% of them are undefined (NaN)."""
    if np.isnan(replicates).mean() > 0.025:
        return None, None
    low, high = np.nanquantile(replicates, [0.025, 0.975])
    return float(low), float(high)


def resampled_means(correct: dict[str, np.ndarray], n_boot: int = BOOTSTRAP, seed: int = 0) -> dict[str, np.ndarray]:
    """{key: (n_boot,) mean of correct[key] over the same bootstrap resamples of the images}."""
    n = len(next(iter(correct.values())))
    rng = np.random.default_rng([seed, 0x7E])
    values = np.stack([np.asarray(v, dtype=np.float64) for v in correct.values()], axis=1)  # (n, keys)
    out = np.empty((n_boot, values.shape[1]))
    for first in range(0, n_boot, 100):  # resample counts in chunks: (100, n) at a time
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(min(100, n_boot - first))])
        out[first : first + len(counts)] = counts @ values / n
    return {k: out[:, i] for i, k in enumerate(correct)}


def summarise_texture(clean: dict[str, np.ndarray], probed: dict[str, dict[str, np.ndarray]], names: list[str], classes: int,
                      seed: int = 0) -> dict:
    """The record of eval/texture.json. clean: {model: (n,) bool}; probed: {model: {probe: (n,) bool}}."""
    chance = 1.0 / classes
    probes = list(next(iter(probed.values())))
    scales = [(g, c) for g, c in PAIRED_SCALES if f"shuffle_{g}" in probes and f"lowpass_{c:g}" in probes]
    flat = {f"{v}|{p}": probed[v][p] for v in names for p in probes}
    means = resampled_means(flat, seed=seed)
    n = int(len(next(iter(clean.values()))))
    record: dict = {"unit": UNIT, "images": n, "classes": classes, "chance": chance, "probes": probes,
                    "scales": [{"grid": g, "cutoff": c} for g, c in scales], "headline": {"grid": HEADLINE_SCALE[0], "cutoff": HEADLINE_SCALE[1]},
                    "bootstrap": BOOTSTRAP, "models": {}}
    replicates: dict[tuple[str, int], np.ndarray] = {}
    for v in names:
        clean_acc = float(np.mean(clean[v]))
        accuracy = {}
        for p in probes:
            a = accuracy_with_interval(probed[v][p])
            kept = (a["acc"] - chance) / (clean_acc - chance) if clean_acc > chance else None
            accuracy[p] = {**a, "kept": kept}
        index = []
        for g, c in scales:
            s, lp = f"shuffle_{g}", f"lowpass_{c:g}"
            point = _index(accuracy[s]["acc"], accuracy[lp]["acc"], chance)
            replicates[(v, g)] = _index(means[f"{v}|{s}"], means[f"{v}|{lp}"], chance)
            low, high = _percentile(replicates[(v, g)])
            index.append({"grid": g, "cutoff": c, "index": None if np.isnan(point) else float(point), "low": low, "high": high})
        record["models"][v] = {"clean": accuracy_with_interval(clean[v]), "accuracy": accuracy, "index": index}
    if len(names) > 1:
        reference = names[0]
        record["differences"] = {}
        for other in names[1:]:
            by_probe = {p: paired_proportion_difference(probed[reference][p], probed[other][p]) for p in probes}
            pvalues = [d["p"] if d["p"] is not None else 1.0 for d in by_probe.values()]
            for d, level, rejected in zip(by_probe.values(), holm_levels(pvalues), holm_bonferroni(pvalues)):
                d["holm_level"], d["significant"] = level, bool(rejected)
            index = []
            for (g, c), ours, theirs in zip(scales, record["models"][reference]["index"], record["models"][other]["index"]):
                d = replicates[(other, g)] - replicates[(reference, g)]
                entry = {"grid": g, "cutoff": c, "difference": None, "low": None, "high": None, "p": None}
                low, high = _percentile(d)
                if ours["index"] is not None and theirs["index"] is not None and low is not None:
                    valid = d[~np.isnan(d)]
                    p = min(1.0, 2 * min(np.mean(valid <= 0), np.mean(valid >= 0)))
                    entry.update(difference=theirs["index"] - ours["index"], low=low, high=high, p=float(p))
                index.append(entry)
            pvalues = [e["p"] if e["p"] is not None else 1.0 for e in index]
            for e, level, rejected in zip(index, holm_levels(pvalues), holm_bonferroni(pvalues)):
                e["holm_level"], e["significant"] = level, bool(rejected and e["p"] is not None)
            record["differences"][other] = {"reference": reference, "by_probe": by_probe, "index": index}
    return record


def headline_index(record: dict, model: str) -> dict | None:
    """The model's index entry at the headline scale, or None."""
    head = record.get("headline", {})
    for entry in record.get("models", {}).get(model, {}).get("index", []):
        if entry["grid"] == head.get("grid"):
            return entry
    return None


def texture_over_seeds(records: list[dict], reference: str = "baseline", other: str = "augmented") -> dict | None:
    """Per scale, both models' mean index over seeds and the paired difference (other − reference) with a t-interval over
    seeds, Holm over scales. None unless every seed has both models' indices (at least two seeds)."""
    usable = [r for r in records if r and {reference, other} <= set(r.get("models", {}))]
    if len(usable) < 2 or len(usable) != len(records):
        return None
    by_scale = []
    for position, scale in enumerate(usable[0]["scales"]):
        values = {v: [r["models"][v]["index"][position]["index"] for r in usable] for v in (reference, other)}
        if any(x is None for x in values[reference] + values[other]):
            continue
        d = paired_difference(values[reference], values[other])
        by_scale.append({**scale, "reference": t_interval(values[reference]), "other": t_interval(values[other]),
                         "difference": {k: d[k] for k in ("mean", "low", "high", "p", "n")}})
    if not by_scale:
        return None
    pvalues = [x["difference"]["p"] if x["difference"]["p"] is not None else 1.0 for x in by_scale]
    for x, level, rejected in zip(by_scale, holm_levels(pvalues), holm_bonferroni(pvalues)):
        x["holm_level"], x["significant"] = level, bool(rejected)
    return {"models": [reference, other], "n_seeds": len(usable), "images": usable[0]["images"], "by_scale": by_scale,
            "headline": usable[0]["headline"], "interval_unit": "seeds (independent trainings), paired by seed; Holm over scales"}
