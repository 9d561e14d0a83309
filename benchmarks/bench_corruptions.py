"""Corruption generation throughput: batched `stress.perturb.corruptions` vs per-image numpy (run by hand).

    .venv/bin/python benchmarks/bench_corruptions.py [--images 1000] [--batch 500] [--out benchmarks/results/corruptions.json]

Primary figure, per corruption and for the whole suite: end-to-end generation, uint8 images in,
uint8 corrupted images out, randomness included. The batched side is `corrupt` (one call per
batch); the reference is `reference_generate`, imagecorruptions-style code that loops over images,
draws each image's noise from numpy's global generator, applies the published formula with
numpy/scipy/PIL and rounds to uint8. The suite speed-up is the reference's total time over all
corruptions divided by the batched total (what generating the whole stress suite costs).

Secondary figure: the transforms alone on identical pre-drawn noise (`apply_corruption` vs
`reference_corrupt`), which isolates the arithmetic from the random number generators.

Times are process CPU seconds, the best of --repeats runs on each side, with one torch thread: the
2-core machine is shared, and CPU time is far less disturbed by other processes than wall time. The
reference is single-threaded numpy, so one torch thread compares like with like. Every batched run
starts cold: the caches of stress.perturb (sparse operators, Poisson tables, filter weights) are
emptied first, so building them is timed too, once per (corruption, severity) and --images images.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))  # the per-image reference the unit tests use
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from reference_corruptions import reference_corrupt, reference_generate  # noqa: E402

from stress.constants import CORRUPTIONS  # noqa: E402
from stress.perturb import corruptions, kernels  # noqa: E402
from stress.perturb.corruptions import apply_corruption, corrupt, draw_corruption_noise, make_generator  # noqa: E402


def synthetic_images(n: int, seed: int) -> torch.Tensor:
    """Smooth colour fields with light texture, (N, 3, 32, 32) uint8: CIFAR-like statistics."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=32, mode="bicubic", align_corners=False)
    return ((smooth + 0.02 * torch.randn(n, 3, 32, 32, generator=generator)).clamp(0, 1) * 255).round().to(torch.uint8)


def time_call(function, repeats: int) -> float:
    """Best process CPU time of `repeats` calls (the minimum is the least noisy)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        function()
        best = min(best, time.process_time() - start)
    return best


def geometric_mean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def cold(function):
    """`function` preceded by emptying the caches of stress.perturb (kernels, resize and zoom weights,
    sparse operators, Poisson tables), so that every timed call pays for building them."""
    def run():
        for value in [*vars(corruptions).values(), *vars(kernels).values()]:
            if hasattr(value, "cache_clear"):
                value.cache_clear()
        return function()
    return run


def measure(images: torch.Tensor, images_hwc: np.ndarray, name: str, severity: int, args) -> dict:
    """CPU seconds of batched and reference generation (and of the transforms alone) for one (name, severity)."""
    batched_s = time_call(cold(lambda: [corrupt(images[i: i + args.batch], name, severity, seed=i)
                                        for i in range(0, len(images), args.batch)]), args.repeats)
    reference_s = time_call(lambda: reference_generate(images_hwc, name, severity, seed=0), args.repeats)
    x = images.float() / 255
    draws = draw_corruption_noise(x, name, severity, make_generator(0, x.device))
    draws_np = {key: value.numpy() for key, value in draws.items()}

    def transform() -> torch.Tensor:  # uint8 in, uint8 out on both sides
        out = apply_corruption(images.float() / 255, name, severity, draws)
        return torch.round(out.clamp(0, 1) * 255).to(torch.uint8)

    transform_s = time_call(cold(transform), args.repeats)
    reference_transform_s = time_call(
        lambda: np.round(reference_corrupt(images_hwc, name, severity, draws_np)).astype(np.uint8), args.repeats)
    return {"corruption": name, "severity": severity, "images": len(images),
            "batched_seconds": batched_s, "reference_seconds": reference_s,
            "transform_batched_seconds": transform_s, "transform_reference_seconds": reference_transform_s}


def totals(rows: list[dict], images: int) -> dict:
    """Throughputs and speed-ups of a group of rows, from their summed times."""
    batched, reference = sum(r["batched_seconds"] for r in rows), sum(r["reference_seconds"] for r in rows)
    transform = sum(r["transform_batched_seconds"] for r in rows)
    reference_transform = sum(r["transform_reference_seconds"] for r in rows)
    return {"batched_images_per_s": images * len(rows) / batched, "reference_images_per_s": images * len(rows) / reference,
            "speedup": reference / batched, "transform_speedup": reference_transform / transform}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities [1,2,3,4,5]")
    parser.add_argument("--batch", type=int, default=500,
                        help="images per batched call, as stress.evaluate.shards.stress_shard generates them [500]")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the batched side")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats of each side (best is kept) [3]")
    parser.add_argument("--only", nargs="*", default=None, help="subset of corruptions")
    parser.add_argument("--out", default="benchmarks/results/corruptions.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    severities = [int(value) for value in args.severities.split(",")]

    images = synthetic_images(args.images, seed=0)
    images_hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    corrupt(images[:2], "jpeg_compression", 1)  # load torchvision's codecs before timing
    rows, per_corruption = [], {}
    print(f"severities {args.severities}, {args.images} images, batches of {args.batch}, {args.threads} torch thread(s)")
    print(f"{'corruption':<19}{'batched img/s':>14}{'reference img/s':>16}{'speed-up':>9}{'transform only':>16}")
    for name in args.only or CORRUPTIONS:
        group = [measure(images, images_hwc, name, severity, args) for severity in severities]
        rows += group
        per_corruption[name] = totals(group, args.images)
        row = per_corruption[name]
        print(f"{name:<19}{row['batched_images_per_s']:>14.0f}{row['reference_images_per_s']:>16.0f}{row['speedup']:>8.1f}x"
              f"{row['transform_speedup']:>15.1f}x")
    suite = totals(rows, args.images)
    speedups = [row["speedup"] for row in per_corruption.values()]
    suite.update({"corruptions": len(per_corruption), "severities": severities, "images": args.images,
                  "geometric_mean_speedup": geometric_mean(speedups), "minimum_speedup": min(speedups),
                  "corruptions_at_least_10x": sorted(n for n, r in per_corruption.items() if r["speedup"] >= 10)})
    print(f"suite ({len(per_corruption)} corruptions x {len(severities)} severities): batched "
          f"{suite['batched_images_per_s']:.0f} img/s, reference {suite['reference_images_per_s']:.0f} img/s, "
          f"speed-up {suite['speedup']:.1f}x (transforms alone {suite['transform_speedup']:.1f}x); per corruption: "
          f"geometric mean {suite['geometric_mean_speedup']:.1f}x, minimum {suite['minimum_speedup']:.1f}x")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"threads": args.threads, "batch": args.batch, "torch": torch.__version__, "timer": "process_time",
               "suite": suite, "per_corruption": per_corruption, "results": rows}
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
