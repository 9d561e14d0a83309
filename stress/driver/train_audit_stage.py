"""The train-label audit stage (--audit-train-labels): K-fold cross-validated probabilities, then confident learning.

The training split is cut into K seeded folds. Fold k's model is trained from scratch with the
baseline recipe (the seed's training without augmentation, same options) on the other K - 1
folds and predicts fold k, so every training image gets probabilities from a model that never
saw it. The K trainings are K Ray Train jobs, run at once (`Executor.train_variants` with one
array set per fold). Each finished fold's out-of-fold logits are saved at once
(eval/train_audit/fold<k>.npz), so an interrupted audit trains only the folds it lacks.
cleanlab then flags the training labels it finds suspect -> eval/train_labels.{json,npz}.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from stress.analyses.calibration import softmax
from stress.analyses.labels import METHOD, flag_label_issues, unaudited_classes, unaudited_text
from stress.analyses.stats import wilson_interval
from stress.artifacts import RunFolder, config_key, write_json, write_npz
from stress.augment import input_stats
from stress.config import ExperimentConfig
from stress.data import Splits
from stress.driver.fanout import UNRECORDED, Executor, one_or_mixed
from stress.driver.stages import TRAINING_SECTIONS, StageOutcome
from stress.evaluate.predict import predict_logits
from stress.evaluate.shards import load_model
from stress.precision import resolve_precision

TRAIN_AUDIT_VERSION = 1
GALLERY = 20  # flagged training images kept for the gallery figure
LISTED = 200  # flagged training images listed in train_labels.json


def train_audit_key(config: ExperimentConfig) -> str:
    """The audit's inputs: the data, model and training options, and the number of folds."""
    return config_key(config.to_dict(), TRAINING_SECTIONS, {"stress": ("audit_folds",)}, TRAIN_AUDIT_VERSION)


def folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """K disjoint, sorted index sets covering range(n), from a permutation seeded by `seed`."""
    order = np.random.default_rng(seed + 7_919).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def fold_arrays(splits: Splits, held_out: np.ndarray) -> dict[str, np.ndarray]:
    """Fold k's training set (the other folds), the run's validation split, and the held-out fold as its test set."""
    keep = np.ones(len(splits.train_y), dtype=bool)
    keep[held_out] = False
    return {"train_x": splits.train_x[keep], "train_y": splits.train_y[keep], "val_x": splits.val_x, "val_y": splits.val_y,
            "test_x": splits.train_x[held_out], "test_y": splits.train_y[held_out]}


def train_audit_stage(run: RunFolder, config: ExperimentConfig, splits: Splits, executor: Executor, storage: str, log) -> StageOutcome:
    if not config.stress.audit_train_labels:
        return StageOutcome("train_audit", ran=False)
    key = train_audit_key(config)
    if run.stage_done("train_audit", key):
        log("train-label audit: already finished: skipped")
        return StageOutcome("train_audit", ran=False)
    started = time.perf_counter()
    k = config.stress.audit_folds
    parts = folds(len(splits.train_y), k, config.train.seed)
    folder = run.path("eval", "train_audit")
    model_config = config.to_dict()["model"]
    names = [f"fold{i + 1}" for i in range(k)]
    saved = {}
    for name, held_out in zip(names, parts):
        path = folder / f"{name}.npz"
        if path.is_file():
            with np.load(path) as table:
                if str(table["key"]) == key and np.array_equal(table["indices"], held_out):
                    trained_in = str(table["precision"]) if "precision" in table.files else UNRECORDED  # saved by older code
                    saved[name] = {"logits": table["logits"], "accuracy": float(table["accuracy"]), "precision": trained_in}
    todo = [n for n in names if n not in saved]
    if saved:
        log(f"train-label audit: {len(saved)} of {k} folds already saved")

    def on_done(name: str, result: dict) -> None:
        held_out = parts[names.index(name)]
        model = load_model(result["state"]["model"], model_config, torch.device("cpu"))
        logits = predict_logits(model, torch.tensor(splits.train_x[held_out]), config.train.eval_batch_size, config.train.precision,
                                stats=input_stats(model_config)).numpy().astype(np.float32)
        accuracy = float((logits.argmax(1) == splits.train_y[held_out]).mean())
        # What the fold's training ran in, over its epochs ("mixed (bf16, fp32)" where a resume changed device).
        trained_in = one_or_mixed([e.get("precision") for e in result["state"]["history"]]) or UNRECORDED
        write_npz(folder / f"{name}.npz", indices=held_out, logits=logits, accuracy=np.array(accuracy), key=np.array(key),
                  precision=np.array(trained_in))
        saved[name] = {"logits": logits, "accuracy": accuracy, "precision": trained_in}
        log(f"[{name}] out-of-fold accuracy {accuracy:.4f} on {len(held_out)} training images")

    if todo:
        how = "in parallel on Ray Train" if executor.name == "ray" else f"one after the other ({executor.name})"
        log(f"train-label audit: {len(todo)} of {k} fold trainings (baseline recipe, {k - 1}/{k} of the training split each) {how}")
        executor.train_variants(config, {n: fold_arrays(splits, parts[names.index(n)]) for n in todo}, f"{storage.rstrip('/')}/audit",
                                todo, on_done, log=log)
    logits = np.zeros((len(splits.train_y), config.model.num_classes), dtype=np.float32)
    for name, held_out in zip(names, parts):
        logits[held_out] = saved[name]["logits"]
    record, arrays = audit_training_labels(splits, logits, config.data.class_names)
    record["folds"] = {"k": k, "accuracy": {n: saved[n]["accuracy"] for n in names}, "recipe": "baseline (no augmentation)",
                       "training_precision": one_or_mixed([saved[n]["precision"] for n in names])}
    seconds = time.perf_counter() - started
    record["seconds"] = seconds
    write_npz(run.path("eval", "train_labels.npz"), **arrays)
    write_json(run.path("eval", "train_labels.json"), record)
    log(f"train-label audit: {record['flagged']} of {record['n_images']} training labels flagged "
        f"(out-of-fold accuracy {record['out_of_fold_accuracy']:.4f})")
    if record["unaudited_classes"]:
        log(f"train-label audit: {unaudited_text(record['unaudited_classes'], 'training image')}")
    # The out-of-fold predictions run here, on the driver's CPU.
    run.mark_done("train_audit", seconds, key, folds=k, precision=resolve_precision(config.train.precision, "cpu"))
    return StageOutcome("train_audit", ran=True, seconds=seconds)


def audit_training_labels(splits: Splits, logits: np.ndarray, class_names: tuple[str, ...]) -> tuple[dict, dict[str, np.ndarray]]:
    """cleanlab on the out-of-fold probabilities: the record (train_labels.json) and the arrays (flags, gallery images)."""
    labels = splits.train_y.astype(np.int64)
    probs = softmax(logits)
    ranked = flag_label_issues(labels, probs)
    flagged = np.zeros(len(labels), dtype=bool)
    flagged[ranked] = True
    predicted, confidence = probs.argmax(1), probs.max(1)
    wrong = predicted != labels
    low, high = wilson_interval(int(flagged.sum()), len(labels))
    listed = [{"rank": r, "index": int(i), "given": int(labels[i]), "given_name": class_names[int(labels[i])],
               "predicted": int(predicted[i]), "predicted_name": class_names[int(predicted[i])], "confidence": float(confidence[i]),
               "given_probability": float(probs[i, labels[i]])} for r, i in enumerate(ranked[:LISTED])]
    per_class = np.bincount(labels[flagged], minlength=len(class_names))
    record = {
        "method": METHOD.replace("each model's test-set softmax", "out-of-fold softmax of K cross-validated trainings"),
        "n_images": int(len(labels)),
        "flagged": int(flagged.sum()),
        "share": float(flagged.mean()),
        "share_interval": [low, high],
        "out_of_fold_accuracy": float((~wrong).mean()),
        "errors_flagged": int((flagged & wrong).sum()),
        "errors": int(wrong.sum()),
        "per_class": {class_names[c]: int(per_class[c]) for c in range(len(class_names))},
        "flagged_images": listed,
        "interval_unit": "training images (Wilson interval)",
        "unaudited_classes": unaudited_classes(labels, class_names),
    }
    shown = ranked[:GALLERY]
    arrays = {"flagged": flagged, "logits": logits, "gallery_indices": shown, "gallery_images": splits.train_x[shown],
              "gallery_labels": labels[shown], "gallery_predicted": predicted[shown], "gallery_confidence": confidence[shown]}
    return record, arrays
