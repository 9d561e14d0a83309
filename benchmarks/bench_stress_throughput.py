"""The stress stage's inference throughput against the forward-pass limit of the same model (run by hand).

    .venv/bin/python benchmarks/bench_stress_throughput.py --out benchmarks/results/stress_throughput.json
    .venv/bin/python benchmarks/bench_stress_throughput.py --quick

Subject: one fan-out task of the stress stage, `stress.evaluate.shards.stress_shard`, on --images
test images for every corruption at severity 3 and every shift, both models (what one task
of the stage does, on one thread, as a task gets one CPU). Throughput = model evaluations per
second: images x perturbations x 2 models / wall time.

Reference, measured in the same rounds (interleaved, median of per-round ratios): the pure
forward passes of the same models on the same images, in the same calls (one per perturbation
and model, batches of 500), precision and memory layout (`predict_logits` on the clean uint8
tensor). The ratio
subject / reference is the share of the forward-pass limit the stage reaches (target >= 0.8).

Also reported, as a share of the subject's wall time: the time spent making the perturbed
images (the same corrupt/shift calls, without the forward passes), which is the gap to the
limit.
"""

from __future__ import annotations

import argparse
import sys

import common
import numpy as np
import torch

from stress.config import ModelConfig
from stress.constants import CORRUPTIONS
from stress.augment import CIFAR10_STATS
from stress.evaluate.predict import predict_logits
from stress.evaluate.shards import corruption_seed, load_model, stress_shard
from stress.models import create_model
from stress.perturb.corruptions import corrupt
from stress.perturb.shifts import apply_shift, list_shifts

BATCH = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(common.DEFAULT_DATA), help="CIFAR-10 .npz, or 'synthetic'")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--precision", default="fp32,bf16", help="comma-separated precisions to measure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="300 images, 6 corruptions, 1 round")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = 300 if args.quick else args.images
    images = common.load_images(args.data, 0, n)["test_x"]
    labels = np.zeros(n, dtype=np.int64)
    corruptions = list(CORRUPTIONS)[:6] if args.quick else list(CORRUPTIONS)
    perturbations = [(c, 3) for c in corruptions] + [(s, 0) for s in list_shifts()]
    rounds = 1 if args.quick else args.rounds
    torch.manual_seed(0)
    config = ModelConfig()
    weights = {v: create_model(config).state_dict() for v in ("baseline", "augmented")}
    model_config = {**config.__dict__, "widths": list(config.widths)}
    evaluations = n * len(perturbations) * 2
    out = {"machine": common.machine_info(), "images": n, "perturbations": len(perturbations), "batch": BATCH, "results": {}}
    print(f"{n} images x {len(perturbations)} perturbations x 2 models = {evaluations} evaluations per round; "
          f"CPU {out['machine'].get('cpu_model')}")
    x = torch.from_numpy(images)

    def perturb_only() -> None:
        for name, severity in perturbations:
            if severity == 0:
                apply_shift(x, name)
            else:
                for i in range(0, n, BATCH):
                    corrupt(x[i : i + BATCH], name, severity, corruption_seed(0, name, severity, i))

    rows = []
    for precision in args.precision.split(","):
        models = [load_model(w, model_config, torch.device("cpu")) for w in weights.values()]

        def stage() -> None:
            stress_shard(weights, model_config, images, labels, 0, n, perturbations, seed=0, batch_size=BATCH, precision=precision)

        def forward_limit() -> None:
            # The same calls the task makes (one per perturbation and model, batches of BATCH), on clean images.
            for _ in perturbations:
                for model in models:
                    predict_logits(model, x, BATCH, precision, stats=CIFAR10_STATS)

        subjects = {"stage": stage, "forward": forward_limit, "perturb": perturb_only}
        samples = common.interleave(subjects, rounds, warmup=not args.quick, log=print)
        ratio = common.summarise_ratio(common.round_ratios(samples, "stage", "forward", "wall"))
        perturb_share = common.median([p["wall"] / s["wall"] for p, s in zip(samples["perturb"], samples["stage"])])
        stage_wall, forward_wall = common.median([s["wall"] for s in samples["stage"]]), common.median([s["wall"] for s in samples["forward"]])
        result = {"stage_evaluations_per_s": evaluations / stage_wall, "forward_evaluations_per_s": evaluations / forward_wall,
                  "stage_over_forward_limit": ratio, "perturbation_share_of_stage": perturb_share, "samples": samples}
        out["results"][precision] = result
        rows.append({"precision": precision, "stage": result["stage_evaluations_per_s"], "limit": result["forward_evaluations_per_s"],
                     "ratio": ratio["median"], "perturb": perturb_share})
    common.print_table(rows, [("precision", "precision", ""), ("stage", "stage eval/s", ".0f"), ("limit", "forward limit eval/s", ".0f"),
                              ("ratio", "stage / limit", ".3f"), ("perturb", "perturbing share", ".2f")])
    if args.out:
        common.write_json(args.out, out)


if __name__ == "__main__":
    sys.exit(main())
