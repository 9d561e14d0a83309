"""Compiled against eager stress passes on a run's trained weights (run by hand).

    .venv/bin/python benchmarks/fidelity_compile.py runs/default --data ../shared/data/cifar10/cifar10.npz \
        --out benchmarks/results/fidelity_compile.json

The stress stage's own task body, `stress.evaluate.shards.stress_shard`, runs on the first --images
test images of the run folder under every corruption at --severity and every shift, for both trained
models, once eager and once with `compile=True` (what `--compile on`, or `auto` on a full-size CPU
run, does), in each precision. Same images, same corruption draws. Reported per precision: cells
compared, images whose correct/wrong flag differs, the largest change of the confidence (top-1
softmax probability) and of the per-image NLL, and the mean corruption accuracy both ways. One thread,
a cold inductor cache in a temporary folder, as on a fresh node.

The Fourier stage's task body, `stress.evaluate.shards.fourier_shard`, runs the same way over every
frequency of the heat map on the first --fourier-images of the run's heat-map images (0: not
compared): reported are the (frequency, image, model) evaluations whose correct/wrong flag differs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np
import torch

from stress.artifacts import load_torch
from stress.config import model_names
from stress.constants import CORRUPTIONS
from stress.driver.fourier_stage import heat_map_images
from stress.evaluate.shards import fourier_shard, stress_shard
from stress.perturb.fourier import frequencies
from stress.perturb.shifts import list_shifts


def compare(eager: dict, compiled: dict, corruption_cells: list[str]) -> dict:
    flips = sum(int((eager[c]["correct"] != compiled[c]["correct"]).sum()) for c in eager)
    return {
        "cells": len(eager),
        "evaluations": sum(len(eager[c]["correct"]) for c in eager),
        "flag_changes": flips,
        "max_confidence_change": max(float(np.abs(eager[c]["confidence"] - compiled[c]["confidence"]).max()) for c in eager),
        "max_nll_change": max(float(np.abs(eager[c]["nll"] - compiled[c]["nll"]).max()) for c in eager),
        "mean_corruption_acc": {side: float(np.mean([r[c]["correct"].mean() for c in corruption_cells]))
                                for side, r in (("eager", eager), ("compiled", compiled))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished run folder (variants/*/model.pt, config.json)")
    parser.add_argument("--data", help="the run's data source, if it moved (default: the one in config.json)")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--fourier-images", type=int, default=200, help="heat-map images for the Fourier comparison; 0 = none [200]")
    parser.add_argument("--precision", default="fp32,bf16")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    config, splits = common.load_run(run, args.data)
    n = min(args.images, len(splits.test_y))
    weights = {v: load_torch(run / "variants" / v / "model.pt")["model"] for v in model_names(config)}
    perturbations = [(c, args.severity) for c in CORRUPTIONS] + [(s, 0) for s in list_shifts()]
    corruption_cells = [f"{v}|{c}|{args.severity}" for v in weights for c in CORRUPTIONS]
    out: dict = {"machine": common.machine_info(), "run": str(run), "images": n, "severity": args.severity, "results": {}}
    for precision in args.precision.split(","):
        results, seconds = {}, {}
        with tempfile.TemporaryDirectory() as cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # cold, as on a fresh node
            for compiled in (False, True):
                started = time.perf_counter()
                results[compiled] = stress_shard(weights, config.to_dict()["model"], splits.test_x, splits.test_y, 0, n,
                                                 perturbations, seed=config.train.seed, precision=precision, compile=compiled)
                results[compiled].pop("precision")  # what the task resolved: not a cell
                seconds["compiled" if compiled else "eager"] = time.perf_counter() - started
        row = {**compare(results[False], results[True], corruption_cells), "seconds": seconds}
        if args.fourier_images:
            chosen = heat_map_images(len(splits.test_y), min(args.fourier_images, config.stress.fourier_images), config.train.seed)
            freqs = frequencies(*splits.test_x.shape[-2:])
            with tempfile.TemporaryDirectory() as cache:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
                heat = {c: fourier_shard(weights, config.to_dict()["model"], splits.test_x[chosen], splits.test_y[chosen], 0, len(chosen),
                                         freqs, seed=config.train.seed, norm=config.stress.fourier_norm, precision=precision, compile=c)
                        for c in (False, True)}
                for result in heat.values():
                    result.pop("precision")  # not a model's flags
            row["fourier"] = {"images": len(chosen), "frequencies": len(freqs),
                              "evaluations": sum(int(a.size) for a in heat[False].values()),
                              "flag_changes": sum(int((heat[False][v] != heat[True][v]).sum()) for v in heat[False])}
        out["results"][precision] = row
        print(f"[{precision}] {row['cells']} cells, {row['evaluations']:,} image evaluations: {row['flag_changes']} correct/wrong "
              f"flags differ; largest confidence change {row['max_confidence_change']:.2e}, NLL {row['max_nll_change']:.2e}; "
              f"mean corruption accuracy eager {row['mean_corruption_acc']['eager']:.4f}, compiled "
              f"{row['mean_corruption_acc']['compiled']:.4f}; eager {seconds['eager']:.0f} s, compiled {seconds['compiled']:.0f} s "
              "(compile included)", flush=True)
        if "fourier" in row:
            f = row["fourier"]
            print(f"[{precision}] Fourier: {f['frequencies']} frequencies x {f['images']} images x {len(weights)} models = "
                  f"{f['evaluations']:,} evaluations: {f['flag_changes']} correct/wrong flags differ", flush=True)
    if args.out:
        common.write_json(args.out, out)


if __name__ == "__main__":
    sys.exit(main())
