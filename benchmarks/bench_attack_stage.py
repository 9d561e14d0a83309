"""The attack stage's work on a finished run's weights: wall time of its tasks run at once (run by hand).

    .venv/bin/python benchmarks/bench_attack_stage.py --run /work/runs/default_pub --tasks 2
    .venv/bin/python benchmarks/bench_attack_stage.py --run RUN --export images.npz   # the stage's images, ~3 MB
    python benchmarks/bench_attack_stage.py --run RUN --images images.npz --device cuda --tasks 4

The attack stage (stress.driver.probe_stages.attack_stage) runs `attack_shard` (PGD at six radii,
20 steps, and AutoAttack) on the run's chosen test images (1,000 by default) for every model, in
tasks over contiguous slices. This script runs the same `attack_shard` calls on the same images and
weights in `--tasks` processes started together (one slice each, as the stage's tasks are), without
Ray, and reports the wall time from start to the last one's end and each process's own seconds.

Why it exists: the cost of AutoAttack depends on the models. Against CIFAR-10 models trained without
adversarial training, APGD-CE fools nearly every image and the rest of AutoAttack runs on almost
none; against models that stay robust (the synthetic set's, for example) APGD-T, FAB-T and Square
run on most images and cost many times more. A GPU machine that cannot receive CIFAR-10 can still
receive a run's two weight files and the stage's 1,000 images (`--export`), so the attack stage can
be measured there on real CIFAR-10 models.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common


def _task(arguments: dict) -> dict:
    import torch

    from stress.evaluate.probe_shards import attack_shard

    torch.set_num_threads(1)  # as in a 1-CPU Ray task
    data = np.load(arguments["images"])
    weights = torch.load(arguments["weights"], map_location="cpu", weights_only=True)
    started = time.perf_counter()
    out = attack_shard(weights, arguments["model_config"], data["images"], data["labels"], arguments["start"], arguments["stop"],
                       arguments["attacks"], steps=arguments["steps"], seed=arguments["seed"], autoattack=True,
                       device=arguments["device"], precision=arguments["precision"])
    seconds = time.perf_counter() - started
    flags = {k: v for k, v in out.items() if "|" in k and not k.endswith(("flip", "cam_adversarial", "cam_random", "cam_same_class"))}
    return {"seconds": seconds, "start": arguments["start"], "stop": arguments["stop"],
            "fractions": {k: float(np.mean(v)) for k, v in flags.items()}, "flags": {k: v.astype(bool) for k, v in flags.items()}}


def robust(key: str, flags: np.ndarray) -> np.ndarray:
    """1 where the image stays correctly classified: "v|clean" and "v|autoattack" hold that already, a PGD key holds "fooled".

    Per attack: the stage's record takes, at each eps, the images no attack of that norm up to eps fooled; on the
    default run's models both gave the same robust accuracies."""
    return flags if key.endswith(("|clean", "|autoattack")) else ~flags


def compare(reference: dict[str, np.ndarray], subject: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per key, the subject's robust accuracy minus the reference's over the same images (Newcombe's paired 95%
    interval, McNemar's exact p) and the share of images whose outcome agrees."""
    from stress.analyses.stats import paired_proportion_difference

    rows = {}
    for key in reference:
        a, b = robust(key, reference[key]), robust(key, subject[key])
        d = paired_proportion_difference(a.astype(float), b.astype(float))
        rows[key] = {"reference": float(a.mean()), "subject": float(b.mean()), "difference": d["mean"], "low": d["low"],
                     "high": d["high"], "p": d["p"], "agreement": float((a == b).mean()), "n": d["n"]}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished run folder (config.json, variants/*/model.pt)")
    parser.add_argument("--data", default=str(common.DEFAULT_DATA), help="the run's dataset (.npz), to pick the stage's images")
    parser.add_argument("--images", help="the stage's images, from --export (instead of --data)")
    parser.add_argument("--export", help="write the stage's images and labels to this .npz and stop")
    parser.add_argument("--tasks", type=int, default=2, help="processes at once, one slice each")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="fp32",
                        help="comma-separated precisions of the attacks' passes, each timed in turn (fp32, bf16, auto); "
                             "with two or more, every one is compared image by image against the first [fp32]")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    from stress.config import ExperimentConfig
    from stress.driver.fanout import shard_bounds
    from stress.driver.probe_stages import subset
    from stress.driver.stages import load_weights
    from stress.perturb.pgd import ATTACKS
    from stress.artifacts import RunFolder

    run_path = Path(args.run)
    if not (run_path / "config.json").is_file():
        sys.exit(f"{run_path}: not a run folder (no config.json)")
    config = ExperimentConfig.from_dict(json.loads((run_path / "config.json").read_text()))
    model_config = config.to_dict()["model"]
    keep = tempfile.TemporaryDirectory(prefix="stress_bench_attack_")
    scratch = Path(keep.name)
    if args.images:
        images_path = Path(args.images)
    else:
        from stress.data import load_dataset, split_dataset

        data_config = dataclasses.replace(config.data, source=args.data)
        splits = split_dataset(load_dataset(data_config), data_config, config.train.seed)
        chosen = subset(len(splits.test_y), config.stress.adversarial_images, config.train.seed, 0xAD)
        images_path = Path(args.export) if args.export else scratch / "images.npz"
        np.savez(images_path, images=splits.test_x[chosen], labels=splits.test_y[chosen], indices=chosen)
        if args.export:
            print(f"wrote {images_path} ({len(chosen)} images)")
            return
    import torch

    weights = load_weights(RunFolder(run_path), model_config, ("baseline", "augmented"))
    weights_path = scratch / "weights.pt"
    torch.save(weights, weights_path)
    n = len(np.load(images_path)["labels"])
    attacks = [(a.norm, a.eps) for a in ATTACKS]
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    from stress.precision import PRECISIONS, resolve_precision

    if not precisions or any(p not in PRECISIONS for p in precisions):
        sys.exit(f"--precision: choose from {', '.join(PRECISIONS)}, got {args.precision!r}")
    machine = {**common.machine_info(), "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None}
    measured = {}
    for precision in precisions:
        jobs = [{"images": str(images_path), "weights": str(weights_path), "model_config": model_config, "start": a, "stop": b,
                 "attacks": attacks, "steps": config.stress.pgd_steps, "seed": config.train.seed, "device": args.device,
                 "precision": precision}
                for a, b in shard_bounds(n, args.tasks)]
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
            results = pool.map(_task, jobs)
        wall = time.perf_counter() - started
        # Per key, the share of images: fooled by each PGD attack, correct clean ("clean") or after AutoAttack ("autoattack").
        fractions = {k: float(np.average([r["fractions"][k] for r in results], weights=[r["stop"] - r["start"] for r in results]))
                     for k in results[0]["fractions"]}
        flags = {k: np.concatenate([r["flags"][k] for r in results]) for k in results[0]["flags"]}
        each = ", ".join(f"{r['seconds']:.1f}" for r in results)
        resolved = resolve_precision(precision, args.device)
        print(f"attack stage's work in {precision} ({resolved}): {n} images x 2 models in {len(jobs)} processes on {args.device}: "
              f"{wall:.1f} s wall (processes {each} s, start-up included in the wall)")
        print("  " + ", ".join(f"{k} {v:.3f}" for k, v in fractions.items()))
        measured[precision] = {"resolved": resolved, "wall_s": wall, "task_seconds": [r["seconds"] for r in results],
                               "fractions": fractions, "flags": flags}
    reference = precisions[0]
    comparisons = {}
    for precision in precisions[1:]:
        rows = compare(measured[reference]["flags"], measured[precision]["flags"])
        comparisons[precision] = {"wall_ratio": measured[reference]["wall_s"] / measured[precision]["wall_s"], "keys": rows}
        print(f"{precision} against {reference}: {comparisons[precision]['wall_ratio']:.2f}x the speed; robust accuracy "
              f"{precision} - {reference} over the same {n} images (Newcombe's paired 95% interval, McNemar's exact p), agreement:")
        for key, r in rows.items():
            print(f"  {key:24s} {r['reference']:.3f} -> {r['subject']:.3f}  {r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"
                  f"  p {r['p']:.3g}  agree {r['agreement']:.3f}")
    if args.out:
        common.write_json(args.out, {"machine": machine, "run": str(run_path), "device": args.device, "images": n,
                                     "tasks": args.tasks, "reference": reference,
                                     "precisions": {p: {k: v for k, v in m.items() if k != "flags"} for p, m in measured.items()},
                                     "comparisons": comparisons})


if __name__ == "__main__":
    sys.exit(main())
