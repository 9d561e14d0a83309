"""Corruption generation throughput: batched `stress.corruptions` vs per-image numpy (run by hand).

    .venv/bin/python benchmarks/bench_corruptions.py --images 300 --out benchmarks/results/corruptions.json

Primary figure, per corruption and for the whole suite: end-to-end generation, uint8 images in,
uint8 corrupted images out, randomness included. The batched side is `corrupt` (one call per
batch); the reference is `reference_generate`, imagecorruptions-style code that loops over images,
draws each image's noise from numpy's global generator, applies the published formula with
numpy/scipy/PIL and rounds to uint8. The suite speed-up is the reference's total time over all
corruptions divided by the batched total (what generating the whole stress suite costs).

Secondary figure: the transforms alone on identical pre-drawn noise (`apply_corruption` vs
`reference_corrupt`), which isolates the arithmetic from the random number generators.

Times are process CPU seconds (best of a few runs) with one torch thread: the 2-core machine is
shared, and CPU time is far less disturbed by other processes than wall time. The reference is
single-threaded numpy, so one torch thread compares like with like.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from reference_corruptions import reference_corrupt, reference_generate  # noqa: E402

from stress.corruptions import (  # noqa: E402
    CORRUPTIONS, apply_corruption, corrupt, draw_corruption_noise, make_generator,
)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the batched side")
    parser.add_argument("--repeats", type=int, default=3, help="batched timing repeats (best is kept)")
    parser.add_argument("--reference-repeats", type=int, default=1, help="reference timing repeats (best is kept)")
    parser.add_argument("--only", nargs="*", default=None, help="subset of corruptions")
    parser.add_argument("--out", default="benchmarks/results/corruptions.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    images = synthetic_images(args.images, seed=0)
    images_hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    corrupt(images[:2], "jpeg_compression", 1)  # load torchvision's codecs before timing
    rows = []
    print(f"{'corruption':<19}{'batched img/s':>14}{'reference img/s':>16}{'speed-up':>9}"
          f"{'| transform only:':>18}{'batched':>9}{'reference':>10}{'speed-up':>9}")
    for name in args.only or CORRUPTIONS:
        batched_s = time_call(lambda: corrupt(images, name, args.severity, seed=0), args.repeats)
        reference_s = time_call(lambda: reference_generate(images_hwc, name, args.severity, seed=0), args.reference_repeats)
        x = images.float() / 255
        draws = draw_corruption_noise(x, name, args.severity, make_generator(0, x.device))
        draws_np = {key: value.numpy() for key, value in draws.items()}

        def transform() -> torch.Tensor:
            return torch.round(apply_corruption(x, name, args.severity, draws).clamp(0, 1) * 255).to(torch.uint8)

        transform_s = time_call(transform, args.repeats)
        reference_transform_s = time_call(lambda: reference_corrupt(images_hwc, name, args.severity, draws_np),
                                          args.reference_repeats)
        row = {"corruption": name, "severity": args.severity, "images": args.images,
               "batched_seconds": batched_s, "reference_seconds": reference_s,
               "batched_images_per_s": args.images / batched_s, "reference_images_per_s": args.images / reference_s,
               "speedup": reference_s / batched_s,
               "transform_batched_images_per_s": args.images / transform_s,
               "transform_reference_images_per_s": args.images / reference_transform_s,
               "transform_speedup": reference_transform_s / transform_s}
        rows.append(row)
        print(f"{name:<19}{row['batched_images_per_s']:>14.0f}{row['reference_images_per_s']:>16.0f}{row['speedup']:>8.1f}x"
              f"{'|':>18}{row['transform_batched_images_per_s']:>9.0f}{row['transform_reference_images_per_s']:>10.0f}"
              f"{row['transform_speedup']:>8.1f}x")
    batched_total = sum(row["batched_seconds"] for row in rows)
    reference_total = sum(row["reference_seconds"] for row in rows)
    suite = {"corruptions": len(rows), "images": args.images,
             "batched_images_per_s": args.images * len(rows) / batched_total,
             "reference_images_per_s": args.images * len(rows) / reference_total,
             "speedup": reference_total / batched_total,
             "geometric_mean_speedup": geometric_mean([row["speedup"] for row in rows]),
             "minimum_speedup": min(row["speedup"] for row in rows),
             "transform_geometric_mean_speedup": geometric_mean([row["transform_speedup"] for row in rows])}
    print(f"suite ({len(rows)} corruptions, severity {args.severity}): batched {suite['batched_images_per_s']:.0f} img/s, "
          f"reference {suite['reference_images_per_s']:.0f} img/s, speed-up {suite['speedup']:.1f}x "
          f"(per corruption: geometric mean {suite['geometric_mean_speedup']:.1f}x, minimum {suite['minimum_speedup']:.1f}x)")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"threads": args.threads, "torch": torch.__version__, "timer": "process_time", "suite": suite, "results": rows}
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
