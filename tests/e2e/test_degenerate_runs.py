"""End-to-end: valid but degenerate inputs still give a complete report that says what could not be computed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
JOB, REPORT = REPO / "jobs" / "stress_test.py", REPO / "jobs" / "report.py"
TINY = ["--epochs", "1", "--shards", "1", "--faithfulness-images", "10", "--stress-limit", "50",
        "--corruptions", "gaussian_noise,contrast", "--severities", "1,3", "--texture-images", "50",
        "--adversarial-images", "8", "--pgd-steps", "2", "--fourier-images", "10"]

pytestmark = pytest.mark.e2e


def run(script: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=900, env=env, cwd=REPO)


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
    result = run(JOB, *args, *TINY, "--out", str(tmp_path / "runs"), "--run-name", case)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "runs" / case
    markdown = (folder / "report.md").read_text()
    assert expected in markdown and not re.search(r"\b(None|nan|NaN|inf)\b", markdown)
    assert json.loads((folder / "summary.json").read_text())["run"]["name"] == case
    (folder / "report.md").unlink()
    rebuilt = run(REPORT, str(folder))  # and the report rebuilds from the folder alone
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert expected in (folder / "report.md").read_text()
