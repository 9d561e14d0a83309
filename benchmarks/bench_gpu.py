"""On a CUDA machine: seconds per epoch, the whole default job in fp32 and bf16, the fractional-GPU fan-out (run by hand).

    .venv/bin/python benchmarks/bench_gpu.py --data ../shared/data/cifar10/cifar10.npz --out benchmarks/results/gpu.json
    .venv/bin/python benchmarks/bench_gpu.py --data ... --skip-job      # the training part only (about a minute)

Three parts, each a ratio or a time measured in this run:
1. Training: seconds per SimpleCNN epoch (45,000 images, batch 128) of one trainer alone on the
   GPU, then of two trainers (baseline and augmented) in two processes sharing it, for fp32
   and bf16. Reported: the median epoch seconds and shared / alone.
2. The whole default job (`jobs/stress_test.py`, every default but --precision) in fp32 and
   in bf16, back to back, each into a fresh run folder: wall time, and seconds per stage from
   the run's manifest.json. The fan-out runs with the job's GPU defaults (0.25 GPU per task),
   so the corruption operators, the sparse CSR ones included, run on CUDA.
3. The ratio of the two jobs' wall times (fp32 / bf16).
Targets on an H200: under one second per epoch, the whole default job under three minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

REPO = Path(__file__).resolve().parents[1]

TRAIN_CHILD = r"""
import json, sys, torch
from stress.config import ExperimentConfig, merge
from stress.data import load_dataset, split_dataset
from stress.train import to_device_arrays, train_variant
data, variant, precision, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
config = merge(ExperimentConfig(), {"data.source": data, "train.precision": precision, "train.epochs": epochs})
splits = split_dataset(load_dataset(config.data), config.data, config.train.seed)
tensors = to_device_arrays(splits.arrays(), "cuda")
seconds = []
train_variant(config, variant, tensors, device="cuda", on_epoch=lambda s, m: seconds.append(m["seconds"]), log=lambda line: None)
print(json.dumps(seconds))
"""


def epoch_seconds(data: str, variants: list[str], precision: str, epochs: int) -> dict[str, list[float]]:
    """Train `variants` at once, one process each, on the one GPU; per-epoch seconds of each."""
    children = {v: subprocess.Popen([sys.executable, "-c", TRAIN_CHILD, data, v, precision, str(epochs)],
                                    stdout=subprocess.PIPE, text=True, cwd=REPO) for v in variants}
    return {v: json.loads(p.communicate()[0].strip().splitlines()[-1]) for v, p in children.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(common.DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=4, help="epochs per training measurement (the first is warm-up)")
    parser.add_argument("--skip-job", action="store_true", help="only part 1")
    parser.add_argument("--out")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA device; this machine has none")
    out: dict = {"machine": {**common.machine_info(), "gpu": torch.cuda.get_device_name(0)}, "training": {}, "job": {}}
    for precision in ("fp32", "bf16"):
        alone = epoch_seconds(args.data, ["baseline"], precision, args.epochs)["baseline"][1:]
        shared = epoch_seconds(args.data, ["baseline", "augmented"], precision, args.epochs)
        shared_seconds = [s for v in shared for s in shared[v][1:]]
        row = {"alone_s_per_epoch": common.median(alone), "shared_s_per_epoch": common.median(shared_seconds)}
        row["shared_over_alone"] = row["shared_s_per_epoch"] / row["alone_s_per_epoch"]
        out["training"][precision] = row
        print(f"[{precision}] epoch: alone {row['alone_s_per_epoch']:.2f} s, two trainers sharing the GPU "
              f"{row['shared_s_per_epoch']:.2f} s each ({row['shared_over_alone']:.2f}x)")
    if not args.skip_job:
        with tempfile.TemporaryDirectory() as folder:
            for precision in ("fp32", "bf16"):
                started = time.perf_counter()
                subprocess.run([sys.executable, "jobs/stress_test.py", "--data", args.data, "--precision", precision,
                                "--out", folder, "--run-name", precision], check=True, cwd=REPO,
                               env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
                wall = time.perf_counter() - started
                manifest = json.loads((Path(folder) / precision / "manifest.json").read_text())
                out["job"][precision] = {"wall_s": wall, "stage_seconds": manifest["stage_seconds"]}
                print(f"[{precision}] whole default job: {wall:.0f} s; stages " +
                      ", ".join(f"{k} {v:.0f}s" for k, v in manifest["stage_seconds"].items()))
        out["job"]["fp32_over_bf16"] = out["job"]["fp32"]["wall_s"] / out["job"]["bf16"]["wall_s"]
        print(f"whole job fp32 / bf16: {out['job']['fp32_over_bf16']:.2f}x")
    if args.out:
        common.write_json(args.out, out)


if __name__ == "__main__":
    sys.exit(main())
