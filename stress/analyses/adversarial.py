"""Adversarial robustness: robust accuracy per attack, AutoAttack, the images that flip first, and whether Grad-CAM moved.

Input: per model the arrays of stress.evaluate.probe_shards.attack_shard over the same n test
images. Statements are about these trained models on these images.

An image is robust at eps when it is classified correctly clean and no PGD of that norm at eps
or any smaller eps fooled it (an adversarial example within a smaller ball is one within the
larger ball too), so robust accuracy never rises with eps. AutoAttack (standard version, L-inf
8/255) is reported on its own, RobustBench's figure, and as the worst case with PGD at 8/255.
Accuracies carry Wilson intervals over the images; model differences are Newcombe's paired
intervals over the images with McNemar's exact test, Holm-corrected over the attacks. Grad-CAM similarity is the Pearson
correlation between the map of the clean prediction and the map of the prediction on the
adversarial image at its flip eps; the comparison is the same image with random signs of the
same L-inf size (t-intervals over the flipped images, paired between the two).
"""

from __future__ import annotations

import numpy as np

from stress.analyses.stats import (
    accuracy_with_interval, holm_bonferroni, holm_levels, paired_difference, paired_proportion_difference,
    ratio_of_paired_means, t_interval,
)
from stress.perturb.pgd import Attack

UNIT = ("the attacked test images (Wilson intervals; Newcombe's paired intervals and McNemar's exact test over images for model "
        "differences, Holm over attacks)")


def robust_flags(results: dict[str, np.ndarray], attacks: list[Attack]) -> dict[str, np.ndarray]:
    """{attack name: bool (n,) robust}, monotone in eps within each norm; "autoattack" and "worst_8/255" when AutoAttack ran."""
    clean = results["clean"].astype(bool)
    out = {}
    for norm in ("linf", "l2"):
        alive = clean.copy()
        for attack in sorted((a for a in attacks if a.norm == norm), key=lambda a: a.eps):
            alive = alive & ~results[attack.name].astype(bool)
            out[attack.name] = alive.copy()
    if "autoattack" in results:
        out["autoattack"] = clean & results["autoattack"].astype(bool)
        strongest = max((a for a in attacks if a.norm == "linf"), key=lambda a: a.eps, default=None)
        if strongest is not None and abs(strongest.eps - 8 / 255) < 1e-9:
            out["worst_8/255"] = out["autoattack"] & out[strongest.name]
    return out


def _mean(values: np.ndarray) -> dict | None:
    values = values[~np.isnan(values)]
    return t_interval(values) if len(values) else None


def summarise_attacks(results: dict[str, dict[str, np.ndarray]], names: list[str], attacks: list[Attack], steps: int,
                      indices: np.ndarray) -> dict:
    """The record of eval/adversarial.json from {model: attack_shard arrays over the same images}; indices: their test-set indices."""
    linf = sorted((a for a in attacks if a.norm == "linf"), key=lambda a: a.eps)
    n = len(indices)
    record: dict = {"unit": UNIT, "images": n, "steps": steps, "step_size": "2.5 eps / steps", "random_start": True,
                    "attacks": [{"name": a.name, "norm": a.norm, "eps": a.eps, "label": a.label} for a in attacks],
                    "autoattack": all("autoattack" in results[v] for v in names), "models": {}}
    flags = {v: robust_flags(results[v], attacks) for v in names}
    for v in names:
        r = results[v]
        flip = r["flip"].astype(int)
        clean = r["clean"].astype(bool)
        first = [int(i) for i in indices[(flip == 0) & clean]]
        adversarial, random = r["cam_adversarial"], r["cam_random"]
        same = r.get("cam_same_class", np.full(len(adversarial), np.nan))  # shards saved before it: not measured
        both = ~np.isnan(adversarial) & ~np.isnan(random) & clean  # a misclassified image counts as fooled before any step
        moved = paired_difference(random[both], adversarial[both]) if both.sum() > 1 else None
        kept = both & ~np.isnan(same)
        same_moved = paired_difference(random[kept], same[kept]) if kept.sum() > 1 else None
        # The share of the new-class map's drop below noise that the clean class's own map does not share.
        share = ratio_of_paired_means(same[kept] - adversarial[kept], random[kept] - adversarial[kept]) if kept.sum() > 1 else None
        record["models"][v] = {
            "clean": accuracy_with_interval(clean),
            "robust": {name: accuracy_with_interval(f) for name, f in flags[v].items()},
            "flips": [{"attack": a.name, "label": a.label, "images": int(((flip == i) & clean).sum())} for i, a in enumerate(linf)]
                     + [{"attack": None, "label": f"not within {linf[-1].label}" if linf else "none", "images": int(((flip < 0) & clean).sum())}],
            "first_to_flip": first[:50],
            "first_to_flip_count": len(first),
            "cam": {"adversarial": _mean(adversarial[both]), "random": _mean(random[both]), "images": int(both.sum()),
                    "adversarial_minus_random": None if moved is None else {k: moved[k] for k in ("mean", "low", "high", "p", "n")},
                    "same_class": _mean(same[kept]), "same_class_images": int(kept.sum()),
                    "same_class_minus_random": None if same_moved is None else {k: same_moved[k] for k in ("mean", "low", "high", "p", "n")},
                    "class_change_share": share},
        }
    if len(names) > 1:
        reference = names[0]
        record["differences"] = {}
        for other in names[1:]:
            keys = [k for k in flags[reference] if k in flags[other]]
            by_attack = {k: paired_proportion_difference(flags[reference][k], flags[other][k]) for k in keys}
            pvalues = [d["p"] if d["p"] is not None else 1.0 for d in by_attack.values()]
            for d, level, rejected in zip(by_attack.values(), holm_levels(pvalues), holm_bonferroni(pvalues)):
                d["holm_level"], d["significant"] = level, bool(rejected)
            shared = [int(i) for i in indices[(results[reference]["flip"] == 0) & (results[other]["flip"] == 0)
                                              & results[reference]["clean"].astype(bool) & results[other]["clean"].astype(bool)]]
            record["differences"][other] = {"reference": reference, "by_attack": by_attack, "first_to_flip_in_both": shared[:50],
                                            "first_to_flip_in_both_count": len(shared)}
    return record


def attacks_over_seeds(records: list[dict], reference: str = "baseline", other: str = "augmented") -> dict | None:
    """Robust accuracy per attack over seeds: both models' mean and the paired difference (other − reference), t-interval over
    seeds, Holm over the attacks. None unless every seed has both models (at least two seeds)."""
    usable = [r for r in records if r and {reference, other} <= set(r.get("models", {}))]
    if len(usable) < 2 or len(usable) != len(records):
        return None
    keys = [k for k in usable[0]["models"][reference]["robust"] if all(k in r["models"][v]["robust"] for r in usable for v in (reference, other))]
    by_attack = {}
    for k in keys:
        values = {v: [r["models"][v]["robust"][k]["acc"] for r in usable] for v in (reference, other)}
        d = paired_difference(values[reference], values[other])
        by_attack[k] = {"reference": t_interval(values[reference]), "other": t_interval(values[other]),
                        "difference": {x: d[x] for x in ("mean", "low", "high", "p", "n")}}
    pvalues = [x["difference"]["p"] if x["difference"]["p"] is not None else 1.0 for x in by_attack.values()]
    for x, level, rejected in zip(by_attack.values(), holm_levels(pvalues), holm_bonferroni(pvalues)):
        x["holm_level"], x["significant"] = level, bool(rejected)
    return {"models": [reference, other], "n_seeds": len(usable), "images": usable[0]["images"], "by_attack": by_attack,
            "cam": cam_over_seeds(usable, reference, other),
            "interval_unit": "seeds (independent trainings), paired by seed; Holm over attacks"}


CAM_MEANS = ("adversarial", "same_class", "random")  # the per-seed means of eval/adversarial.json's cam block


def cam_over_seeds(records: list[dict], reference: str, other: str) -> dict | None:
    """The attacked images' Grad-CAM similarities over seeds: each model's per-seed means (t-intervals over seeds), the
    clean-class map's gap to noise and the share of the drop that is the change of class; and the gap's difference
    other − reference, paired by seed. None unless every seed's record has the clean-class map."""
    cams = {v: [r["models"][v].get("cam") or {} for r in records] for v in (reference, other)}
    if not all(c.get("same_class_minus_random") and c.get("same_class") for v in cams for c in cams[v]):
        return None
    models = {}
    gap = {v: [c["same_class_minus_random"]["mean"] for c in per_seed] for v, per_seed in cams.items()}
    for v, per_seed in cams.items():
        models[v] = {k: t_interval([c[k]["mean"] for c in per_seed]) for k in CAM_MEANS}
        models[v]["same_class_minus_random"] = t_interval(gap[v])
        shares = [(c.get("class_change_share") or {}).get("mean") for c in per_seed]
        models[v]["class_change_share"] = t_interval(shares) if all(x is not None for x in shares) else None
        models[v]["images"] = [c["same_class_images"] for c in per_seed]
    d = paired_difference(gap[reference], gap[other])
    return {"models": models, "same_class_minus_random_difference": {k: d[k] for k in ("mean", "low", "high", "p", "n")},
            "interval_unit": "seeds (independent trainings); each seed's value is a mean over its flipped images"}
