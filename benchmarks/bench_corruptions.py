"""Throughput of the batched corruptions vs the per-image numpy/scipy/PIL reference (run by hand).

    .venv/bin/python benchmarks/bench_corruptions.py --images 300 --out benchmarks/results/corruptions.json

Both sides get the same images, severity and pre-drawn noise, and the speed-up compares the
transforms alone (`apply_corruption` + uint8 rounding vs the per-image loop). The batched
end-to-end time (`corrupt`, random draws included) is reported as well. Times are process CPU
seconds (best of a few runs) with one torch thread: the 2-core machine is shared, and CPU time
is far less disturbed by other processes than wall time.
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

from reference_corruptions import reference_corrupt  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the batched side")
    parser.add_argument("--repeats", type=int, default=3, help="batched timing repeats (best is kept)")
    parser.add_argument("--only", nargs="*", default=None, help="subset of corruptions")
    parser.add_argument("--out", default="benchmarks/results/corruptions.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    images = synthetic_images(args.images, seed=0)
    images_hwc = images.permute(0, 2, 3, 1).numpy()
    corrupt(images[:2], "jpeg_compression", 1)  # load torchvision's codecs before timing
    rows = []
    print(f"{'corruption':<20}{'batched img/s':>15}{'end-to-end img/s':>18}{'reference img/s':>17}{'speed-up':>10}")
    for name in args.only or CORRUPTIONS:
        x = images.float() / 255
        draws = draw_corruption_noise(x, name, args.severity, make_generator(0, x.device))
        draws_np = {key: value.numpy() for key, value in draws.items()}
        def transform() -> torch.Tensor:
            return torch.round(apply_corruption(x, name, args.severity, draws).clamp(0, 1) * 255).to(torch.uint8)

        batched_s = time_call(transform, args.repeats)
        end_to_end_s = time_call(lambda: corrupt(images, name, args.severity, seed=0), args.repeats)
        reference_s = time_call(lambda: reference_corrupt(images_hwc, name, args.severity, draws_np), 1)
        row = {"corruption": name, "severity": args.severity, "images": args.images,
               "batched_images_per_s": args.images / batched_s,
               "batched_end_to_end_images_per_s": args.images / end_to_end_s, "reference_images_per_s": args.images / reference_s,
               "speedup": reference_s / batched_s}
        rows.append(row)
        print(f"{name:<20}{row['batched_images_per_s']:>15.0f}{row['batched_end_to_end_images_per_s']:>18.0f}"
              f"{row['reference_images_per_s']:>17.0f}{row['speedup']:>9.1f}x")
    speedups = [row["speedup"] for row in rows]
    print(f"geometric-mean speed-up: {float(np.exp(np.mean(np.log(speedups)))):.1f}x, minimum {min(speedups):.1f}x")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"threads": args.threads, "torch": torch.__version__, "timer": "process_time", "results": rows}
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
