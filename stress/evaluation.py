"""Evaluation stages after training: fan the shard functions out, merge, analyse, write.

Ray is reached only through `stress.cluster`. Each finished shard is saved under
eval/shards/ as it arrives, so an interrupted stage re-runs only the missing shards.
"""

from __future__ import annotations

import time
import zipfile

import numpy as np
import torch

from stress import cluster
from stress.artifacts import RunFolder, config_key, load_torch, write_json, write_npz, write_bytes_atomic
from stress.config import VARIANTS
from stress.errors import StressError
from stress.analysis import analyse_explanations, analyse_failures, explain_cases, failure_gallery
from stress.failures import image_characteristics
from stress.shards import evaluate_shard, load_model

PER_IMAGE_KEYS = ("indices", "logits", "predicted", "confidence", "correct", "centre_share_predicted", "centre_share_true")


# Bumped whenever the evaluate stage computes something differently, so that run folders and
# saved shards from older code are recomputed instead of mixed with new results.
EVALUATE_VERSION = 2
EVALUATE_OPTIONS = ("shards", "num_cases", "faithfulness_images", "faithfulness_steps")  # stress.* read here
STAGE_KEY = "stage_key"  # entry of every saved shard file: the key of the stage that wrote it


def evaluation_key(config) -> str:
    """The evaluate stage's inputs: the trained models' options and the stress options it reads."""
    return config_key(config.to_dict(), ("data", "model", "train"), {"stress": EVALUATE_OPTIONS}, EVALUATE_VERSION)


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


def merge_shards(parts: list[dict[str, np.ndarray]], n: int) -> dict[str, np.ndarray]:
    """Concatenate shard outputs in index order; every image must appear exactly once.

    Keys starting with seconds_ are per-shard timings and are summed instead.
    """
    parts = sorted(parts, key=lambda p: int(p["indices"][0]) if len(p["indices"]) else 0)
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if not k.startswith("seconds_")}
    merged.update({k: np.array([sum(float(p[k][0]) for p in parts)]) for k in parts[0] if k.startswith("seconds_")})
    if not np.array_equal(merged["indices"], np.arange(n)):
        raise RuntimeError(f"shards do not cover the {n} test images exactly once")
    return merged


def load_weights(run: RunFolder, model_config: dict) -> dict[str, dict]:
    """Both variants' final weights, checked against the configured architecture."""
    weights = {}
    for v in VARIANTS:
        path = run.variant_dir(v) / "model.pt"
        state = load_torch(path)
        try:
            load_model(state["model"], model_config, torch.device("cpu"))
        except (KeyError, RuntimeError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StressError(f"{path}: checkpoint does not match the configured model ({first})") from None
        weights[v] = state["model"]
    return weights


def predict_all(pipeline, weights_ref, images_ref, labels_ref, n: int, shards: int) -> dict[str, dict[str, np.ndarray]]:
    """Run evaluate_shard for every (variant, shard) as Ray tasks; merged per-image results per variant."""
    run, config = pipeline.run, pipeline.config
    key = shard_key(run, evaluation_key(config))
    folder = run.path("eval", "shards")
    bounds = shard_bounds(n, shards)
    parts: dict[str, list] = {v: [] for v in VARIANTS}
    calls = []
    for v in VARIANTS:
        for start, stop in bounds:
            saved = load_saved_shard(folder / f"{v}_{start}_{stop}.npz", key, pipeline.log)
            if saved is not None:
                parts[v].append(saved)
                continue
            args = (weights_ref[v], config.to_dict()["model"], images_ref, labels_ref, start, stop)
            kwargs = {
                "faithfulness_every": max(1, n // config.stress.faithfulness_images),
                "faithfulness_steps": config.stress.faithfulness_steps,
                "seed": config.train.seed,
                "precision": config.train.precision,
            }
            calls.append((f"{v}:{start}-{stop}", args, kwargs))
    if len(calls) < 2 * len(bounds):
        pipeline.log(f"evaluate: {2 * len(bounds) - len(calls)} shard(s) already saved, {len(calls)} to run")

    def on_result(task: str, value: dict) -> None:
        variant, span = task.split(":")
        start, stop = span.split("-")
        write_npz(folder / f"{variant}_{start}_{stop}.npz", **value, **{STAGE_KEY: np.array(key)})
        parts[variant].append(value)

    cluster.run_tasks(evaluate_shard, calls, config.resources, on_result, pipeline.log)
    return {v: merge_shards(parts[v], n) for v in VARIANTS}


def write_prediction_table(run: RunFolder, labels: np.ndarray, merged: dict) -> None:
    """eval/predictions.csv: index, true class, then predicted class and confidence per variant."""
    columns = ["index", "true"] + [f"{v}_{c}" for v in VARIANTS for c in ("predicted", "confidence")]
    lines = [",".join(columns)]
    for i in range(len(labels)):
        row = [str(i), str(int(labels[i]))]
        for v in VARIANTS:
            row += [str(int(merged[v]["predicted"][i])), f"{float(merged[v]['confidence'][i]):.6f}"]
        lines.append(",".join(row))
    write_bytes_atomic(run.path("eval", "predictions.csv"), ("\n".join(lines) + "\n").encode())


def analyse(pipeline, weights: dict, merged: dict) -> None:
    """Failures, explanations, case maps and galleries from the merged results; writes eval/*."""
    run, config, splits = pipeline.run, pipeline.config, pipeline.splits
    images, labels = splits.test_x, splits.test_y
    characteristics = image_characteristics(images)
    write_npz(run.path("eval", "characteristics.npz"), **characteristics)
    failures = analyse_failures(labels, merged, characteristics, config.stress.num_cases)
    explanations = analyse_explanations(merged)
    for v in VARIANTS:
        explanations[v]["timing"] = {
            "images": int(len(labels)),
            "seconds_predict": float(merged[v]["seconds_predict"][0]),
            "seconds_gradcam": float(merged[v]["seconds_gradcam"][0]),
            "gradcam_over_predict": float(merged[v]["seconds_gradcam"][0] / merged[v]["seconds_predict"][0]),
        }
    models = {v: load_model(weights[v], config.to_dict()["model"], torch.device("cpu")) for v in VARIANTS}
    write_npz(run.path("eval", "gradcam_cases.npz"), **explain_cases(models, images, labels, merged, failures))
    write_npz(run.path("eval", "failure_gallery.npz"), **failure_gallery(images, labels, merged))
    write_json(run.path("eval", "failures.json"), failures)
    write_json(run.path("eval", "explanations.json"), explanations)
    for v in VARIANTS:
        f = failures[v]
        pipeline.log(
            f"[{v}] {f['n_errors']} errors of {f['n_images']}; confident (>=0.9): {f['confident_errors']['0.9']}, "
            f"(>=0.99): {f['confident_errors']['0.99']}; {len(f['cases'])} cases selected"
        )


def run_evaluation(pipeline) -> None:
    """The evaluate stage: predictions and Grad-CAM statistics over test shards, then analysis."""
    run, config = pipeline.run, pipeline.config
    key, weights_id = evaluation_key(config), run.weights_digest()
    if run.stage_done("evaluate", key, weights_id):
        pipeline.log("evaluate: already finished: skipped")
        return
    started = time.perf_counter()
    splits = pipeline.splits
    n = len(splits.test_y)
    shards = config.stress.shards or cluster.available_slots(config.resources.task_cpus, cluster.resolve_gpus(config.resources.task_gpus, 0.25))
    weights = load_weights(run, config.to_dict()["model"])
    weights_ref = {v: cluster.put(w) for v, w in weights.items()}
    images_ref, labels_ref = cluster.put(splits.test_x), cluster.put(splits.test_y)
    pipeline.log(f"evaluate: {len(VARIANTS)} variants x {min(shards, n)} shards over {n} test images")
    merged = predict_all(pipeline, weights_ref, images_ref, labels_ref, n, shards)
    write_npz(run.path("eval", "predictions.npz"), labels=splits.test_y, **{f"{v}_{k}": merged[v][k] for v in VARIANTS for k in merged[v]})
    write_prediction_table(run, splits.test_y, merged)
    for v in VARIANTS:
        seconds_predict, seconds_gradcam = float(merged[v]["seconds_predict"][0]), float(merged[v]["seconds_gradcam"][0])
        pipeline.log(
            f"[{v}] Grad-CAM (predicted + true class) over {n} images: {seconds_gradcam:.1f} s of task time, "
            f"{seconds_gradcam / seconds_predict:.2f}x the evaluation pass ({seconds_predict:.1f} s)"
        )
    analyse(pipeline, weights, merged)
    run.mark_done("evaluate", time.perf_counter() - started, key, weights=weights_id, shards=min(shards, n))
    pipeline.stage_seconds["evaluate"] = time.perf_counter() - started
