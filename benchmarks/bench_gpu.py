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

`--data synthetic` stands in the project's synthetic set at CIFAR-10's size (50,000 training and
10,000 test images of 32x32, 10 classes) for a GPU machine the CIFAR-10 file cannot be copied to:
the work per epoch and per stage is the same, the accuracies are not CIFAR-10's.
`--device cpu --epochs 2 --train-limit 2000` checks the script itself on a machine without a GPU.
The JSON is rewritten after every measurement, so a run cut short keeps what it measured.
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

# CIFAR-10's size for the synthetic stand-in (stress.data.make_synthetic's arguments).
SYNTHETIC_CIFAR = {"n_train": 50000, "n_test": 10000, "num_classes": 10, "size": 32}

TRAIN_CHILD = r"""
import json, sys, torch
from stress.config import ExperimentConfig, merge
from stress.data import load_dataset, split_dataset
from stress.resolve import resolve
from stress.train import to_device_arrays, train_variant
overrides, variant, device = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
config = merge(ExperimentConfig(), overrides)
splits = split_dataset(load_dataset(config.data), config.data, config.train.seed)
config = resolve(config, splits).config
tensors = to_device_arrays(splits.arrays(), device)
seconds = []
def on_epoch(state, metrics):
    seconds.append(metrics["seconds"])
    print(f"  {variant} epoch {metrics['epoch']}: {metrics['seconds']:.3f} s, val_acc {metrics['val_acc']:.3f}", file=sys.stderr, flush=True)
train_variant(config, variant, tensors, device=device, on_epoch=on_epoch, log=lambda line: None)
print(json.dumps(seconds))
"""


def epoch_seconds(overrides: dict, variants: list[str], device: str) -> dict[str, list[float]]:
    """Train `variants` at once, one process each, on the one device; per-epoch seconds of each."""
    children = {v: subprocess.Popen([sys.executable, "-c", TRAIN_CHILD, json.dumps(overrides), v, device],
                                    stdout=subprocess.PIPE, text=True, cwd=REPO) for v in variants}
    out = {v: p.communicate()[0] for v, p in children.items()}
    for v, p in children.items():
        if p.returncode != 0:
            raise RuntimeError(f"{v} training child exited with {p.returncode}")
    return {v: json.loads(text.strip().splitlines()[-1]) for v, text in out.items()}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(common.DEFAULT_DATA),
                        help="a CIFAR-10 .npz, or synthetic (the synthetic set at CIFAR-10's size)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per training measurement (the first is warm-up)")
    parser.add_argument("--train-limit", type=int, default=0, help="training images (0 = all; for a dry run)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run of the script")
    parser.add_argument("--skip-job", action="store_true", help="only part 1")
    parser.add_argument("--skip-training", action="store_true", help="only parts 2 and 3")
    parser.add_argument("--job-args", default="", help="extra arguments for both jobs (e.g. for a dry run)")
    parser.add_argument("--logs", help="folder for the two jobs' logs")
    parser.add_argument("--out")
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA device; this machine has none")
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    out: dict = {"machine": {**common.machine_info(), "gpu": gpu, "cuda": torch.version.cuda},
                 "data": args.data, "training": {}, "job": {}}

    def save() -> None:
        if args.out:
            common.write_json(args.out, out)

    scratch = tempfile.TemporaryDirectory()
    if args.data == "synthetic":  # generated once (about 15 s), then read by every child and job like a user's .npz
        import numpy as np

        from stress.data import make_synthetic

        args.data = str(Path(scratch.name) / "synthetic_cifar.npz")
        np.savez(args.data, **make_synthetic(**SYNTHETIC_CIFAR))
        out["data"] = "synthetic at CIFAR-10's size (50,000 + 10,000 images, 32x32, 10 classes)"
    base = {"data.source": args.data, "train.epochs": args.epochs, "data.train_limit": args.train_limit}
    for precision in () if args.skip_training else ("fp32", "bf16"):
        overrides = {**base, "train.precision": precision}
        alone = epoch_seconds(overrides, ["baseline"], args.device)["baseline"][1:]
        shared = epoch_seconds(overrides, ["baseline", "augmented"], args.device)
        shared_seconds = [s for v in shared for s in shared[v][1:]]
        row = {"alone_s_per_epoch": common.median(alone), "shared_s_per_epoch": common.median(shared_seconds),
               "alone": alone, "shared": {v: shared[v][1:] for v in shared}}
        row["shared_over_alone"] = row["shared_s_per_epoch"] / row["alone_s_per_epoch"]
        out["training"][precision] = row
        save()
        print(f"[{precision}] epoch: alone {row['alone_s_per_epoch']:.2f} s, two trainers sharing the device "
              f"{row['shared_s_per_epoch']:.2f} s each ({row['shared_over_alone']:.2f}x)", flush=True)
    if not args.skip_job:
        logs = Path(args.logs) if args.logs else None
        if logs:
            logs.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "data.json"
            config.write_text(json.dumps({"data": {"source": args.data}}))
            for precision in ("bf16", "fp32"):
                started = time.perf_counter()
                command = [sys.executable, "jobs/stress_test.py", "--config", str(config), "--precision", precision,
                           "--out", folder, "--run-name", precision, *args.job_args.split()]
                log = open(logs / f"job_{precision}.log", "w") if logs else None
                done = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT if log else None,
                                      env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
                wall = time.perf_counter() - started
                if log:
                    log.close()
                if done.returncode != 0:
                    out["job"][precision] = {"failed": done.returncode, "wall_s": wall}
                    save()
                    print(f"[{precision}] whole default job failed ({done.returncode}) after {wall:.0f} s", flush=True)
                    continue
                manifest = json.loads((Path(folder) / precision / "manifest.json").read_text())
                summary_path = Path(folder) / precision / "summary.json"
                out["job"][precision] = {"wall_s": wall, "stage_seconds": manifest["stage_seconds"],
                                         "summary": json.loads(summary_path.read_text()) if summary_path.exists() else None}
                save()
                print(f"[{precision}] whole default job: {wall:.0f} s; stages " +
                      ", ".join(f"{k} {v:.0f}s" for k, v in manifest["stage_seconds"].items()), flush=True)
        if all("stage_seconds" in out["job"].get(p, {}) for p in ("fp32", "bf16")):
            out["job"]["fp32_over_bf16"] = out["job"]["fp32"]["wall_s"] / out["job"]["bf16"]["wall_s"]
            print(f"whole job fp32 / bf16: {out['job']['fp32_over_bf16']:.2f}x")
    save()


if __name__ == "__main__":
    sys.exit(main())
