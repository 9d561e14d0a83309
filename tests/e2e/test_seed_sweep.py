"""End-to-end: a 2-seed Ray Tune sweep on synthetic data, interrupted after its first trial and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SWEEP = REPO / "jobs" / "seed_sweep.py"
ARGS = [
    "--data", "synthetic", "--epochs", "1", "--val-size", "200", "--test-limit", "100", "--shards", "1",
    "--faithfulness-images", "10", "--skip-stress", "--seeds", "42", "43", "--max-concurrent", "1",
]

pytestmark = pytest.mark.e2e


def test_sweep_resumes_without_retraining_finished_trials(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, str(SWEEP), *ARGS, "--out", str(tmp_path), "--run-name", "sweep"]
    root = tmp_path / "sweep"
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as log:
        driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            deadline = time.monotonic() + 600
            while not (root / "seed_42" / "report.html").is_file():
                assert driver.poll() is None, first_log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the first trial did not finish in time"
                time.sleep(1)
            driver.send_signal(signal.SIGINT)  # the sweep's driver only
            returncode = driver.wait(timeout=180)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    first = first_log.read_text()
    # A trial's lines, its trainers' epochs included, name its seed (trials may run at once into one log).
    assert "[seed 42] evaluate: " in first and "[seed 42] [baseline] epoch 1/1" in first, first[-3000:]
    assert not [line for line in first.splitlines() if "] epoch " in line and "[seed " not in line]
    # Either the second trial was cut short (exit 2 asking for --resume) or it had just finished.
    assert returncode in (0, 2), first[-3000:]
    if returncode == 2:
        assert "re-run with --resume" in first
    finished_model = root / "seed_42" / "variants" / "baseline" / "model.pt"
    before = finished_model.stat().st_mtime_ns

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert finished_model.stat().st_mtime_ns == before  # seed 42 was not retrained
    assert log.count("[baseline] epoch 1/1") <= 1  # at most seed 43 trained in the resumed run

    summary = json.loads((root / "summary.json").read_text())
    assert summary["kind"] == "sweep" and summary["seeds"] == [42, 43]
    assert set(summary["per_seed"]) == {"42", "43"}
    paired = summary["aggregate"]["paired"]["test_acc"]
    per_seed = [summary["per_seed"][s]["augmented"]["test_acc"] - summary["per_seed"][s]["baseline"]["test_acc"] for s in ("42", "43")]
    assert paired["mean"] == pytest.approx(sum(per_seed) / 2)
    histogram = summary["stability"]["variants"]["baseline"]["fail_count_histogram"]
    assert len(histogram) == 3 and sum(histogram) == 100
    assert (root / "report.html").is_file() and (root / "figures" / "sweep_fail_counts.png").is_file()
