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

from stress.config import ExperimentConfig, load_config_file, merge
from stress.constants import VARIANTS
from stress.driver.fanout import LocalExecutor
from stress.driver.pipeline import Pipeline

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


class NothingMayRun(LocalExecutor):
    def run(self, function, calls, resources, on_result, log):
        raise AssertionError(f"a finished stage ran again: {function.__name__} x {len(calls)}")

    def train_variants(self, config, arrays, storage, variants, on_done):
        raise AssertionError(f"training ran again: {variants}")


def hashes(root: Path, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob(pattern))}


def without_folder(summary: dict) -> dict:
    return {**summary, "run": {k: v for k, v in summary["run"].items() if k != "folder"}}


def test_a_run_folder_from_the_flat_layout_resumes_with_every_stage_skipped(tmp_path):
    old = FIXTURES / "run_flat_layout"
    shutil.copytree(old, tmp_path / "run_flat_layout")
    config = merge(ExperimentConfig.from_dict(load_config_file(FIXTURES / "run_flat_layout.json")),
                   {"out": str(tmp_path), "run_name": "run_flat_layout"})
    lines: list[str] = []
    summary = Pipeline(config, log=lines.append, executor=NothingMayRun()).run_all()
    for line in [f"[{v}] training already finished: skipped" for v in VARIANTS] + [
            "evaluate: already finished: skipped", "stress: already finished: skipped"]:
        assert line in lines
    new = tmp_path / "run_flat_layout"
    for pattern in ("stages/*.json", "eval/*.json", "eval/*.npz", "eval/shards/*.npz", "eval/stress_shards/*.npz", "variants/*/*"):
        assert hashes(new, pattern) == hashes(old, pattern) and hashes(old, pattern), pattern
    # The summary the new code writes from those files holds the same numbers as the old code's.
    assert summary["variants"].keys() == set(VARIANTS)
    assert without_folder(json.loads((new / "summary.json").read_text())) == without_folder(json.loads((old / "summary.json").read_text()))
    assert (new / "report.html").is_file()
