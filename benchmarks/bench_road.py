"""ROAD's imputation with the shifted-slice neighbour sum against the same with a one-channel F.conv2d (run by hand).

    .venv/bin/python benchmarks/bench_road.py [--images 100] [--rounds 3]

`stress.analyses.faithfulness.impute` solves the neighbour-mean systems by conjugate gradients; each
iteration applies the 3x3 neighbour sum. Subject: the module as it is (`neighbour_sum` as shifted
slices of one padded copy). Reference: the same `road_curves` call with `neighbour_sum` replaced, for
the reference's rounds only, by `F.conv2d` with the 3x3 kernel and zero padding. Work: `road_curves`
of SimpleCNN on normalised CIFAR-10 test images (or synthetic ones without the file), one Grad-CAM map
and one structure-matched random map, 9 removal fractions, both directions: 36 imputations. Timer:
CPU seconds with one thread, interleaved rounds. Also reported: the conjugate-gradient iterations
each way, and the largest difference between the two sides' AUCs.
"""

from __future__ import annotations

import argparse

import common
import torch
import torch.nn.functional as F

from stress.analyses import faithfulness
from stress.analyses.faithfulness import DIAGONAL, DIRECT, road_curves, structured_random_maps
from stress.analyses.gradcam import cam_resolution, gradcam
from stress.augment import CIFAR10_STATS, normalize
from stress.config import ModelConfig
from stress.models import create_model

KERNEL = torch.tensor([[DIAGONAL, DIRECT, DIAGONAL], [DIRECT, 0.0, DIRECT], [DIAGONAL, DIRECT, DIAGONAL]]).view(1, 1, 3, 3)


def conv_neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, KERNEL.to(x.device, x.dtype), padding=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default=str(common.DEFAULT_DATA))
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = common.load_images(args.data, 0, args.images)
    torch.manual_seed(0)
    model = create_model(ModelConfig()).eval()
    images = normalize(torch.as_tensor(data["test_x"]), CIFAR10_STATS)
    targets = model(images).argmax(1)
    maps = {"road": gradcam(model, images, targets),
            "road_random": structured_random_maps(len(images), cam_resolution(model, images, None), (32, 32), torch.Generator().manual_seed(1))}
    stencil = faithfulness.neighbour_sum
    calls = {"slices": 0, "conv2d": 0}
    results = {}

    def run(name: str, function):
        def call():
            def counted(x):
                calls[name] += 1
                return function(x)

            faithfulness.neighbour_sum = counted
            try:
                results[name] = road_curves(model, images, maps, targets, generator=torch.Generator().manual_seed(2))
            finally:
                faithfulness.neighbour_sum = stencil
        return call

    samples = common.interleave({"slices": run("slices", stencil), "conv2d": run("conv2d", conv_neighbour_sum)}, args.rounds, log=print)
    ratios = common.round_ratios(samples, "slices", "conv2d", "cpu")
    difference = max(float((results["slices"][k] - results["conv2d"][k]).abs().max()) for k in results["slices"] if k.endswith("_auc"))
    per_call = {k: v / (args.rounds + 1) for k, v in calls.items()}  # warm-up + rounds
    machine = common.machine_info()
    print(f"CPU: {machine['cpu_model']}; road_curves on {args.images} images (36 imputations):")
    for name in samples:
        print(f"  {name}: {common.median([s['cpu'] for s in samples[name]]):.2f} CPU s per call, "
              f"{per_call[name]:.0f} neighbour sums per call")
    print(f"  conv2d / slices: {common.median(ratios):.2f}x (rounds {', '.join(f'{r:.2f}' for r in ratios)}); "
          f"largest AUC difference {difference:.1e}")
    if args.out:
        common.write_json(args.out, {"machine": machine, "images": args.images, "ratio": common.median(ratios), "ratios": ratios,
                                     "neighbour_sums_per_call": per_call, "largest_auc_difference": difference,
                                     "cpu_s": {k: common.median([s["cpu"] for s in v]) for k, v in samples.items()}})


if __name__ == "__main__":
    main()
