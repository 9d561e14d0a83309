"""The stress stage on the driver: fan (corruption, shard) and shift tasks out, merge, summarise.

Each task evaluates both variants on the same perturbed images. Finished task outputs are
saved under eval/stress_shards/, so an interrupted stage re-runs only what is missing.
"""

from __future__ import annotations

import time

import numpy as np

from stress import cluster
from stress.artifacts import config_key, write_json, write_npz
from stress.config import VARIANTS
from stress.corruptions import CORRUPTIONS
from stress.evaluation import STAGE_KEY, load_saved_shard, shard_bounds, shard_key
from stress.observations import interval_text, number, signed
from stress.robustness import stress_shard, summarise_calibration, summarise_robustness
from stress.shards import evaluate_shard
from stress.shifts import list_shifts

SHIFTS_PER_TASK = 6
# Bumped whenever the stress stage computes something differently (see EVALUATE_VERSION).
STRESS_VERSION = 2
STRESS_OPTIONS = ("shards", "corruptions", "severities", "stress_limit", "calibration_bins", "compile")  # stress.* read here


def stress_key(config) -> str:
    """The stress stage's inputs: the trained models' options and the stress options it reads."""
    return config_key(config.to_dict(), ("data", "model", "train"), {"stress": STRESS_OPTIONS}, STRESS_VERSION)
FIELDS = ("correct", "confidence", "nll", "brier")


def _task_key(group: str, start: int, stop: int) -> str:
    return f"{group}@{start}-{stop}"


def run_stress(pipeline) -> None:
    """Corruptions x severities, shifts and calibration for both variants."""
    run, config, splits = pipeline.run, pipeline.config, pipeline.splits
    key = stress_key(config)
    if config.stress.skip_stress:
        pipeline.log("stress: skipped (--skip-stress)")
        return
    weights_id = run.weights_digest()
    saved_key = shard_key(run, key)  # computed once: it hashes both model.pt files
    if run.stage_done("stress", key, weights_id):
        pipeline.log("stress: already finished: skipped")
        return
    started = time.perf_counter()
    s = config.stress
    corruptions = list(s.corruptions or CORRUPTIONS)
    severities = list(s.severities)
    shifts = list_shifts()
    n = len(splits.test_y) if s.stress_limit == 0 else min(s.stress_limit, len(splits.test_y))
    images, labels = splits.test_x[:n], splits.test_y[:n]
    from stress.evaluation import load_weights

    weights = load_weights(run, config.to_dict()["model"])
    weights_ref, images_ref, labels_ref = cluster.put(weights), cluster.put(images), cluster.put(labels)
    model_config = config.to_dict()["model"]
    slots = s.shards or cluster.available_slots(config.resources.task_cpus, cluster.resolve_gpus(config.resources.task_gpus, 0.25))
    bounds = shard_bounds(n, slots)
    groups = {c: [(c, sev) for sev in severities] for c in corruptions}
    for i in range(0, len(shifts), SHIFTS_PER_TASK):
        groups[f"shifts{i // SHIFTS_PER_TASK}"] = [(name, 0) for name in shifts[i : i + SHIFTS_PER_TASK]]
    folder = run.path("eval", "stress_shards")
    results: dict[str, dict] = {}  # task key -> {cell key -> per-image arrays}
    calls = []
    for group, perturbations in groups.items():
        for start, stop in bounds:
            task = _task_key(group, start, stop)
            saved = load_saved_shard(folder / f"{task}.npz", saved_key, pipeline.log)
            if saved is not None:
                results[task] = _unflatten(saved)
                continue
            calls.append((task, (weights_ref, model_config, images_ref, labels_ref, start, stop, perturbations),
                          {"seed": config.train.seed, "precision": config.train.precision, "compile": s.compile}))
    # Validation logits for temperature scaling, one task per variant.
    val_ref, val_labels_ref = cluster.put(splits.val_x), cluster.put(splits.val_y)
    val_logits: dict[str, np.ndarray] = {}
    val_calls = [(f"val:{v}", (weights[v], model_config, val_ref, val_labels_ref, 0, len(splits.val_y)),
                  {"gradcam": False, "precision": config.train.precision}) for v in VARIANTS]
    pipeline.log(
        f"stress: {len(corruptions)} corruptions x {len(severities)} severities and {len(shifts)} shifts on {n} images, "
        f"{len(calls)} tasks ({len(groups) * len(bounds) - len(calls)} already saved)"
    )

    def on_result(task: str, value: dict) -> None:
        if task.startswith("val:"):
            val_logits[task[4:]] = value["logits"]
            return
        write_npz(folder / f"{task}.npz", **_flatten(value), **{STAGE_KEY: np.array(saved_key)})
        results[task] = value

    cluster.run_tasks(evaluate_shard, val_calls, config.resources, on_result, pipeline.log)
    cluster.run_tasks(stress_shard, calls, config.resources, on_result, pipeline.log)
    merged = merge_cells(results, bounds, groups)
    with np.load(run.path("eval", "predictions.npz")) as predictions:
        clean_correct = {v: predictions[f"{v}_correct"][:n] for v in VARIANTS}
        test_logits = {v: predictions[f"{v}_logits"][:n] for v in VARIANTS}
    robustness = summarise_robustness(clean_correct, merged, corruptions, severities, shifts)
    robustness["images"] = n
    calibration = summarise_calibration(test_logits, val_logits, labels, splits.val_y, merged, corruptions, severities, s.calibration_bins)
    write_npz(run.path("eval", "stress_correct.npz"), **{cell: arrays["correct"] for cell, arrays in merged.items()})
    write_json(run.path("eval", "robustness.json"), robustness)
    write_json(run.path("eval", "calibration.json"), calibration)
    gain = robustness["gain"]
    if "mean_corruption" in gain:
        g = gain["mean_corruption"]
        pipeline.log(f"augmented - baseline: mean corruption acc {signed(g['mean'], 4)} "
                     f"(95% CI over images {interval_text(g['low'], g['high'], 4)}; one trained pair)")
    for v in VARIANTS:
        r, c = robustness[v], calibration[v]
        pipeline.log(
            f"[{v}] clean {number(r['clean_acc'], 4)}  mean corruption acc {number(r['mean_corruption_acc'], 4)}  "
            f"ECE {number(c['ece'], 4)} -> {number(c['ece_after_temperature'], 4)} after T={number(c['temperature'], 2)}"
        )
    seconds = time.perf_counter() - started
    run.mark_done("stress", seconds, key, weights=weights_id, tasks=len(groups) * len(bounds))
    pipeline.stage_seconds["stress"] = seconds


def merge_cells(results: dict[str, dict], bounds: list[tuple[int, int]], groups: dict[str, list]) -> dict[str, dict[str, np.ndarray]]:
    """Per cell ("<variant>|<name>|<severity>"): per-image arrays over all shards, in image order."""
    merged: dict[str, dict[str, np.ndarray]] = {}
    for group in groups:
        parts = [results[_task_key(group, start, stop)] for start, stop in bounds]
        for cell in parts[0]:
            merged[cell] = {f: np.concatenate([p[cell][f] for p in parts]) for f in FIELDS}
    return merged


def _flatten(value: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{cell}#{field}": array for cell, arrays in value.items() for field, array in arrays.items()}


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, array in flat.items():
        cell, field = key.split("#")
        out.setdefault(cell, {})[field] = array
    return out
