"""--audit-train-labels: folds partition the training split, planted flipped training labels are found from
out-of-fold probabilities, and a re-run trains only the folds it lacks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import tiny_overrides

from stress.artifacts import RunFolder
from stress.config import ExperimentConfig, merge
from stress.data import load_dataset, split_dataset
from stress.driver.fanout import LocalExecutor
from stress.driver.train_audit_stage import fold_arrays, folds, train_audit_stage
from stress.precision import resolve_precision
from stress.resolve import resolve

pytestmark = pytest.mark.slow  # trainings and in-process pipeline runs, seconds each: make test runs them, make unit does not


class CountingExecutor(LocalExecutor):
    def __init__(self):
        self.trained: list[str] = []

    def train_variants(self, config, arrays, storage, variants, on_done, log=print):
        self.trained += list(variants)
        super().train_variants(config, arrays, storage, variants, on_done)


def test_folds_partition_the_training_split_and_hold_each_fold_out():
    parts = folds(103, 4, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(103)) and [len(p) for p in parts] == [26, 26, 26, 25]
    assert folds(103, 4, seed=1)[0].tolist() == parts[0].tolist() and folds(103, 4, seed=2)[0].tolist() != parts[0].tolist()


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """3 folds of a small SimpleCNN on synthetic shapes, with 2 % of the training labels flipped (planted)."""
    config = merge(ExperimentConfig(), {**tiny_overrides(), "data.synthetic_train": 3000, "data.val_size": 100, "train.epochs": 10,
                                        "model.widths": (16, 32, 64), "model.hidden": 64,
                                        "stress.audit_train_labels": True, "stress.audit_folds": 3,
                                        "out": str(tmp_path_factory.mktemp("runs")), "run_name": "audit"})
    splits = split_dataset(load_dataset(config.data), config.data, config.train.seed)
    rng = np.random.default_rng(0)
    planted = np.sort(rng.choice(len(splits.train_y), int(0.02 * len(splits.train_y)), replace=False))
    noisy = splits.train_y.copy()
    noisy[planted] = (noisy[planted] + rng.integers(1, 10, planted.size)) % 10
    splits = dataclasses.replace(splits, train_y=noisy)
    config = resolve(config, splits).config
    run = RunFolder(tmp_path_factory.getbasetemp() / "audit_run")
    executor, lines = CountingExecutor(), []
    outcome = train_audit_stage(run, config, splits, executor, str(run.path("train")), lines.append)
    return config, splits, run, planted, executor, outcome, lines


def test_the_held_out_fold_is_never_trained_on(audited):
    config, splits, *_ = audited
    held_out = folds(len(splits.train_y), 3, config.train.seed)[0]
    arrays = fold_arrays(splits, held_out)
    assert len(arrays["train_y"]) + len(arrays["test_y"]) == len(splits.train_y)
    np.testing.assert_array_equal(arrays["test_x"], splits.train_x[held_out])
    assert not ({x.tobytes() for x in arrays["test_x"][:50]} & {x.tobytes() for x in arrays["train_x"]})


def test_planted_training_label_flips_are_found(audited):
    _, _, run, planted, executor, outcome, _ = audited
    assert outcome.ran and sorted(executor.trained) == ["fold1", "fold2", "fold3"]
    flagged = np.flatnonzero(np.load(run.path("eval", "train_labels.npz"))["flagged"])
    hits = np.intersect1d(flagged, planted).size
    assert hits / planted.size > 0.8 and hits / max(flagged.size, 1) > 0.8, (hits, planted.size, flagged.size)


def test_a_re_run_trains_only_the_missing_folds(audited):
    config, splits, run, *_ = audited
    executor = CountingExecutor()
    assert not train_audit_stage(run, config, splits, executor, str(run.path("train")), lambda line: None).ran
    run.path("stages", "train_audit.json").unlink()
    run.path("eval", "train_audit", "fold2.npz").unlink()
    lines: list[str] = []
    assert train_audit_stage(run, config, splits, executor, str(run.path("train")), lines.append).ran
    assert executor.trained == ["fold2"] and "train-label audit: 2 of 3 folds already saved" in lines


def test_train_labels_json_says_what_the_fold_trainings_ran_in(audited):
    """Each fold's precision over its epochs is saved with its logits and gathered in train_labels.json; a fold saved
    by older code (no entry) reads "unrecorded"."""
    config, splits, run, *_ = audited
    trained_in = resolve_precision(config.train.precision, "cpu")
    record = json.loads(run.path("eval", "train_labels.json").read_text())
    assert record["folds"]["training_precision"] == trained_in
    fold1 = run.path("eval", "train_audit", "fold1.npz")
    with np.load(fold1) as table:
        assert str(table["precision"]) == trained_in
        older = {k: table[k] for k in table.files if k != "precision"}
    np.savez(fold1, **older)
    run.path("stages", "train_audit.json").unlink()
    executor = CountingExecutor()
    assert train_audit_stage(run, config, splits, executor, str(run.path("train")), lambda line: None).ran and executor.trained == []
    record = json.loads(run.path("eval", "train_labels.json").read_text())
    assert record["folds"]["training_precision"] == f"mixed ({trained_in}, unrecorded)"
