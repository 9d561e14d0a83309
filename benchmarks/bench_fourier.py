"""Throughput of the Fourier heat map against the plain inference limit of the same models and batch.

    .venv/bin/python benchmarks/bench_fourier.py --out benchmarks/results/fourier.json

Reference: `predict_logits` of both SimpleCNNs (the default architecture; throughput does not
depend on the weights) over the same number of images, already in memory: forward passes
alone. Subject: `fourier_correct` (stress.evaluate.shards), which builds each frequency's basis
image, draws the signs, perturbs and clips the images, and runs the same forward passes, for
`--frequencies` frequencies of the half-plane on `--images` test images. Both run in this
process on one torch thread, interleaved; the figure is the subject's images per CPU second
over the reference's, median over rounds (1.0 = at the inference limit). It also prints what
the default heat map (514 frequencies x 500 images x 2 models) costs at the measured rate.
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
from stress.evaluate.predict import predict_logits  # noqa: E402
from stress.evaluate.shards import fourier_correct  # noqa: E402
from stress.models import create_model  # noqa: E402
from stress.perturb.fourier import frequencies  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(common.DEFAULT_DATA), help="a .npz with test images, or synthetic [the CIFAR-10 copy]")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--frequencies", type=int, default=24, help="frequencies per round (of the 514) [24]")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = common.load_images(args.data, 0, args.images)
    x, y = torch.tensor(data["test_x"]), torch.tensor(data["test_y"])
    torch.manual_seed(0)
    models = {v: create_model(ModelConfig()).to(memory_format=torch.channels_last).eval() for v in ("baseline", "augmented")}
    freqs = frequencies(32, 32)
    chosen = freqs[:: max(1, len(freqs) // args.frequencies)][: args.frequencies]  # spread over the half-plane
    total = len(chosen) * len(x)
    repeated = x.repeat(len(chosen), 1, 1, 1)  # the same number of images, unperturbed, in memory

    def reference() -> None:
        for model in models.values():
            predict_logits(model, repeated, args.batch_size, "fp32", stats=CIFAR10_STATS)

    def subject() -> None:
        fourier_correct(models, x, y, chosen, seed=42, start=0, norm=4.0, batch_size=args.batch_size, stats=CIFAR10_STATS)

    samples = common.interleave({"inference": reference, "fourier": subject}, args.rounds, warmup=True, log=print)
    ratios = common.round_ratios(samples, "fourier", "inference", "cpu")
    reference_rate = total * len(models) / common.median([s["cpu"] for s in samples["inference"]])
    default_cpu_seconds = 514 * 500 * len(models) / (reference_rate * common.median(ratios))
    result = {"machine": common.machine_info(), "data": data["source"], "images": len(x), "frequencies": len(chosen),
              "batch_size": args.batch_size, "samples": samples, "ratio_cpu": common.summarise_ratio(ratios),
              "inference_images_per_cpu_second": reference_rate, "default_heat_map_cpu_seconds": default_cpu_seconds,
              "target": "at least 0.8 of the inference limit"}
    print(f"{common.cpu_model()}: Fourier heat map / plain inference, images per CPU second (one thread, batch {args.batch_size}, "
          f"{len(chosen)} frequencies x {len(x)} images x {len(models)} models): {result['ratio_cpu']['median']:.3f} "
          f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}); inference limit {reference_rate:,.0f} img/s; the default heat map "
          f"(514 x 500 x 2) at this rate: {default_cpu_seconds:,.0f} CPU s")
    if args.out:
        common.write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
