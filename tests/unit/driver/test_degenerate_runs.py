"""Valid but degenerate inputs still give a complete report that says what could not be computed.

The job's own flags, parsed as `stress run` parses them, run the whole pipeline in this process
(LocalExecutor: the same stages, without Ray's start-up); the report is then rebuilt from the
folder alone by jobs/report.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stress.cli import ArgumentParser, add_experiment_flags, config_from_args
from stress.driver.fanout import LocalExecutor
from stress.driver.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[3]
REPORT = REPO / "jobs" / "report.py"
TINY = ["--epochs", "1", "--shards", "1", "--faithfulness-images", "10", "--stress-limit", "50",
        "--corruptions", "gaussian_noise,contrast", "--severities", "1,3", "--texture-images", "50",
        "--adversarial-images", "8", "--pgd-steps", "2", "--fourier-images", "10"]

pytestmark = pytest.mark.slow


def run_job(*args: str) -> None:
    """The pipeline of `stress run ARGS`, in this process."""
    parser = ArgumentParser()
    add_experiment_flags(parser)
    Pipeline(config_from_args(parser.parse_args(list(args))), log=lambda line: None, executor=LocalExecutor()).run_all()


def one_class_data(path: Path) -> Path:
    """Two classes, one of them a single training image; every test label is the other class."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    y_train = np.zeros(240, np.uint8)
    y_train[0] = 1  # a classifier needs two classes; the second has one image
    np.savez(path, x_train=x[:240], y_train=y_train, x_test=x[240:], y_test=np.zeros(60, np.uint8))
    return path


@pytest.mark.parametrize("case", ["diverged", "one_class_one_image"])
def test_degenerate_run_finishes_with_a_report_and_notes(tmp_path, case):
    if case == "diverged":  # --lr 1e6: NaN losses and logits; ECE and the faithfulness curves are not finite
        args = ["--data", "synthetic", "--val-size", "100", "--lr", "1e6"]
        expected = "expected calibration error could not be computed"
    else:  # almost every label is 0, a single test image: no failures, no successes of one kind, no spread
        args = ["--data", str(one_class_data(tmp_path / "one_class.npz")), "--val-size", "40", "--test-limit", "1"]
        expected = "there are no failures among the test images"
    run_job(*args, *TINY, "--out", str(tmp_path / "runs"), "--run-name", case)
    folder = tmp_path / "runs" / case
    markdown = (folder / "report.md").read_text()
    assert expected in markdown and not re.search(r"\b(None|nan|NaN|inf)\b", markdown)
    assert json.loads((folder / "summary.json").read_text())["run"]["name"] == case
    (folder / "report.md").unlink()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    rebuilt = subprocess.run([sys.executable, str(REPORT), str(folder)], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert expected in (folder / "report.md").read_text()
