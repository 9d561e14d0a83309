"""Throughput of our batched PGD against torchattacks' PGD on the same model, images and settings.

    .venv/bin/python benchmarks/bench_pgd.py --out benchmarks/results/pgd.json

Reference: `torchattacks.PGD` (L-inf 8/255, `--steps` steps of 2.5 eps / steps, random start)
on the SimpleCNN wrapped to take [0, 1] pixels. Subject: `stress.perturb.pgd.pgd` with the same
settings on the 0..255 scale, from per-image random starts (stress.evaluate.probe_shards.starts),
which also tracks the first iterate that fooled each image. Both attack the same `--images`
test images in batches of `--batch-size`, in this process on one torch thread, interleaved; the
figure is the subject's attacked images per CPU second over the reference's, median over
rounds (1.0 = as fast as torchattacks). It also prints what the attack stage's PGD (6 attacks x
1,000 images x 2 models) costs at the measured rate.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the repo on sys.path)
import torch  # noqa: E402

from stress.augment import CIFAR10_STATS  # noqa: E402
from stress.config import ModelConfig  # noqa: E402
from stress.evaluate.probe_shards import PixelModel, starts  # noqa: E402
from stress.models import create_model  # noqa: E402
from stress.perturb.pgd import pgd  # noqa: E402

EPS = 8 / 255


def main() -> int:
    import torchattacks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(common.DEFAULT_DATA), help="a .npz with test images, or synthetic [the CIFAR-10 copy]")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = common.load_images(args.data, 0, args.images)
    x, y = torch.tensor(data["test_x"]), torch.tensor(data["test_y"])
    torch.manual_seed(0)
    model = create_model(ModelConfig()).to(memory_format=torch.channels_last).eval()
    ours, theirs = PixelModel(model, CIFAR10_STATS, scale=1.0), PixelModel(model, CIFAR10_STATS)
    reference_attack = torchattacks.PGD(theirs, eps=EPS, alpha=2.5 * EPS / args.steps, steps=args.steps, random_start=True)
    batches = [(x[i : i + args.batch_size], y[i : i + args.batch_size], i) for i in range(0, len(x), args.batch_size)]

    def reference() -> None:
        for images, labels, _ in batches:
            reference_attack(images.float() / 255.0, labels)

    def subject() -> None:
        for images, labels, first in batches:
            pgd(ours, images, labels, "linf", EPS, args.steps, start=starts(tuple(images.shape), "linf", EPS, 42, "linf_8/255", first))

    samples = common.interleave({"torchattacks": reference, "stress": subject}, args.rounds, warmup=True, log=print)
    ratios = common.round_ratios(samples, "stress", "torchattacks", "cpu")
    rate = len(x) / common.median([s["cpu"] for s in samples["stress"]])
    stage_cpu_seconds = 6 * 1000 * 2 / rate
    result = {"machine": common.machine_info(), "data": data["source"], "images": len(x), "steps": args.steps, "batch_size": args.batch_size,
              "samples": samples, "ratio_cpu": common.summarise_ratio(ratios), "stress_images_per_cpu_second": rate,
              "attack_stage_pgd_cpu_seconds": stage_cpu_seconds, "target": "at least 0.9 of torchattacks' throughput"}
    print(f"{common.cpu_model()}: stress PGD / torchattacks PGD, attacked images per CPU second (one thread, batch {args.batch_size}, "
          f"L-inf 8/255, {args.steps} steps, {len(x)} images): {result['ratio_cpu']['median']:.3f} "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}); ours {rate:,.1f} img/s; the attack stage's PGD (6 x 1,000 x 2) at "
          f"this rate: {stage_cpu_seconds:,.0f} CPU s")
    if args.out:
        common.write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
