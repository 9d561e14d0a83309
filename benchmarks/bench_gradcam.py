"""Grad-CAM maps/s of `stress.analyses.gradcam.gradcam` vs pytorch-grad-cam's `GradCAM` (run by hand).

    .venv/bin/python -m pip install grad-cam      # pulls no torch; see benchmarks/README.md
    .venv/bin/python benchmarks/bench_gradcam.py --out benchmarks/results/gradcam.json
    .venv/bin/python benchmarks/bench_gradcam.py --quick

Both sides get the same SimpleCNN weights (two copies, so one library's hooks never fire
during the other's calls), the same target layer (`features.relu3`), the same normalised
CIFAR-10 test images, the same batch size and the same targets (the true class,
`ClassifierOutputTarget(label)` for pytorch-grad-cam). pytorch-grad-cam returns each map
min-max normalised to [0, 1] after a cv2 bilinear resize; the timed project side includes
the same min-max normalisation (vectorised), so both produce the same (N, 32, 32) output.

Equality: min-max scaling is affine per image and bilinear resizing is linear and keeps
constants, so pytorch-grad-cam's normalise -> resize -> normalise equals our
resize -> normalise up to rounding and its 1e-7 guard; the largest absolute difference
over all pixels is reported and must stay under --tolerance (default 1e-4).

`--channels-last both|ours` converts the model(s) to the channels_last memory format (see
benchmarks/README.md: on CPU, SimpleCNN's NCHW max-pool dominates the forward pass).

The primary timer is process CPU time with one torch thread (the machine is shared);
the ratio is maps/s of ours / maps/s of pytorch-grad-cam in the same round, median over rounds.
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the repo on sys.path)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from stress.analyses.gradcam import gradcam  # noqa: E402
from stress.augment import normalize  # noqa: E402
from stress.config import ModelConfig  # noqa: E402
from stress.models import GRADCAM_LAYER, create_model  # noqa: E402


def min_max(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> each map scaled to [0, 1]; constant maps become 0 (as pytorch-grad-cam's do)."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


def load_model(weights: str | None, seed: int) -> torch.nn.Module:
    """SimpleCNN with the weights of a run's model.pt, or seeded random weights."""
    torch.manual_seed(seed)
    model = create_model(ModelConfig())
    if weights:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(common.DEFAULT_DATA), help="CIFAR-10 .npz, or 'synthetic'")
    parser.add_argument("--weights", default=None, help="a run's variants/<v>/model.pt (default: random weights, seed 0)")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda; on cuda the primary timer is wall time")
    parser.add_argument("--channels-last", choices=("none", "both", "ours"), default="ours",
                        help="convert the model(s) to channels_last: 'both' like-for-like, 'ours' = the project side only "
                             "(what a channels_last model in stress.evaluate.shards.load_model would give; see README)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |difference| of the [0, 1] maps")
    parser.add_argument("--quick", action="store_true", help="~30 s on an idle machine: 512 images, 3 rounds")
    parser.add_argument("--out", default="benchmarks/results/gradcam.json")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 512, 3
    torch.set_num_threads(args.threads)

    try:
        import pytorch_grad_cam
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        sys.exit("pytorch-grad-cam is not installed: .venv/bin/python -m pip install grad-cam")
    from importlib.metadata import version

    raw = common.load_images(args.data, 0, args.images)
    images = normalize(torch.tensor(raw["test_x"], device=args.device))  # (N, 3, 32, 32) float32
    targets = torch.tensor(raw["test_y"], device=args.device)  # (N,) true classes
    ours_model = load_model(args.weights, seed=0).to(args.device)
    theirs_model = copy.deepcopy(ours_model)
    if args.channels_last in ("both", "ours"):
        ours_model = ours_model.to(memory_format=torch.channels_last)  # conv weights only; inputs stay NCHW
    if args.channels_last == "both":
        theirs_model = theirs_model.to(memory_format=torch.channels_last)
    theirs_layer = dict(theirs_model.named_modules())[GRADCAM_LAYER]

    def ours() -> torch.Tensor:
        return min_max(gradcam(ours_model, images, targets, batch_size=args.batch_size)).cpu()  # on the host, as theirs

    def theirs() -> np.ndarray:
        parts = []
        with GradCAM(model=theirs_model, target_layers=[theirs_layer]) as cam:
            for start in range(0, len(targets), args.batch_size):
                chunk = targets[start : start + args.batch_size].tolist()
                parts.append(cam(input_tensor=images[start : start + args.batch_size], targets=[ClassifierOutputTarget(c) for c in chunk]))
        return np.concatenate(parts)  # (N, 32, 32) float32 in [0, 1]

    ours_maps, theirs_maps = ours().numpy(), theirs()
    difference = np.abs(ours_maps - theirs_maps)
    worst = int(difference.reshape(len(difference), -1).max(1).argmax())
    equal = bool(difference.max() <= args.tolerance)
    raw_maps = gradcam(ours_model, images, targets, batch_size=args.batch_size)
    zero_maps = int((raw_maps.amax(dim=(1, 2)) == 0).sum())
    print(f"maps equal within {args.tolerance:g}: {equal} (max |diff| {difference.max():.2e} on image {worst}, "
          f"mean {difference.mean():.2e}; {zero_maps} all-zero maps of {len(targets)})")

    info = common.machine_info()
    print(f"{len(targets)} images of {raw['source']}, batch {args.batch_size}, {args.threads} torch thread(s), "
          f"channels_last: {args.channels_last}, "
          f"{args.rounds} rounds, load {info['load_average']} on {info['nproc']} CPUs")
    samples = common.interleave({"pytorch_grad_cam": theirs, "stress": ours}, args.rounds, log=print)
    primary = "wall" if args.device.startswith("cuda") else "cpu"  # CPU seconds say nothing about GPU work
    cpu = common.round_ratios(samples, "stress", "pytorch_grad_cam", primary)
    wall = common.round_ratios(samples, "stress", "pytorch_grad_cam", "wall")
    rows = []
    for name in samples:
        rows.append({
            "implementation": name,
            "maps_per_cpu_s": len(targets) / common.median([s[primary] for s in samples[name]]),
            "maps_per_s": len(targets) / common.median([s["wall"] for s in samples[name]]),
            "ratio_cpu": common.median(cpu) if name == "stress" else 1.0,
            "ratio_wall": common.median(wall) if name == "stress" else 1.0,
        })
    met = common.median(cpu) >= 3.0
    print()
    common.print_table(rows, [
        ("implementation", "implementation", ""), ("maps_per_cpu_s", f"maps/{primary}-s", ".0f"), ("ratio_cpu", "ratio", ".2f"),
        ("maps_per_s", "maps/s wall", ".0f"), ("ratio_wall", "wall ratio", ".2f"),
    ])
    print(f"speed-up ({primary} time, median of {args.rounds} rounds): {common.median(cpu):.2f}x "
          f"(range {min(cpu):.2f}..{max(cpu):.2f}); target >= 3x: {'met' if met else 'MISSED'}")
    common.write_json(args.out, {
        "benchmark": "gradcam", "device": args.device, "primary_timer": primary, "images": len(targets), "batch_size": args.batch_size, "threads": args.threads,
        "rounds": args.rounds, "channels_last": args.channels_last, "data": raw["source"], "weights": args.weights or "random (seed 0)",
        "layer": GRADCAM_LAYER, "targets": "true class", "grad_cam_version": version("grad-cam"),
        "grad_cam_path": str(pathlib.Path(pytorch_grad_cam.__file__).parent),
        "equality": {"tolerance": args.tolerance, "equal": equal, "max_abs_diff": float(difference.max()),
                     "mean_abs_diff": float(difference.mean()), "all_zero_maps": zero_maps},
        "speedup_cpu": common.summarise_ratio(cpu), "speedup_wall": common.summarise_ratio(wall), "target": 3.0, "met": met,
        "machine": info, "results": rows, "samples": samples,
    })


if __name__ == "__main__":
    main()
