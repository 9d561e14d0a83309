"""Label suspects and failure slices across the seeds of a sweep.

- A test image's suspicion, per variant, is the share of seeds whose model flags its label; an
  image flagged in every seed is a stable suspect. The share of confident failures that are
  suspects gets a t-interval over seeds.
- A named slice (every kind but the seed-specific embedding clusters) is followed over seeds by
  its error rate minus the model's overall error rate; a class-with-bin slice by its error rate
  minus the higher of its two parents' (its class's, its bin's), as in a single run. A slice is a
  finding when it is worse in every seed and the t-test over seeds of that difference survives
  Holm's correction over all the slices followed; a slice in only one seed's listed top slices
  is noise.

Inputs are each seed's eval/labels.npz arrays and eval/slices.json records; intervals are over seeds.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats

from stress.analyses.stats import holm_bonferroni, t_interval

INTERVAL_UNIT = "seeds (independent trainings)"
LISTED = 100  # stable suspects' indices listed per variant


def suspicion_over_seeds(flags: dict[str, np.ndarray], confident_shares: dict[str, list[float | None]]) -> dict:
    """flags[variant]: bool (n_seeds, n_images); confident_shares[variant]: per seed, the share of its confident
    failures (>= 0.9) that are suspects (None without any)."""
    out: dict = {"interval_unit": INTERVAL_UNIT, "variants": {}}
    stable = {}
    for v, table in flags.items():
        n_seeds = table.shape[0]
        counts = table.sum(0)
        stable[v] = counts == n_seeds
        shares = [s for s in confident_shares.get(v, []) if s is not None]
        out["variants"][v] = {
            "n_seeds": int(n_seeds),
            "flag_count_histogram": [int((counts == k).sum()) for k in range(n_seeds + 1)],
            "stable_suspects": int(stable[v].sum()),
            "ever_flagged": int((counts > 0).sum()),
            "stable_suspect_indices": [int(i) for i in np.flatnonzero(stable[v])[:LISTED]],
            "confident_failure_share": {**t_interval(np.asarray(shares)), "values": shares} if len(shares) > 1 else None,
        }
    if len(stable) > 1:
        a, b = list(stable)[:2]
        out["stable_in_both"] = int((stable[a] & stable[b]).sum())
    return out


def slices_over_seeds(records: list[dict], variant: str, alpha: float = 0.05, listed: int = 15) -> dict:
    """Every named slice tested in all seeds of `variant`: its error rate minus overall per seed, a t-interval over seeds,
    in how many seeds it is worse and in how many seeds' listed top slices it is; findings as in the module docstring."""
    per_seed = [r["models"][variant] for r in records]
    kept = [{s["name"] for s in m["slices"]} for m in per_seed]  # the top slices each run listed
    tables = [{t["name"]: t for t in m.get("tested", []) if t["kind"] != "cluster"} for m in per_seed]
    names = sorted(set.intersection(*(set(t) for t in tables))) if tables else []
    rows = []
    def rate(table: dict, name: str) -> float:
        return table[name]["errors"] / table[name]["size"]

    for name in names:
        parents = tables[0][name].get("parents") or []
        if parents and all(p in t for p in parents for t in tables):
            baseline = [max(rate(t, p) for p in parents) for t in tables]  # worse than its class and its bin
        else:
            baseline = [m["overall_error"] for m in per_seed]
        # Rounded to 1e-12: ratios of counts that are equal in every seed differ only by float rounding, which is not a spread.
        differences = np.round([rate(t, name) - b for t, b in zip(tables, baseline)], 12)
        interval = t_interval(differences)
        if len(differences) > 1 and differences.std(ddof=1) > 0:
            p = float(scipy_stats.ttest_1samp(differences, 0.0).pvalue)
        else:
            p = 1.0 if not differences.any() else 0.0
        rows.append({"name": name, "kind": tables[0][name]["kind"], "size": tables[0][name]["size"],
                     "against": "parent" if parents and all(p in t for p in parents for t in tables) else "overall",
                     "difference": interval, "p": p, "worse_in": int((differences > 0).sum()),
                     "kept_in": sum(name in k for k in kept),
                     "error_rates": [float(t[name]["errors"] / t[name]["size"]) for t in tables]})
    rejected = holm_bonferroni([r["p"] for r in rows], alpha) if rows else []
    for row, reject in zip(rows, rejected):
        low = row["difference"]["low"]
        row["finding"] = bool(reject and row["worse_in"] == len(records) and low is not None and low > 0)
    findings = sorted((r for r in rows if r["finding"]), key=lambda r: (-r["difference"]["low"], r["name"]))
    noise = sorted(r["name"] for r in rows if r["kept_in"] == 1 and not r["finding"])
    return {"n_seeds": len(records), "followed": len(rows), "findings": len(findings), "alpha": alpha,
            "top": findings[:listed], "kept_in_one_seed_only": noise[:listed], "interval_unit": INTERVAL_UNIT}
