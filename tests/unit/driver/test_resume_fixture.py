"""A run folder written by the code before the package was split into stage folders still resumes.

tests/fixtures/run_flat_layout was written by `jobs/stress_test.py --config tests/fixtures/run_flat_layout.json`
at commit 41c13a1 (flat stress/ package), with its training checkpoints, figures and report left
out. Every stage record, saved shard and result file is as that code wrote it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import resolved_as_before

from stress.config import load_config_file, merge
from stress.constants import VARIANTS
from stress.driver.fanout import LocalExecutor
from stress.driver.pipeline import Pipeline

pytestmark = pytest.mark.slow  # trainings and in-process pipeline runs, seconds each: make test runs them, make unit does not

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


class OnlyNewWorkMayRun(LocalExecutor):
    """Runs the new stages' tasks (the slices stage's embeddings, the Fourier heat map, the texture probes, the attacks) and the
    stress stage's validation logits (its summary is newer: STRESS_VERSION 3); anything else is a finished stage running again."""

    def __init__(self):
        self.ran: list[str] = []

    def run(self, function, calls, resources, on_result, log):
        validation = function.__name__ == "evaluate_shard" and all(label.startswith("val:") for label, _, _ in calls)
        if calls and not validation and function.__name__ not in ("embed_shard", "fourier_shard", "texture_shard", "attack_shard"):
            raise AssertionError(f"a finished stage ran again: {function.__name__} x {len(calls)}")
        self.ran += [function.__name__] * len(calls)
        super().run(function, calls, resources, on_result, log)

    def train_variants(self, config, arrays, storage, variants, on_done, log=print):
        raise AssertionError(f"training ran again: {variants}")


def hashes(root: Path, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob(pattern))}


def without_folder(summary: dict) -> dict:
    return {**summary, "run": {k: v for k, v in summary["run"].items() if k != "folder"}}


def assert_contains(new, old, where="summary") -> None:
    """Every key of `old` is in `new` with an equal value (recursively for mappings)."""
    if isinstance(old, dict):
        assert isinstance(new, dict), where
        for key, value in old.items():
            assert key in new, f"{where}.{key}"
            assert_contains(new[key], value, f"{where}.{key}")
    elif isinstance(old, list) and old and isinstance(old[0], dict):  # e.g. failure cases, which gained entries
        assert isinstance(new, list) and len(new) == len(old), where
        for i, (a, b) in enumerate(zip(new, old)):
            assert_contains(a, b, f"{where}[{i}]")
    else:
        assert new == old, where


def align_newcombe(new, old) -> int:
    """In `new`, give every paired difference with Newcombe's interval (method "newcombe_paired") the interval of its
    counterpart in `old` (a t-interval, from the older code) after checking that both have the same mean; how many."""
    if not isinstance(new, dict) or not isinstance(old, dict):
        return 0
    if new.get("method") == "newcombe_paired" and "method" not in old:
        assert new["mean"] == old["mean"] and (new["low"], new["high"]) != (old["low"], old["high"])
        new.update(low=old["low"], high=old["high"])
        del new["method"]
        return 1
    return sum(align_newcombe(new[key], old[key]) for key in old if key in new)


def test_assert_contains_fails_on_a_changed_or_missing_number():
    with pytest.raises(AssertionError, match="summary.a.b"):
        assert_contains({"a": {"b": 2, "c": 3}}, {"a": {"b": 1}})
    with pytest.raises(AssertionError, match="summary.x"):
        assert_contains({"a": 1}, {"x": 1})
    with pytest.raises(AssertionError, match=r"summary.c\[1\].n"):
        assert_contains({"c": [{"n": 1}, {"n": 3, "m": 0}]}, {"c": [{"n": 1}, {"n": 2}]})
    assert_contains({"a": {"b": 1, "c": 3}, "d": 4}, {"a": {"b": 1}})


def test_a_run_folder_from_the_flat_layout_resumes_with_only_the_new_work_done(tmp_path):
    """Training is skipped; the evaluate and stress stages re-run their analyses on their saved shards (the label audit and
    Newcombe's paired interval for the clean gain are new), and the slices and Fourier stages run; every other number the
    old code wrote is unchanged."""
    old = FIXTURES / "run_flat_layout"
    shutil.copytree(old, tmp_path / "run_flat_layout")
    # The statistics and the layer that code used are given: measured ones would be another training.
    config = merge(resolved_as_before(load_config_file(FIXTURES / "run_flat_layout.json")),
                   {"out": str(tmp_path), "run_name": "run_flat_layout", "stress.fourier_images": 6,
                    "stress.texture_images": 6, "stress.adversarial_images": 4, "stress.pgd_steps": 2})
    lines: list[str] = []
    executor = OnlyNewWorkMayRun()
    summary = Pipeline(config, log=lines.append, executor=executor).run_all()
    for line in [f"[{v}] training already finished: skipped" for v in VARIANTS]:
        assert line in lines
    assert "evaluate: 4 shard(s) already saved, 0 to run" in lines and any(line.startswith("stress: 0 tasks (") for line in lines)
    assert set(executor.ran) == {"embed_shard", "fourier_shard", "texture_shard", "attack_shard", "evaluate_shard"}
    new = tmp_path / "run_flat_layout"
    for pattern in ("stages/train_*.json", "eval/stress_correct.npz", "eval/shards/*.npz", "eval/stress_shards/*.npz", "variants/*/*"):
        assert hashes(new, pattern) == hashes(old, pattern) and hashes(old, pattern), pattern
    # Differences of 0/1 outcomes (the clean gain; here also the corruption gain: one corruption at one severity) have
    # Newcombe's paired interval now, with the same mean; every other number of robustness.json is unchanged.
    robustness = {name: json.loads((folder / "eval" / "robustness.json").read_text()) for name, folder in (("new", new), ("old", old))}
    assert align_newcombe(robustness["new"], robustness["old"]) >= 2
    assert_contains(robustness["new"], robustness["old"], "robustness")
    assert all((new / "eval" / f"{name}.json").is_file() for name in ("labels", "slices", "fourier", "texture", "adversarial"))
    for name in ("failures", "explanations"):  # recomputed from the same shards: every old number, new entries added
        assert_contains(json.loads((new / "eval" / f"{name}.json").read_text()), json.loads((old / "eval" / f"{name}.json").read_text()), name)
    # The summary the new code writes from those files holds every number of the old code's, unchanged
    # (it may add entries, such as the dataset's class count).
    assert summary["variants"].keys() == set(VARIANTS)
    summaries = [without_folder(json.loads((folder / "summary.json").read_text())) for folder in (new, old)]
    assert align_newcombe(*summaries) >= 2
    assert_contains(*summaries)
    assert (new / "report.html").is_file()
