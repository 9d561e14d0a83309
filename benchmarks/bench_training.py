"""Training throughput of the project's step vs a minimal hand-written loop (run by hand).

    .venv/bin/python benchmarks/bench_training.py --out benchmarks/results/training.json
    .venv/bin/python benchmarks/bench_training.py --quick

Subjects, each one pass over the same N images, batch 128, SimpleCNN, Adam, same seed:
- hand:            reference. Pre-made normalised float tensors, contiguous batches,
                   forward / cross-entropy / backward / step, nothing else; in the same memory
                   layout as train_variant (`training_memory_format`: channels_last on the CPU),
                   so that the ratio measures the project's overhead, not the layout.
- project:         `stress.train.train_variant(variant="baseline")` itself, one epoch, on
                   uint8 tensors (indexing by a random order, `normalize`, running totals).
- project_aug:     the same with variant="augmented" (`augment_batch` per batch).
- dataloader_w0/1: what the seed notebook writes: a torchvision DataLoader (shuffle) over a
                   Dataset of PIL images with RandomCrop(32, 4) + RandomHorizontalFlip +
                   ToTensor + Normalize, num_workers 0 and 1.

The project's step is timed by calling train_variant for real (no replica of its loop):
its history records `seconds` around the training loop alone, before the validation pass,
so that is the wall time used; the validation and test sets handed to it are 16 images, so
the CPU time of the whole call (also reported) is dominated by the loop too.
Figures are throughput ratios to `hand` (>1 = faster), the median over interleaved rounds.
The primary timer is CPU seconds (this process plus reaped DataLoader workers) with one torch
thread: on the shared 2-core machine wall time varied by 2x between rounds while CPU time
varied by ~2%. Wall-time ratios are reported next to them. CPU time does not show the one
thing num_workers=1 buys (overlap of loading and training on an idle second core): read the
wall column for that, on an idle machine.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the repo on sys.path)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from stress.augment import CIFAR10_MEAN, CIFAR10_STD, normalize  # noqa: E402
from stress.config import ExperimentConfig, TrainConfig  # noqa: E402
from stress.models import create_model  # noqa: E402
from stress.train import to_device_arrays, train_variant, training_memory_format  # noqa: E402

BATCH = 128
HELD_OUT = 16  # validation/test images handed to train_variant: its per-epoch evaluation stays negligible


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_hand_loop(images: torch.Tensor, labels: torch.Tensor, config: ExperimentConfig, device: str):
    """The reference: contiguous batches of pre-normalised floats, nothing but the optimisation step."""
    layout = training_memory_format(device)
    inputs = normalize(images).contiguous(memory_format=layout)  # (N, 3, 32, 32) float32, made once outside the timing

    def run() -> dict:
        torch.manual_seed(config.train.seed)  # the same initial weights as train_variant's build_model
        model = create_model(config.model).to(device, memory_format=layout)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
        model.train()
        started = time.perf_counter()
        for i in range(0, len(labels), BATCH):
            loss = F.cross_entropy(model(inputs[i : i + BATCH]), labels[i : i + BATCH])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)
        return {"wall": time.perf_counter() - started}

    return run


def make_project_step(data: dict[str, torch.Tensor], config: ExperimentConfig, variant: str, device: str):
    """One epoch of the real train_variant; wall time = its own loop timing from the history.

    On a GPU its loop timing stops before the queued kernels finish, so there the whole call's
    wall time is used (it ends with host reads of the metrics).
    """

    def run() -> dict:
        state = train_variant(config, variant, data, device=device, log=lambda line: None)
        return {} if device.startswith("cuda") else {"wall": state["history"][-1]["seconds"]}

    return run


class PilDataset(torch.utils.data.Dataset):
    """CIFAR images as PIL images plus a torchvision transform, as in most tutorials."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        from PIL import Image

        self.images = [Image.fromarray(image.transpose(1, 2, 0)) for image in images]  # (32, 32, 3) each
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.labels[index]


def make_dataloader_loop(dataset: PilDataset, config: ExperimentConfig, workers: int, device: str):
    """One epoch of the usual DataLoader + transforms loop (workers start anew each epoch, as by default)."""

    def run() -> dict:
        torch.manual_seed(config.train.seed)
        model = create_model(config.model).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
        model.train()
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=BATCH, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0)
        )
        started = time.perf_counter()
        for images, labels in loader:
            loss = F.cross_entropy(model(images.to(device)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)
        return {"wall": time.perf_counter() - started}

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(common.DEFAULT_DATA), help="CIFAR-10 .npz, or 'synthetic'")
    parser.add_argument("--images", type=int, default=1920, help="training images per pass (a multiple of 128)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every subject")
    parser.add_argument("--device", default="cpu", help="cpu or cuda; on cuda the primary timer is wall time")
    parser.add_argument("--no-dataloader", action="store_true", help="skip the torchvision DataLoader subjects")
    parser.add_argument("--quick", action="store_true", help="~30 s on an idle machine: 640 images, 3 rounds")
    parser.add_argument("--out", default="benchmarks/results/training.json")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 640, 3
    torch.set_num_threads(args.threads)
    n = args.images - args.images % BATCH

    raw = common.load_images(args.data, n + HELD_OUT)
    config = ExperimentConfig(train=TrainConfig(epochs=1, batch_size=BATCH))
    arrays = {
        "train_x": raw["train_x"][:n], "train_y": raw["train_y"][:n],
        "val_x": raw["train_x"][n:], "val_y": raw["train_y"][n:],
        "test_x": raw["train_x"][n:], "test_y": raw["train_y"][n:],
    }
    data = to_device_arrays(arrays, args.device)  # once, as each training worker does
    subjects = {
        "hand": make_hand_loop(data["train_x"], data["train_y"], config, args.device),
        "project": make_project_step(data, config, "baseline", args.device),
        "project_aug": make_project_step(data, config, "augmented", args.device),
    }
    if not args.no_dataloader:
        from torchvision import transforms

        transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ])
        dataset = PilDataset(arrays["train_x"], arrays["train_y"], transform)
        subjects["dataloader_w0"] = make_dataloader_loop(dataset, config, 0, args.device)
        subjects["dataloader_w1"] = make_dataloader_loop(dataset, config, 1, args.device)

    info = common.machine_info()
    primary = "wall" if args.device.startswith("cuda") else "cpu"  # CPU seconds say nothing about GPU work
    print(f"{n} images of {raw['source']} on {args.device}, batch {BATCH}, {args.threads} torch thread(s), {args.rounds} rounds, "
          f"load {info['load_average']} on {info['nproc']} CPUs")
    samples = common.interleave(subjects, args.rounds, log=print)

    targets = {"project": 0.95, "project_aug": 0.90}
    rows = []
    for name in subjects:
        cpu = common.round_ratios(samples, name, "hand", primary)
        wall = common.round_ratios(samples, name, "hand", "wall")
        rows.append({
            "subject": name,
            "images_per_cpu_s": n / common.median([s[primary] for s in samples[name]]),
            "images_per_s": n / common.median([s["wall"] for s in samples[name]]),
            "ratio_cpu": common.median(cpu),
            "ratio_cpu_min": min(cpu),
            "ratio_cpu_max": max(cpu),
            "ratio_wall": common.median(wall),
            "target": targets.get(name, ""),
            "met": ("yes" if common.median(cpu) >= targets[name] else "NO") if name in targets else "",
            "samples": samples[name],
        })
    print()
    common.print_table(rows, [
        ("subject", "subject", ""), ("images_per_cpu_s", f"img/{primary}-s", ".0f"), ("ratio_cpu", "ratio vs hand", ".3f"),
        ("ratio_cpu_min", "min", ".3f"), ("ratio_cpu_max", "max", ".3f"), ("images_per_s", "img/s wall", ".0f"),
        ("ratio_wall", "wall ratio", ".3f"), ("target", "target", ""), ("met", "met", ""),
    ])
    print("ratio = throughput of the subject / throughput of `hand` in the same round, median over rounds, "
          "from CPU seconds (this process + reaped DataLoader workers); the wall ratio follows the machine's load")
    common.write_json(args.out, {
        "benchmark": "training", "device": args.device, "primary_timer": primary, "images": n, "batch": BATCH, "threads": args.threads, "rounds": args.rounds,
        "data": raw["source"], "machine": info,
        "timer": "primary: CPU seconds of the whole call (process + reaped children); wall = the training loop alone "
                 "(train_variant's own history timing for project*)",
        "results": rows,
    })


if __name__ == "__main__":
    main()
