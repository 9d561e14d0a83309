"""ROAD's imputation against two references: the neighbour sum as a one-channel F.conv2d, and a solve that keeps its converged rows (run by hand).

    .venv/bin/python benchmarks/bench_road.py [--images 100] [--rounds 3]

`stress.analyses.faithfulness.impute` solves the neighbour-mean systems by conjugate gradients; each
iteration applies the 3x3 neighbour sum. Subject: the module as it is (`neighbour_sum` as shifted
slices of one padded copy). Reference: the same `road_curves` call with `neighbour_sum` replaced, for
the reference's rounds only, by `F.conv2d` with the 3x3 kernel and zero padding. Second reference
(`every_row`): the module as it is with `COMPACT_BELOW = 0`, so that the conjugate-gradient batch keeps
the rows that have converged to the end, as the solve did before it dropped them. Work: `road_curves`
of SimpleCNN on normalised CIFAR-10 test images (or synthetic ones without the file), one Grad-CAM map
and one structure-matched random map, 9 removal fractions, both directions: 36 imputations. Timer:
CPU seconds with one thread, interleaved rounds. Also reported: the conjugate-gradient iterations and
the rows they were paid for, each way, and the largest difference between each reference's AUCs and the
subject's (0 for `every_row`: the rows' arithmetic does not depend on their batch).
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
    compact_below = faithfulness.COMPACT_BELOW
    calls = {"slices": 0, "conv2d": 0, "every_row": 0}
    rows = dict.fromkeys(calls, 0)
    results = {}

    def run(name: str, function, compact: float):
        def call():
            def counted(x):
                calls[name] += 1
                rows[name] += x.shape[0]
                return function(x)

            faithfulness.neighbour_sum, faithfulness.COMPACT_BELOW = counted, compact
            try:
                results[name] = road_curves(model, images, maps, targets, generator=torch.Generator().manual_seed(2))
            finally:
                faithfulness.neighbour_sum, faithfulness.COMPACT_BELOW = stencil, compact_below
        return call

    samples = common.interleave({"slices": run("slices", stencil, compact_below), "conv2d": run("conv2d", conv_neighbour_sum, compact_below),
                                 "every_row": run("every_row", stencil, 0.0)}, args.rounds, log=print)
    ratios = {reference: common.round_ratios(samples, "slices", reference, "cpu") for reference in ("conv2d", "every_row")}
    difference = {reference: max(float((results["slices"][k] - results[reference][k]).abs().max()) for k in results["slices"] if k.endswith("_auc"))
                  for reference in ratios}
    per_call = {k: v / (args.rounds + 1) for k, v in calls.items()}  # warm-up + rounds
    rows_per_call = {k: v / (args.rounds + 1) for k, v in rows.items()}
    machine = common.machine_info()
    print(f"CPU: {machine['cpu_model']}; road_curves on {args.images} images (36 imputations):")
    for name in samples:
        print(f"  {name}: {common.median([s['cpu'] for s in samples[name]]):.2f} CPU s per call, "
              f"{per_call[name]:.0f} neighbour sums per call over {rows_per_call[name]:,.0f} rows")
    for reference, values in ratios.items():
        print(f"  {reference} / slices: {common.median(values):.2f}x (rounds {', '.join(f'{r:.2f}' for r in values)}); "
              f"largest AUC difference {difference[reference]:.1e}")
    if args.out:
        common.write_json(args.out, {"machine": machine, "images": args.images, "ratio": common.median(ratios["conv2d"]),
                                     "ratios": ratios["conv2d"], "every_row_ratio": common.median(ratios["every_row"]),
                                     "every_row_ratios": ratios["every_row"], "neighbour_sums_per_call": per_call,
                                     "rows_per_call": rows_per_call, "largest_auc_difference": difference["conv2d"],
                                     "every_row_largest_auc_difference": difference["every_row"],
                                     "cpu_s": {k: common.median([s["cpu"] for s in v]) for k, v in samples.items()}})

if __name__ == "__main__":
    main()
