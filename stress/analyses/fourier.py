"""Fourier heat maps: per-frequency error rates, radial profiles, frequency bands, and paired model differences.

Input: per model, a bool (F, n) array of correctness under each frequency's basis perturbation
(stress.evaluate.shards.fourier_correct) over the same n test images, and the clean correctness
of those images. Statements are about these trained models on these images: every interval is
a 95 % t-interval over the n images, where an image's value is its error averaged over the
frequencies in question (a band or a radius), so the frequencies are fixed and the images vary.

Bands split the radial frequency |(u, v)| at a third and two thirds of the Nyquist radius
min(H, W) / 2: low (< 16/3 for 32 x 32, about the scale of fog, contrast and brightness
changes), middle, and high (>= 32/3, the scale of pixel noise and JPEG blocks). The paired band
differences are Holm-corrected over the three bands.
"""

from __future__ import annotations

import math

import numpy as np

from stress.analyses.stats import holm_bonferroni, holm_levels, paired_difference, t_interval
from stress.perturb.fourier import centred

BANDS = ("low", "middle", "high")
UNIT = ("95% t-interval over the test images of the heat map; an image's value is its error averaged over the "
        "frequencies of the band or radius")


def radius(k1: int, k2: int, height: int, width: int) -> float:
    """|(u, v)| of a DFT index in centred coordinates."""
    return math.hypot(centred(k1, height), centred(k2, width))


def band(r: float, height: int, width: int) -> str:
    nyquist = min(height, width) / 2
    return "low" if r < nyquist / 3 else "middle" if r < 2 * nyquist / 3 else "high"


def heat_map(values: np.ndarray, frequencies: list[tuple[int, int]], height: int, width: int) -> np.ndarray:
    """(H, W) map in centred layout (numpy.fft.fftshift's: row u + H//2, column v + W//2), each mirrored pair filled from one value."""
    grid = np.full((height, width), np.nan)
    for value, (k1, k2) in zip(values, frequencies):
        for a, b in ((k1, k2), ((-k1) % height, (-k2) % width)):
            grid[centred(a, height) + height // 2, centred(b, width) + width // 2] = value
    return grid


def _interval(values: np.ndarray) -> dict:
    """Mean error rate and its t-interval over images, clipped to [0, 1] (where a rate lies; the unclipped ends can leave it for few images)."""
    t = t_interval(values)
    clip = lambda x: None if x is None else min(max(x, 0.0), 1.0)  # noqa: E731
    return {"mean": t["mean"], "low": clip(t["low"]), "high": clip(t["high"])}


def summarise_fourier(clean_correct: dict[str, np.ndarray], correct: dict[str, np.ndarray], frequencies: list[tuple[int, int]],
                      height: int, width: int, names: list[str], norm: float) -> tuple[dict, dict[str, np.ndarray]]:
    """(record for eval/fourier.json, arrays for eval/fourier.npz) from per-model (F, n) correctness."""
    radii = np.array([radius(k1, k2, height, width) for k1, k2 in frequencies])
    rings = np.rint(radii).astype(int)
    bands = np.array([band(r, height, width) for r in radii])
    record: dict = {"unit": UNIT, "norm": norm, "frequencies": len(frequencies), "images": int(next(iter(correct.values())).shape[1]),
                    "size": [height, width], "band_edges": [min(height, width) / 6, min(height, width) / 3], "models": {}}
    arrays: dict[str, np.ndarray] = {"frequencies": np.array(frequencies, dtype=np.int64), "radius": radii}
    errors = {v: 1.0 - correct[v].astype(np.float64) for v in names}  # (F, n)
    for v in names:
        per_frequency = errors[v].mean(axis=1)
        arrays[f"{v}_error"] = per_frequency
        arrays[f"{v}_heatmap"] = heat_map(per_frequency, frequencies, height, width)
        clean_error = 1.0 - np.asarray(clean_correct[v], dtype=np.float64)
        by_band = {}
        for b in BANDS:
            if (bands == b).any():
                per_image = errors[v][bands == b].mean(axis=0)
                rise = paired_difference(clean_error, per_image)  # the band's error minus the clean error, image by image
                by_band[b] = {**_interval(per_image), "frequencies": int((bands == b).sum()),
                              "over_clean": {k: rise[k] for k in ("mean", "low", "high")}}
        ranked = sorted(by_band, key=lambda b: by_band[b]["mean"], reverse=True)
        margin = None
        if len(ranked) > 1:  # the most sensitive band's error minus the runner-up's, image by image
            d = paired_difference(errors[v][bands == ranked[1]].mean(axis=0), errors[v][bands == ranked[0]].mean(axis=0))
            margin = {"over": ranked[1], **{k: d[k] for k in ("mean", "low", "high")}}
        worst = int(np.argmax(per_frequency))
        record["models"][v] = {
            "clean_error": float(1.0 - np.mean(clean_correct[v])),
            "mean_error": _interval(errors[v].mean(axis=0)),
            "by_band": by_band,
            "most_sensitive_band": ranked[0],
            "margin": margin,
            "worst_frequency": {"u": centred(frequencies[worst][0], height), "v": centred(frequencies[worst][1], width),
                                "error": float(per_frequency[worst])},
            "radial": [{"radius": int(r), **_interval(errors[v][rings == r].mean(axis=0)), "frequencies": int((rings == r).sum())}
                       for r in np.unique(rings)],
        }
    if len(names) > 1:
        reference = names[0]
        record["differences"] = {}
        for other in names[1:]:
            arrays[f"{other}_minus_{reference}_heatmap"] = arrays[f"{other}_heatmap"] - arrays[f"{reference}_heatmap"]
            by_band = {b: paired_difference(errors[reference][bands == b].mean(axis=0), errors[other][bands == b].mean(axis=0))
                       for b in record["models"][reference]["by_band"]}
            pvalues = [d["p"] if d["p"] is not None else 1.0 for d in by_band.values()]
            for d, level, rejected in zip(by_band.values(), holm_levels(pvalues), holm_bonferroni(pvalues)):
                d["holm_level"], d["significant"] = level, bool(rejected)
            record["differences"][other] = {
                "reference": reference,
                "by_band": by_band,
                "radial": [{"radius": int(r), **{k: d[k] for k in ("mean", "low", "high")}}
                           for r in np.unique(rings)
                           for d in [paired_difference(errors[reference][rings == r].mean(axis=0), errors[other][rings == r].mean(axis=0))]],
            }
    return record, arrays


def fourier_over_seeds(records: list[dict], reference: str = "baseline", other: str = "augmented") -> dict | None:
    """Band errors over seeds: per band, both models' mean and the paired difference (other − reference) with a t-interval
    over seeds and Holm over the bands; and how often each band was a model's most sensitive one. None when a seed has no
    heat map for both models, or fewer than two seeds do."""
    usable = [r for r in records if r and "skipped" not in r and {reference, other} <= set(r.get("models", {}))]
    if len(usable) < 2 or len(usable) != len(records):
        return None
    bands = [b for b in BANDS if all(b in r["models"][reference]["by_band"] for r in usable)]
    by_band = {}
    for b in bands:
        values = {v: np.array([r["models"][v]["by_band"][b]["mean"] for r in usable]) for v in (reference, other)}
        d = paired_difference(values[reference], values[other])
        by_band[b] = {"reference": t_interval(values[reference])["mean"], "other": t_interval(values[other])["mean"],
                      "difference": {k: d[k] for k in ("mean", "low", "high", "p", "n")}}
    pvalues = [x["difference"]["p"] if x["difference"]["p"] is not None else 1.0 for x in by_band.values()]
    for x, level, rejected in zip(by_band.values(), holm_levels(pvalues), holm_bonferroni(pvalues)):
        x["holm_level"], x["significant"] = level, bool(rejected)
    most = {v: {b: sum(r["models"][v]["most_sensitive_band"] == b for r in usable) for b in BANDS} for v in (reference, other)}
    return {"models": [reference, other], "n_seeds": len(usable), "norm": usable[0]["norm"], "images": usable[0]["images"],
            "by_band": by_band, "most_sensitive_band": most, "interval_unit": "seeds (independent trainings), paired by seed; Holm over bands"}
