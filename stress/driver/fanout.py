"""Resumable fan-out, the one mechanism behind both fan-out stages (evaluate and stress).

A stage lists its tasks (one per shard of the test set, or per (perturbation group, shard));
`run_resumable` reuses every task result saved under the stage's folder with the same key,
runs the rest through an executor, and saves each result as it arrives. An interrupted stage
therefore re-runs only the tasks whose files are missing, unreadable or saved under other
options. A saved file is `<task name>.npz` and holds the task's arrays plus STAGE_KEY, the
key it was computed under (the stage key and both models' weights, `shard_key`).

Executors run plain functions: `stress.driver.cluster.RayExecutor` as Ray tasks, and
`LocalExecutor` here in this process, one after the other (tests, notebooks, no Ray).
"""

from __future__ import annotations

import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from stress.artifacts import write_npz
from stress.config import ExperimentConfig, ResourceConfig

STAGE_KEY = "stage_key"  # entry of every saved shard file: the key of the stage that wrote it
PRECISION = "precision"  # entry of every shard result: what --precision resolved to on the task's device ("fp32", "bf16")
UNRECORDED = "unrecorded"  # a saved shard's precision from before the entry
Calls = list[tuple[str, tuple, dict]]  # (label, args, kwargs) per task
OnResult = Callable[[str, Any], None]


class Executor(Protocol):
    """Where a pipeline's work runs: Ray (RayExecutor) or this process (LocalExecutor)."""

    name: str  # how the run log names it

    def start(self, address: str | None, log=None) -> dict[str, float]: ...  # the resources there are
    def check(self, resources: ResourceConfig, totals: dict[str, float], address: str | None, log) -> None: ...
    def put(self, value: Any) -> Any: ...  # a large input shared by many tasks
    def slots(self, resources: ResourceConfig) -> int: ...  # tasks that run at once
    def task_gpus(self, resources: ResourceConfig) -> float: ...  # the GPU (fraction) each task gets, 0 on CPUs
    def run(self, function: Callable, calls: Calls, resources: ResourceConfig, on_result: OnResult, log) -> None: ...
    # log: the pipeline's progress line writer, for training that prints in this process (LocalExecutor);
    # Ray's trainers print in their own processes (RayExecutor's tag goes before their lines instead).
    def train_variants(self, config: ExperimentConfig, arrays: dict, storage: str, variants: list[str],
                       on_done: Callable[[str, dict], None], log: Callable[[str], None] = print) -> None: ...


@dataclass(frozen=True)
class Task:
    """One task of a fan-out: `name` is its saved file's stem, `label` what progress lines call it."""

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    label: str = ""


def shard_key(run, stage_key: str) -> str:
    """What a saved shard must have been computed from: its stage's key and both models' weights."""
    return f"{stage_key}|{run.weights_digest()}"


def load_saved_shard(path, key: str, log) -> dict[str, np.ndarray] | None:
    """A saved shard's arrays if it was written under stage key `key`, else None (and say why)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = dict(saved)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        log(f"{path.name}: unreadable saved shard ({type(exc).__name__}): recomputed")
        return None
    stored = arrays.pop(STAGE_KEY, None)
    if stored is None or str(stored) != key:
        log(f"{path.name}: saved under other options or older code: recomputed")
        return None
    return arrays


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Split range(n) into `shards` contiguous, nearly equal, non-empty [start, stop) ranges."""
    shards = max(1, min(shards, n))
    edges = np.linspace(0, n, shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def forward_batches(bounds: list[tuple[int, int]], perturbations: int, models: int, batch: int) -> int:
    """Forward passes of tasks over shards [start, stop): per shard, perturbation and model, ceil(images / batch)."""
    return sum(-(-(stop - start) // batch) for start, stop in bounds) * perturbations * models


def flatten_cells(value: dict[str, dict[str, np.ndarray] | np.ndarray]) -> dict[str, np.ndarray]:
    """{cell: {field: array}} -> {"cell#field": array}, the form a shard is saved in; plain arrays (PRECISION) stay."""
    return {f"{cell}#{field}": array for cell, arrays in value.items() if isinstance(arrays, dict) for field, array in arrays.items()} | {
        name: array for name, array in value.items() if not isinstance(array, dict)}


def unflatten_cells(flat: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray] | np.ndarray]:
    """The inverse of flatten_cells."""
    out: dict[str, dict[str, np.ndarray] | np.ndarray] = {}
    for key, array in flat.items():
        cell, hash_sign, field = key.partition("#")
        if hash_sign:
            out.setdefault(cell, {})[field] = array
        else:
            out[key] = array
    return out


def one_or_mixed(values: list) -> str | None:
    """The one value of `values`, or "mixed (a, b)" where they differ; None where none was recorded (older histories)."""
    seen = sorted({str(v) for v in values if v is not None})
    return None if not seen else seen[0] if len(seen) == 1 else f"mixed ({', '.join(seen)})"


def used_precision(results: list[dict], stage: str, requested: str, log) -> str:
    """What a stage's tasks ran in, taken out of each result's PRECISION entry: "fp32", "bf16", or e.g. "mixed (bf16, fp32)".

    "auto" resolves on each task's device, so the tasks of one stage can differ: nodes with and without fast
    bf16, or shards saved on another machine and reused on resume ("unrecorded": saved by code from before the
    entry). A mixed stage is logged, with the remedy.
    """
    values = [str(result.pop(PRECISION, UNRECORDED)) for result in results]
    label = one_or_mixed(values) or UNRECORDED
    if label.startswith("mixed"):
        log(f"{stage}: its tasks ran in {' and '.join(sorted(set(values)))} under --precision {requested} (nodes with and "
            "without fast bf16, or shards saved on another machine or by older code): its results mix them (a run with "
            "--precision fp32 or bf16 has one)")
    return label


def merge_shards(parts: list[dict[str, np.ndarray]], n: int) -> dict[str, np.ndarray]:
    """Concatenate shard outputs in index order; every image must appear exactly once.

    Keys starting with seconds_ are per-shard timings and are summed instead; PRECISION, per task, is left out
    (used_precision reads it).
    """
    parts = sorted(parts, key=lambda p: int(p["indices"][0]) if len(p["indices"]) else 0)
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if not k.startswith("seconds_") and k != PRECISION}
    merged.update({k: np.array([sum(float(p[k][0]) for p in parts)]) for k in parts[0] if k.startswith("seconds_")})
    if not np.array_equal(merged["indices"], np.arange(n)):
        raise RuntimeError(f"shards do not cover the {n} test images exactly once")
    return merged


def _same(value):
    return value


def run_resumable(
    executor: Executor,
    function: Callable,
    tasks: list[Task],
    folder: Path,
    key: str,
    resources: ResourceConfig,
    log,
    flatten: Callable[[Any], dict[str, np.ndarray]] = _same,
    unflatten: Callable[[dict[str, np.ndarray]], Any] = _same,
    announce: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Every task's result, by task name.

    Saved results (folder/<name>.npz written under `key`) are reused; the other tasks run
    through `executor` and each result is saved as it arrives (`flatten` turns it into the
    file's arrays, `unflatten` turns a file back into the result). `announce(reused, to_run)`
    is called once the saved files have been read, before anything runs.
    """
    results: dict[str, Any] = {}
    todo: list[Task] = []
    refused: dict[str, list[str]] = {}  # why -> the saved files refused for it, logged once per reason
    for task in tasks:
        saved = load_saved_shard(folder / f"{task.name}.npz", key,
                                 lambda line: refused.setdefault(line.partition(": ")[2], []).append(line.partition(": ")[0]))
        if saved is None:
            todo.append(task)
        else:
            results[task.name] = unflatten(saved)
    for why, files in refused.items():
        log(f"{files[0]}: {why}" if len(files) == 1 else f"{folder.name}: {len(files)} saved tasks ({files[0]} ... {files[-1]}): {why}")
    if announce is not None:
        announce(len(results), len(todo))
    names = {task.label or task.name: task.name for task in todo}

    def on_result(label: str, value: Any) -> None:
        name = names[label]
        write_npz(folder / f"{name}.npz", **flatten(value), **{STAGE_KEY: np.array(key)})
        results[name] = value

    executor.run(function, [(t.label or t.name, t.args, t.kwargs) for t in todo], resources, on_result, log)
    return results


class LocalExecutor:
    """Runs everything in this process, one task after the other: no Ray, no retries.

    For tests and notebooks. Training runs `stress.train.train_variant` in-process on the CPU
    (or the GPU when there is one), without mid-training checkpoints: an interrupted local
    training starts again from epoch 1.
    """

    name = "in-process"

    def start(self, address: str | None, log=None) -> dict[str, float]:
        return {"CPU": float(os.cpu_count() or 1)}

    def check(self, resources: ResourceConfig, totals: dict[str, float], address: str | None, log) -> None:
        return None

    def put(self, value: Any) -> Any:
        return value

    def slots(self, resources: ResourceConfig) -> int:
        return 1

    def task_gpus(self, resources: ResourceConfig) -> float:
        return 1.0 if torch.cuda.is_available() else 0.0

    def run(self, function: Callable, calls: Calls, resources: ResourceConfig, on_result: OnResult, log) -> None:
        started = time.perf_counter()
        for finished, (label, args, kwargs) in enumerate(calls, 1):
            value = function(*args, **kwargs)
            log(f"  [{finished}/{len(calls)}] {label} done ({time.perf_counter() - started:.0f} s)")
            on_result(label, value)

    def train_variants(self, config: ExperimentConfig, arrays: dict, storage: str, variants: list[str],
                       on_done: Callable[[str, dict], None], log: Callable[[str], None] = print) -> None:
        from stress.train import to_device_arrays, train_variant

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        shared = to_device_arrays(arrays, device) if "train_x" in arrays else None  # else {variant: its arrays}
        for variant in variants:
            data = shared if shared is not None else to_device_arrays(arrays[variant], device)
            state = train_variant(config, variant, data, device=device, log=log)
            on_done(variant, {"state": state, "gpus_per_worker": 1.0 if device.type == "cuda" else 0.0})
