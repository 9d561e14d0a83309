"""A sweep's label and slice blocks, from two real tiny seeds run in this process: consistent with each seed's files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_overrides

from stress.artifacts import RunFolder
from stress.config import ExperimentConfig, merge
from stress.constants import VARIANTS
from stress.data import load_dataset, split_dataset
from stress.driver.fanout import LocalExecutor
from stress.driver.pipeline import Pipeline
from stress.driver.sweep import write_sweep_summary
from stress.report.build import build_report
from stress.report.sweep_figures import write_sweep_figures

pytestmark = pytest.mark.slow  # trainings and in-process pipeline runs, seconds each: make test runs them, make unit does not

SEEDS = [1, 2]


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep") / "labels"
    base = merge(ExperimentConfig(), {**tiny_overrides(), "data.synthetic_test": 200, "stress.skip_stress": True,
                                      "stress.faithfulness_images": 8, "stress.faithfulness_steps": 4, "stress.shards": 2,
                                      "stress.slice_min_size": 10, "out": str(root)})
    for seed in SEEDS:
        Pipeline(merge(base, {"train.seed": seed, "run_name": f"seed_{seed}"}), log=lambda line: None,
                 executor=LocalExecutor()).run_all(check_resources=False)
    test_images = split_dataset(load_dataset(base.data), base.data, SEEDS[0]).test_x
    return root, write_sweep_summary(root, SEEDS, test_images)


def test_stable_suspects_are_the_images_every_seed_flags(sweep_root):
    root, summary = sweep_root
    for v in VARIANTS:
        flags = np.stack([np.load(root / f"seed_{s}" / "eval" / "labels.npz")[f"{v}_flagged"] for s in SEEDS])
        entry = summary["labels"]["variants"][v]
        assert entry["stable_suspect_indices"] == np.flatnonzero(flags.all(0)).tolist()[:100]
        assert entry["ever_flagged"] == int(flags.any(0).sum())
        shares = [json.loads((root / f"seed_{s}" / "summary.json").read_text())["labels"]["models"][v]["confident_failures"]["0.9"]["share"]
                  for s in SEEDS]
        recorded = entry["confident_failure_share"]
        assert recorded is None or recorded["values"] == [x for x in shares if x is not None]


def test_slices_are_followed_over_the_seeds_with_each_seed_s_numbers(sweep_root):
    root, summary = sweep_root
    records = [json.loads((root / f"seed_{s}" / "eval" / "slices.json").read_text()) for s in SEEDS]
    for v in VARIANTS:
        block = summary["slices"]["variants"][v]
        names = set.intersection(*({t["name"] for t in r["models"][v]["tested"] if t["kind"] != "cluster"} for r in records))
        assert block["followed"] == len(names) and block["n_seeds"] == 2
        for row in block["top"]:
            expected = [next(t["errors"] / t["size"] for t in r["models"][v]["tested"] if t["name"] == row["name"]) for r in records]
            assert row["error_rates"] == expected


def test_the_sweep_report_has_the_section(sweep_root):
    root, summary = sweep_root
    write_sweep_figures(RunFolder(root), lambda line: None)
    html, markdown = build_report(root)
    page = markdown.read_text()
    assert "## Label suspects and failure slices over seeds" in page
    if any(summary["labels"]["variants"][v]["stable_suspects"] for v in VARIANTS):
        assert "figures/sweep_stable_suspects_" in page
