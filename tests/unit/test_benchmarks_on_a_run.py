"""The scripts in benchmarks/ that read a finished run folder, run as a user runs them on a tiny run made in this
process, and checked against what the run itself recorded where the two must agree: the test accuracy, the
faithfulness images, the attack stage's per-image outcomes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import run_script
from conftest import tiny_overrides

from stress.config import ExperimentConfig, merge
from stress.constants import VARIANTS
from stress.driver.fanout import LocalExecutor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder on synthetic data with the stages these scripts read: training, evaluation, attacks (in this process)."""
    from stress.artifacts import RunFolder, write_json
    from stress.data import load_dataset, split_dataset
    from stress.driver import stages
    from stress.driver.probe_stages import attack_stage
    from stress.resolve import resolve

    out = tmp_path_factory.mktemp("runs")
    config = merge(ExperimentConfig(), {**tiny_overrides(), "out": str(out), "run_name": "tiny",
                                        "stress.corruptions": ("gaussian_noise", "contrast"), "stress.severities": (1,),
                                        "stress.faithfulness_images": 10, "stress.fourier_images": 4,
                                        "stress.adversarial_images": 16, "stress.pgd_steps": 2})
    run = RunFolder(out / "tiny")
    splits = split_dataset(load_dataset(config.data), config.data, config.train.seed)
    config = resolve(config, splits).config  # as the pipeline does: the data's input statistics, the Grad-CAM layer
    write_json(run.path("config.json"), config.to_dict())
    executor, quiet = LocalExecutor(), lambda line: None
    stages.train_stage(run, config, splits, executor, str(run.path("train")), quiet)
    stages.evaluate_stage(run, config, splits, executor, quiet)
    attack_stage(run, config, splits, executor, quiet)
    return run.root


def test_fidelity_precision_gives_the_runs_own_test_accuracy_in_fp32(tiny_run, tmp_path):
    result = run_script("fidelity_precision.py", str(tiny_run), "--stress-images", "20", out=tmp_path / "fidelity.json")
    with np.load(tiny_run / "eval" / "predictions.npz") as table:
        explained = {v: len(table[f"{v}_faithful_indices"]) for v in VARIANTS}
    for v in VARIANTS:
        r = result["variants"][v]
        assert r["accuracy"]["fp32"] == pytest.approx(json.loads((tiny_run / "variants" / v / "history.json").read_text())["test"]["acc"], abs=1e-6)  # stored as float32
        assert 0.0 <= r["top1_agreement"] <= 1.0 and 0.0 <= r["max_probability_change"] <= 1.0
        assert r["stress_images"] == 20 and r["faithfulness"]["deletion_auc"]["images"] == explained[v] > 0  # as the run chose them


def test_fidelity_compile_compares_every_stress_cell_of_the_run(tiny_run, tmp_path):
    from stress.constants import CORRUPTIONS
    from stress.perturb.shifts import list_shifts

    result = run_script("fidelity_compile.py", str(tiny_run), "--images", "8", "--fourier-images", "4", "--precision", "fp32",
                        out=tmp_path / "compile.json")
    fp32 = result["results"]["fp32"]
    assert fp32["cells"] == len(VARIANTS) * (len(CORRUPTIONS) + len(list_shifts()))
    assert fp32["evaluations"] == fp32["cells"] * 8 and fp32["flag_changes"] <= fp32["evaluations"] // 100


def test_bench_attack_stage_reproduces_the_runs_attack_outcomes_in_fp32(tiny_run, tmp_path):
    """Its fp32 pass runs the stage's attack_shard on the stage's images: per key, the share of images equals the run's record."""
    result = run_script("bench_attack_stage.py", "--run", str(tiny_run), "--data", "synthetic", "--tasks", "1",
                        "--precision", "fp32,bf16", out=tmp_path / "attack.json")
    assert result["images"] == 16
    fractions = result["precisions"]["fp32"]["fractions"]
    with np.load(tiny_run / "eval" / "adversarial.npz") as recorded:
        shares = {k: float(recorded[k].astype(bool).mean()) for k in fractions}
    assert fractions == pytest.approx(shares, abs=1e-12)
    rows = result["comparisons"]["bf16"]["keys"]
    assert rows.keys() == fractions.keys() and all(0.0 <= r["agreement"] <= 1.0 and r["n"] == 16 for r in rows.values())


def test_bench_label_audit_runs_on_the_run(tiny_run, tmp_path):
    result = run_script("bench_label_audit.py", "--run", str(tiny_run), "--rounds", "1", out=tmp_path / "audit.json")
    assert result["images"] == 40 and result["models"] == list(VARIANTS) and result["ratio_cpu"]["median"] > 0
