"""Training-level fidelity of bf16: an fp32 and a bf16 seed sweep compared seed by seed (run by hand).

    .venv/bin/python benchmarks/fidelity_sweep.py runs/sweep5 runs/sweep5_bf16 \
        --out benchmarks/results/fidelity_sweep.json

Both folders are finished `jobs/seed_sweep.py` runs with the same seeds and settings except
`--precision`. For test accuracy, mean corruption accuracy and ECE of each variant, the
per-seed differences bf16 - fp32 are tested for equivalence with two one-sided paired t-tests
(TOST, `stress.analyses.stats.tost_paired`) at the margins below: equivalence means the 90% t interval
of the mean difference over seeds lies inside (-margin, +margin). The unit of every interval
here is the seed (the variation between trainings), not the test image. Also printed: the
augmentation effect (augmented - baseline, paired over seeds) in each precision.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import common

from stress.analyses.stats import paired_difference, tost_paired
from stress.artifacts import read_json
from stress.constants import VARIANTS

# Equivalence margins, in the metric's own unit: 0.5 accuracy points, 0.01 of ECE.
MARGINS = {"test_acc": 0.005, "mean_corruption_acc": 0.005, "ece": 0.01}


def per_seed(summary: dict, variant: str, key: str) -> dict[int, float]:
    return {int(seed): float(values[variant][key]) for seed, values in summary["per_seed"].items()
            if values.get(variant, {}).get(key) is not None}


def compare(fp32: dict, bf16: dict) -> dict:
    seeds = sorted(set(map(int, fp32["seeds"])) & set(map(int, bf16["seeds"])))
    out: dict = {"seeds": seeds, "margins": MARGINS, "interval_unit": "seeds (paired by seed, bf16 - fp32)",
                 "equivalence": {}, "augmentation_effect": {}}
    for variant in VARIANTS:
        for key, margin in MARGINS.items():
            a, b = per_seed(fp32, variant, key), per_seed(bf16, variant, key)
            common_seeds = [s for s in seeds if s in a and s in b]
            result = tost_paired([a[s] for s in common_seeds], [b[s] for s in common_seeds], margin)
            result["fp32_mean"] = sum(a[s] for s in common_seeds) / len(common_seeds)
            result["bf16_mean"] = sum(b[s] for s in common_seeds) / len(common_seeds)
            out["equivalence"][f"{variant}.{key}"] = result
    for name, summary in (("fp32", fp32), ("bf16", bf16)):
        out["augmentation_effect"][name] = {}
        for key in MARGINS:
            base, aug = per_seed(summary, "baseline", key), per_seed(summary, "augmented", key)
            common_seeds = [s for s in seeds if s in base and s in aug]
            out["augmentation_effect"][name][key] = paired_difference([base[s] for s in common_seeds], [aug[s] for s in common_seeds])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fp32", help="sweep folder run with --precision fp32")
    parser.add_argument("bf16", help="sweep folder run with --precision bf16, same seeds and settings")
    parser.add_argument("--out")
    args = parser.parse_args()
    summaries = {name: read_json(Path(folder) / "summary.json") for name, folder in (("fp32", args.fp32), ("bf16", args.bf16))}
    out = {"machine": common.machine_info(), "folders": {"fp32": args.fp32, "bf16": args.bf16}, **compare(summaries["fp32"], summaries["bf16"])}
    print(f"seeds {out['seeds']}; intervals over seeds; TOST margins {MARGINS}")
    print("| metric | fp32 (mean over seeds) | bf16 | bf16 - fp32 [90% CI] | TOST p | equivalent |")
    print("|---|---|---|---|---|---|")
    for name, r in out["equivalence"].items():
        print(f"| {name} | {r['fp32_mean']:.4f} | {r['bf16_mean']:.4f} | {r['mean']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] "
              f"| {r['p']:.3f} | {'yes' if r['equivalent'] else 'no'} (±{r['margin']:g}) |")
    print("\naugmented - baseline, paired over seeds (95% CI):")
    for key in MARGINS:
        cells = [f"{p}: {e[key]['mean']:+.4f} [{e[key]['low']:+.4f}, {e[key]['high']:+.4f}]" for p, e in out["augmentation_effect"].items()]
        print(f"  {key}: " + "; ".join(cells))
    if args.out:
        common.write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
