"""The pipeline's stages after `prepare`, as functions of explicit inputs.

Each stage takes (run, config, splits, executor, log) and returns a StageOutcome; it reads
and writes only its own files in the run folder and records its completion there with a key
of the options it reads (`*_key`) and the weights it read, so a re-run skips it when neither
changed and re-runs it when one did:

    train      both variants at once (Ray Train) -> variants/<v>/{model.pt,history.json}
    evaluate   fan-out over test shards: predictions, Grad-CAM statistics, faithfulness;
               then the label audit, failures, explanations, cases, galleries -> eval/
    slices     (stress.driver.slice_stage) fan-out over test shards: penultimate-layer embeddings;
               then failure slices (class, image characteristics, clusters) -> eval/slices.{json,npz}
    stress     fan-out over (corruption or shift group, shard), plus validation logits for
               temperature scaling -> eval/robustness.json, eval/calibration.json

The fan-outs go through `stress.driver.fanout.run_resumable` (saved task results are reused).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from stress.analyses.calibration import summarise_calibration
from stress.analyses.explanations import analyse_explanations, explain_cases
from stress.analyses.failures import analyse_failures, failure_gallery, image_characteristics
from stress.analyses.labels import audit_labels, audit_text, suspect_set, unaudited_text
from stress.analyses.robustness import summarise_robustness
from stress.artifacts import RunFolder, config_key, load_torch, save_torch, write_bytes_atomic, write_json, write_npz
from stress.config import ExperimentConfig, evaluate_entries, model_names
from stress.constants import CONFIDENT, VARIANTS
from stress.data import Splits
from stress.driver.fanout import (Executor, Task, flatten_cells, merge_shards, run_resumable, shard_bounds, used_precision,
                                  shard_key, unflatten_cells)
from stress.driver.forward_plan import STRESS_BATCH, compile_decision, stress_plan
from stress.errors import StressError
from stress.augment import input_stats
from stress.evaluate.shards import evaluate_shard, load_model, stress_shard
from stress.resolve import GRADCAM_SKIPPED
from stress.perturb.tables import SOURCES as TABLE_SOURCES
from stress.report.figures import figure_path
from stress.report.statements import interval_text, number, signed

TRAINING_SECTIONS = ("data", "model", "train")  # what the trained weights depend on
# Bumped whenever a stage computes something differently, so that run folders and saved
# shards from older code are recomputed instead of mixed with new results.
EVALUATE_VERSION = 3  # 3: the label audit (eval/labels.json) runs before the failure cases are chosen
EVALUATE_SHARD_VERSION = 2  # the evaluate shards' own computation, unchanged since version 2 of the stage
STRESS_VERSION = 3  # 3: Newcombe's paired intervals for differences of 0/1 outcomes (the clean gain)
STRESS_SHARD_VERSION = 2  # the stress shards' own computation, unchanged since version 2 of the stage
EVALUATE_SHARD_OPTIONS = ("shards", "num_cases", "faithfulness_images", "faithfulness_steps", "cam_layer")  # stress.* in the shards' key
EVALUATE_OPTIONS = (*EVALUATE_SHARD_OPTIONS, "exclude_label_suspects")  # stress.* the evaluate stage reads
# stress.* the stress stage reads; not `compile`, which changes how its forward passes run, not what they give.
STRESS_OPTIONS = ("shards", "corruptions", "severities", "stress_limit", "calibration_bins")
SUSPECT_GALLERY = 20  # label suspects whose images labels.npz keeps for the gallery figure
FIELDS = ("correct", "confidence", "nll", "brier")  # per-image arrays of every stress cell


@dataclass(frozen=True)
class StageOutcome:
    """What a stage did: ran (and for how many seconds) or was skipped because its record matched."""

    name: str
    ran: bool
    seconds: float = 0.0


def training_key(config: ExperimentConfig) -> str:
    """The trained weights' inputs: the data, model and training options."""
    return config_key(config.to_dict(), TRAINING_SECTIONS)


def evaluation_key(config: ExperimentConfig) -> str:
    """The evaluate stage's inputs: the trained models' options and the stress options it reads."""
    return config_key(config.to_dict(), TRAINING_SECTIONS, {"stress": EVALUATE_OPTIONS}, EVALUATE_VERSION)


def evaluation_shard_key(config: ExperimentConfig) -> str:
    """What the saved evaluate shards were computed from (the stage's analysis can change without them)."""
    return config_key(config.to_dict(), TRAINING_SECTIONS, {"stress": EVALUATE_SHARD_OPTIONS}, EVALUATE_SHARD_VERSION)


def stress_key(config: ExperimentConfig) -> str:
    """The stress stage's inputs: the trained models' options and the stress options it reads."""
    return config_key(config.to_dict(), TRAINING_SECTIONS, {"stress": STRESS_OPTIONS}, STRESS_VERSION)


def stress_shard_key(config: ExperimentConfig) -> str:
    """What the saved stress shards were computed from (the stage's summary can change without them)."""
    return config_key(config.to_dict(), TRAINING_SECTIONS, {"stress": STRESS_OPTIONS}, STRESS_SHARD_VERSION)


# -- train -------------------------------------------------------------------------
def trained(run: RunFolder, variant: str, key: str, log) -> bool:
    """Training of `variant` finished with these options, and its model.pt is the one it wrote."""
    if not run.stage_done(f"train_{variant}", key):
        return False
    digest = run.weights_digest((variant,))  # "<variant>:missing" when model.pt is not a readable file
    if digest.endswith(":missing") or not run.stage_done(f"train_{variant}", key, digest):
        log(f"[{variant}] {run.variant_dir(variant) / 'model.pt'} is missing or not the file training wrote: "
            "training again (resumes from its last checkpoint)")
        return False
    return True


def train_stage(run: RunFolder, config: ExperimentConfig, splits: Splits, executor: Executor, storage: str, log) -> StageOutcome:
    """Both variants at once; a variant whose record and model.pt match these options is skipped.

    `storage` is where the trainers keep their checkpoints (a path or URI); a re-run with the
    same storage resumes each trainer from its last checkpoint.
    """
    key = training_key(config)
    todo = [v for v in VARIANTS if not trained(run, v, key, log)]
    for v in VARIANTS:
        if v not in todo:
            log(f"[{v}] training already finished: skipped")
    if not todo:
        return StageOutcome("train", ran=False)
    started = time.perf_counter()

    def on_done(variant: str, result: dict) -> None:
        state = result["state"]
        folder = run.variant_dir(variant)
        save_torch(folder / "model.pt", {"model": state["model"], "config": state["config"], "variant": variant})
        history = state["history"]
        write_json(folder / "history.json", {"variant": variant, "epochs": history, "test": state["test"]})
        run.mark_done(
            f"train_{variant}", time.perf_counter() - started, key, weights=run.weights_digest((variant,)),
            gpus_per_worker=result["gpus_per_worker"],
            train_seconds=sum(e["seconds"] for e in history),
        )
        log(f"[{variant}] training finished: test_acc {state['test']['acc']:.4f}")

    how = "in parallel on Ray Train" if executor.name == "ray" else f"one after the other ({executor.name})"
    log(f"training {', '.join(todo)} {how}")
    executor.train_variants(config, splits.arrays(), storage, todo, on_done, log=log)
    return StageOutcome("train", ran=True, seconds=time.perf_counter() - started)


def import_key(config: ExperimentConfig, checkpoint: str) -> str:
    """An imported model's inputs: the architecture options and the checkpoint file's contents."""
    from stress.artifacts import file_sha256
    from stress.paths import expand

    return config_key({**config.to_dict(), "checkpoint": file_sha256(expand(checkpoint, "--evaluate"))}, ("model", "checkpoint"))


def import_stage(run: RunFolder, config: ExperimentConfig, log) -> StageOutcome:
    """--evaluate: each checkpoint, checked against --model, copied to variants/<name>/model.pt (no training)."""
    from stress.evaluate.checkpoints import read_checkpoint

    started, ran = time.perf_counter(), False
    model_config = config.to_dict()["model"]
    for name, path in evaluate_entries(config):
        key = import_key(config, path)
        digest = run.weights_digest((name,))
        if run.stage_done(f"import_{name}", key, digest) and not digest.endswith(":missing"):
            log(f"[{name}] {path}: already imported: skipped")
            continue
        state = read_checkpoint(path, model_config)
        save_torch(run.variant_dir(name) / "model.pt", {"model": state, "config": config.to_dict(), "variant": name})
        run.mark_done(f"import_{name}", time.perf_counter() - started, key, weights=run.weights_digest((name,)), checkpoint=path,
                      parameters=int(sum(t.numel() for t in state.values())))
        log(f"[{name}] {path}: imported ({sum(t.numel() for t in state.values()):,} values)")
        ran = True
    return StageOutcome("import", ran=ran, seconds=time.perf_counter() - started)


# -- evaluate ----------------------------------------------------------------------
def load_weights(run: RunFolder, model_config: dict, names: tuple[str, ...] = VARIANTS) -> dict[str, dict]:
    """Every model's final weights, checked against the configured architecture."""
    weights = {}
    for v in names:
        path = run.variant_dir(v) / "model.pt"
        state = load_torch(path)
        try:
            load_model(state["model"], model_config, torch.device("cpu"))
        except (KeyError, RuntimeError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StressError(f"{path}: checkpoint does not match the configured model ({first})") from None
        weights[v] = state["model"]
    return weights


def predict_all(run: RunFolder, config: ExperimentConfig, executor: Executor, weights_ref: dict, images_ref, labels_ref,
                n: int, shards: int, log) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """evaluate_shard for every (variant, shard), saved ones reused: merged per-image results per variant, and what the
    tasks ran in (fanout.used_precision)."""
    bounds = shard_bounds(n, shards)
    layer = config.stress.cam_layer  # resolved: empty when the model has no layer for Grad-CAM
    kwargs = {
        "gradcam": bool(layer),
        "cam_layer": layer or None,
        "faithfulness_every": max(1, n // config.stress.faithfulness_images) if layer else 0,
        "faithfulness_steps": config.stress.faithfulness_steps,
        "seed": config.train.seed,
        "precision": config.train.precision,
    }
    model_config = config.to_dict()["model"]
    names = model_names(config)
    tasks = [Task(f"{v}_{start}_{stop}", (weights_ref[v], model_config, images_ref, labels_ref, start, stop), kwargs, f"{v}:{start}-{stop}")
             for v in names for start, stop in bounds]
    folder = run.path("eval", "shards")
    key = shard_key(run, evaluation_shard_key(config))

    def announce(reused: int, to_run: int) -> None:
        if reused:
            log(f"evaluate: {reused} shard(s) already saved, {to_run} to run")

    results = run_resumable(executor, evaluate_shard, tasks, folder, key, config.resources, log, announce=announce)
    precision = used_precision(list(results.values()), "evaluate", config.train.precision, log)
    return {v: merge_shards([results[f"{v}_{start}_{stop}"] for start, stop in bounds], n) for v in names}, precision


def write_prediction_table(run: RunFolder, labels: np.ndarray, merged: dict) -> None:
    """eval/predictions.csv: index, true class, then predicted class and confidence per model."""
    columns = ["index", "true"] + [f"{v}_{c}" for v in merged for c in ("predicted", "confidence")]
    lines = [",".join(columns)]
    for i in range(len(labels)):
        row = [str(i), str(int(labels[i]))]
        for v in merged:
            row += [str(int(merged[v]["predicted"][i])), f"{float(merged[v]['confidence'][i]):.6f}"]
        lines.append(",".join(row))
    write_bytes_atomic(run.path("eval", "predictions.csv"), ("\n".join(lines) + "\n").encode())


def analyse(run: RunFolder, config: ExperimentConfig, splits: Splits, weights: dict, merged: dict, log) -> None:
    """Failures, explanations, case maps and galleries from the merged results; writes eval/*."""
    images, labels = splits.test_x, splits.test_y
    characteristics = image_characteristics(images)
    write_npz(run.path("eval", "characteristics.npz"), **characteristics)
    names = model_names(config)
    started = time.perf_counter()
    audit, flags, texts = audit_labels(labels, {v: merged[v]["logits"] for v in names}, config.data.class_names, names)
    shown = [s["index"] for s in audit.get("suspects", [])[:SUSPECT_GALLERY] if len(s["flagged_by"]) == len(names)]
    write_npz(run.path("eval", "labels.npz"), **flags, gallery_indices=np.array(shown, dtype=np.int64),
              gallery_images=images[shown], gallery_labels=labels[shown])
    audit["seconds"] = time.perf_counter() - started
    every = suspect_set(flags)  # flagged by every model; labels.json lists the first MAX_SUSPECTS images flagged by any
    exclude = config.stress.exclude_label_suspects
    failures = analyse_failures(labels, merged, characteristics, config.stress.num_cases, config.data.class_names, names,
                                suspects=texts, exclude_suspects=exclude)
    for v in names if config.stress.cam_layer else ():
        for case in failures[v]["cases"]:
            case["figure"] = figure_path("case", v, rank=case["rank"], index=case["index"])  # drawn by the figures step
    layer = config.stress.cam_layer
    if layer:
        explanations = analyse_explanations(merged)
        for v in names:
            explanations[v]["timing"] = {
                "images": int(len(labels)),
                "seconds_predict": float(merged[v]["seconds_predict"][0]),
                "seconds_gradcam": float(merged[v]["seconds_gradcam"][0]),
                "gradcam_over_predict": float(merged[v]["seconds_gradcam"][0] / merged[v]["seconds_predict"][0]),
            }
        explanations["layer"] = layer
        model_config = config.to_dict()["model"]
        models = {v: load_model(weights[v], model_config, torch.device("cpu")) for v in names}
        write_npz(run.path("eval", "gradcam_cases.npz"),
                  **explain_cases(models, images, labels, merged, failures, input_stats(model_config), layer))
    else:
        explanations = {"skipped": GRADCAM_SKIPPED}
        run.path("eval", "gradcam_cases.npz").unlink(missing_ok=True)
    write_npz(run.path("eval", "failure_gallery.npz"), **failure_gallery(images, labels, merged, every if exclude else None))
    write_json(run.path("eval", "labels.json"), audit)
    write_json(run.path("eval", "failures.json"), failures)
    write_json(run.path("eval", "explanations.json"), explanations)
    if "skipped" in audit:
        log(f"label audit skipped: {audit['skipped']}")
    elif audit["unaudited_classes"]:
        log(f"label audit: {unaudited_text(audit['unaudited_classes'], 'test image')}")
    for v in names:
        f, a = failures[v], audit.get("models", {}).get(v)
        log(f"[{v}] {f['n_errors']} errors of {f['n_images']}; confident (>={CONFIDENT}): {f['confident_errors']['0.9']}, "
            f"(>=0.99): {f['confident_errors']['0.99']}; {len(f['cases'])} cases selected" + (" (label suspects excluded)" if exclude else ""))
        if a is None:
            continue
        log(f"[{v}] label audit: {audit_text(a)}")


def evaluate_stage(run: RunFolder, config: ExperimentConfig, splits: Splits, executor: Executor, log) -> StageOutcome:
    """Predictions and Grad-CAM statistics over test shards, then failures and explanations."""
    names = model_names(config)
    key, weights_id = evaluation_key(config), run.weights_digest(names)
    if run.stage_done("evaluate", key, weights_id):
        log("evaluate: already finished: skipped")
        return StageOutcome("evaluate", ran=False)
    started = time.perf_counter()
    n = len(splits.test_y)
    shards = config.stress.shards or executor.slots(config.resources)
    weights = load_weights(run, config.to_dict()["model"], names)
    weights_ref = {v: executor.put(w) for v, w in weights.items()}
    images_ref, labels_ref = executor.put(splits.test_x), executor.put(splits.test_y)
    log(f"evaluate: {len(names)} model(s) x {min(shards, n)} shards over {n} test images")
    merged, precision = predict_all(run, config, executor, weights_ref, images_ref, labels_ref, n, shards, log)
    write_npz(run.path("eval", "predictions.npz"), labels=splits.test_y, **{f"{v}_{k}": merged[v][k] for v in names for k in merged[v]})
    write_prediction_table(run, splits.test_y, merged)
    for v in names if config.stress.cam_layer else ():
        seconds_predict, seconds_gradcam = float(merged[v]["seconds_predict"][0]), float(merged[v]["seconds_gradcam"][0])
        log(f"[{v}] Grad-CAM at {config.stress.cam_layer} (predicted + true class) over {n} images: {seconds_gradcam:.3g} s "
            f"of task time, {seconds_gradcam / seconds_predict:.2f}x the evaluation pass ({seconds_predict:.3g} s)")
    if not config.stress.cam_layer:
        log(f"Grad-CAM skipped: {GRADCAM_SKIPPED}")
    analyse(run, config, splits, weights, merged, log)
    run.mark_done("evaluate", time.perf_counter() - started, key, weights=weights_id, shards=min(shards, n), precision=precision)
    return StageOutcome("evaluate", ran=True, seconds=time.perf_counter() - started)


# -- stress ------------------------------------------------------------------------
def _task_key(group: str, start: int, stop: int) -> str:
    return f"{group}@{start}-{stop}"


def stress_stage(run: RunFolder, config: ExperimentConfig, splits: Splits, executor: Executor, log) -> StageOutcome:
    """Corruptions x severities, shifts and calibration for both variants (needs the evaluate stage's predictions)."""
    if config.stress.skip_stress:
        log("stress: skipped (--skip-stress)")
        return StageOutcome("stress", ran=False)
    names = model_names(config)
    key, weights_id = stress_key(config), run.weights_digest(names)
    if run.stage_done("stress", key, weights_id):
        log("stress: already finished: skipped")
        return StageOutcome("stress", ran=False)
    started = time.perf_counter()
    s = config.stress
    plan = stress_plan(config, len(splits.test_y), executor)
    corruptions, severities, shifts, n, bounds, groups = plan.corruptions, plan.severities, plan.shifts, plan.images, plan.bounds, plan.groups
    if plan.unsupported:
        log(f"stress: corruptions skipped: {plan.unsupported}")
    images, labels = splits.test_x[:n], splits.test_y[:n]
    model_config = config.to_dict()["model"]
    weights = load_weights(run, model_config, names)
    weights_ref, images_ref, labels_ref = executor.put(weights), executor.put(images), executor.put(labels)
    compiled, why = compile_decision(config, len(splits.test_y), executor)
    log(f"stress: torch.compile {'on' if compiled else 'off'} ({why})")
    options = {"seed": config.train.seed, "precision": config.train.precision, "compile": compiled, "batch_size": STRESS_BATCH}
    tasks = [Task(_task_key(group, start, stop), (weights_ref, model_config, images_ref, labels_ref, start, stop, perturbations), options)
             for group, perturbations in groups.items() for start, stop in bounds]
    folder = run.path("eval", "stress_shards")
    log(f"stress: {len(corruptions)} corruptions x {len(severities)} severities and {len(shifts)} shifts on {n} images")
    # Validation logits for temperature scaling, one task per variant.
    val_ref, val_labels_ref = executor.put(splits.val_x), executor.put(splits.val_y)
    val_logits: dict[str, np.ndarray] = {}
    val_precisions: list[dict] = []

    def validation_done(task: str, value: dict) -> None:
        val_logits[task[4:]] = value["logits"]
        val_precisions.append({"precision": value["precision"]})

    val_calls = [(f"val:{v}", (weights[v], model_config, val_ref, val_labels_ref, 0, len(splits.val_y)),
                  {"gradcam": False, "precision": config.train.precision}) for v in names]
    executor.run(evaluate_shard, val_calls, config.resources, validation_done, log)
    results = run_resumable(executor, stress_shard, tasks, folder, shard_key(run, stress_shard_key(config)), config.resources, log,
                            flatten=flatten_cells, unflatten=unflatten_cells,
                            announce=lambda reused, to_run: log(f"stress: {to_run} tasks ({reused} already saved)"))
    precision = used_precision(list(results.values()) + val_precisions, "stress", config.train.precision, log)
    merged = merge_cells(results, bounds, groups)
    with np.load(run.path("eval", "predictions.npz")) as predictions:
        clean_correct = {v: predictions[f"{v}_correct"][:n] for v in names}
        test_logits = {v: predictions[f"{v}_logits"][:n] for v in names}
    robustness = summarise_robustness(clean_correct, merged, corruptions, severities, shifts, names)
    robustness["images"] = n
    robustness["corruptions_skipped"] = plan.unsupported
    robustness["corruption_tables"] = None if plan.unsupported else TABLE_SOURCES[config.model.image_size]
    robustness["precision"] = precision
    calibration = summarise_calibration(test_logits, val_logits, labels, splits.val_y, merged, corruptions, severities, s.calibration_bins)
    write_npz(run.path("eval", "stress_correct.npz"), **{cell: arrays["correct"] for cell, arrays in merged.items()})
    write_json(run.path("eval", "robustness.json"), robustness)
    write_json(run.path("eval", "calibration.json"), calibration)
    for other, gain in robustness["gains"].items():
        if "mean_corruption" in gain:
            g = gain["mean_corruption"]
            pair = "one trained pair" if not config.evaluate else "these models"
            log(f"{other} - {names[0]}: mean corruption acc {signed(g['mean'], 4)} "
                f"(95% CI over images {interval_text(g['low'], g['high'], 4)}; {pair})")
    for v in names:
        r, c = robustness[v], calibration[v]
        log(f"[{v}] clean {number(r['clean_acc'], 4)}  mean corruption acc {number(r['mean_corruption_acc'], 4)}  "
            f"ECE {number(c['ece'], 4)} -> {number(c['ece_after_temperature'], 4)} after T={number(c['temperature'], 2)}")
    seconds = time.perf_counter() - started
    run.mark_done("stress", seconds, key, weights=weights_id, tasks=len(tasks), compiled=compiled, compile_reason=why,
                  precision=precision)
    return StageOutcome("stress", ran=True, seconds=seconds)


def merge_cells(results: dict[str, dict], bounds: list[tuple[int, int]], groups: dict[str, list]) -> dict[str, dict[str, np.ndarray]]:
    """Per cell ("<variant>|<name>|<severity>"): per-image arrays over all shards, in image order."""
    merged: dict[str, dict[str, np.ndarray]] = {}
    for group in groups:
        parts = [results[_task_key(group, start, stop)] for start, stop in bounds]
        for cell in parts[0]:
            merged[cell] = {f: np.concatenate([p[cell][f] for p in parts]) for f in FIELDS}
    return merged
