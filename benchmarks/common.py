"""Small helpers shared by the benchmark scripts: timing, interleaved repeats, tables, JSON.

The benchmarks run on shared machines, so every figure is a ratio against a reference
measured in the same run: reference and subject blocks are interleaved (the order is
rotated every round), each round gives one ratio per subject, and the median over the
rounds is reported. Neighbouring blocks see nearly the same background load, so the
per-round ratio cancels most of it; the median discards the rounds where it did not.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import sys
import time
from typing import Any, Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10" / "cifar10.npz"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout without installing

from stress import precision  # noqa: E402 - after the path above


def cpu_model() -> str:
    """The CPU's model name with its family, model and stepping where /proc/cpuinfo has them: a virtual machine's
    model name ("AMD EPYC") alone does not tell a Zen 4 from a Zen 5."""
    signature = precision.cpu_signature()
    return f"{precision.cpu_model()} ({signature})" if signature else precision.cpu_model()


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    """What a figure depends on: CPUs, their model, the load, the library versions."""
    import torch

    info = {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "cpu_bf16_flags": precision.cpu_bf16_flags(),
        "load_average": load_average(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return info


def _cpu_seconds() -> float:
    # This process's threads plus its reaped children (e.g. DataLoader workers, joined at the end of an epoch).
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(function: Callable[[], Any]) -> dict[str, float]:
    """Wall and CPU seconds of one call.

    If the call returns a dict with "wall" (seconds of its timed core, e.g. a training loop
    without set-up), that replaces the call's wall time; the whole call stays in "call_wall".
    """
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = function()
    sample = {"wall": time.perf_counter() - wall, "cpu": _cpu_seconds() - cpu}
    sample["call_wall"] = sample["wall"]
    if isinstance(result, dict) and "wall" in result:
        sample["wall"] = float(result["wall"])
    return sample


def interleave(
    subjects: dict[str, Callable[[], Any]], rounds: int, warmup: bool = True, log: Callable[[str], None] | None = None
) -> dict[str, list[dict[str, float]]]:
    """Time every subject once per round, rotating the order each round.

    Returns {name: [ {wall, cpu, load}, ... one per round ]}. With warmup, each subject is
    called once untimed first (lazy imports, allocator warm-up, thread pools).
    """
    names = list(subjects)
    if warmup:
        for name in names:
            subjects[name]()
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            sample = measure(subjects[name])
            sample["load"] = os.getloadavg()[0]
            samples[name].append(sample)
        if log:
            log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {samples[n][-1]['wall']:.2f}s" for n in names))
    return samples


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def round_ratios(samples: dict[str, list[dict]], subject: str, reference: str, key: str, higher_is_better: bool = True) -> list[float]:
    """Per-round speed of `subject` relative to `reference` (>1 = subject faster) from timings `key`."""
    pairs = zip(samples[subject], samples[reference])
    return [(ref[key] / sub[key]) if higher_is_better else (sub[key] / ref[key]) for sub, ref in pairs]


def summarise_ratio(ratios: list[float]) -> dict[str, float]:
    """Median and spread (min, max) of per-round ratios."""
    return {"median": median(ratios), "min": min(ratios), "max": max(ratios), "rounds": len(ratios)}


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """Print rows as a fixed-width table; columns are (key, header, format spec)."""
    widths = []
    for key, header, spec in columns:
        cells = [format(row[key], spec) if isinstance(row.get(key), (int, float)) else str(row.get(key, "")) for row in rows]
        widths.append(max([len(header)] + [len(c) for c in cells]))
    print("  ".join(header.rjust(w) if i else header.ljust(w) for i, ((_, header, _), w) in enumerate(zip(columns, widths))))
    for row in rows:
        cells = []
        for i, ((key, _, spec), w) in enumerate(zip(columns, widths)):
            value = row.get(key, "")
            text = format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
            cells.append(text.rjust(w) if i else text.ljust(w))
        print("  ".join(cells))


def write_json(path: str | pathlib.Path, payload: dict[str, Any]) -> pathlib.Path:
    """Write `payload` (plus the load average at the end of the run) as indented JSON."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "load_average_at_end": load_average()}
    out.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    print(f"wrote {out}")
    return out


def load_images(data: str, n_train: int, n_test: int = 0) -> dict[str, Any]:
    """The first n_train training and n_test test images (uint8 N,3,32,32, int64 labels).

    `data` is a .npz path (the real CIFAR-10 copy by default) or "synthetic".
    """
    import numpy as np

    from stress.config import DataConfig
    from stress.data import load_dataset

    if data == "synthetic" or not pathlib.Path(data).exists():
        if data != "synthetic":
            print(f"{data} not found: using synthetic images")
        config = DataConfig(source="synthetic", synthetic_train=max(n_train, 20), synthetic_test=max(n_test, 10))
    else:
        config = DataConfig(source=str(data))
    dataset = load_dataset(config)
    return {
        "source": dataset.source,
        "train_x": np.ascontiguousarray(dataset.x_train[:n_train]),
        "train_y": dataset.y_train[:n_train],
        "test_x": np.ascontiguousarray(dataset.x_test[:n_test]),
        "test_y": dataset.y_test[:n_test],
    }


def load_run(folder: str | pathlib.Path, data: str | None = None):
    """A finished run folder's config and its data split; `data` replaces the run's data source if it moved."""
    import dataclasses

    from stress.artifacts import read_json
    from stress.config import ExperimentConfig
    from stress.data import load_dataset, split_dataset

    config = ExperimentConfig.from_dict(read_json(pathlib.Path(folder) / "config.json"))
    data_config = config.data if not data else dataclasses.replace(config.data, source=data)
    return config, split_dataset(load_dataset(data_config), data_config, config.train.seed)
