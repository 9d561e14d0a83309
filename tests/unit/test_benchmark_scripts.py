"""The scripts in benchmarks/ still run against the library they measure: every one prints its --help, and the
in-process ones that need no trained run run at their smallest settings on synthetic data.

They are run by hand, so nothing else notices when a change to the library breaks one (a new entry in a
task's result, a renamed argument). tests/unit/test_benchmarks_on_a_run.py runs the ones that read a run folder.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from benchmark_scripts import BENCHMARKS, HELP_ALL, ROOT, SCRIPTS, environment, run_script

from stress.constants import VARIANTS

pytestmark = pytest.mark.slow


def test_every_benchmark_prints_its_help():
    assert len(SCRIPTS) >= 19  # the glob found the folder
    done = subprocess.run([sys.executable, "-c", HELP_ALL, *(str(BENCHMARKS / s) for s in SCRIPTS)], cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_the_help_check_names_a_script_that_does_not_import(tmp_path):
    """The check above can fail: a script whose import breaks is named with its error."""
    broken = tmp_path / "bench_broken.py"
    broken.write_text("from stress.analyses.stats import no_such_function\n")
    done = subprocess.run([sys.executable, "-c", HELP_ALL, str(BENCHMARKS / SCRIPTS[0]), str(broken)], cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and f"{broken}: ImportError" in done.stdout and SCRIPTS[0] not in done.stdout


def test_fidelity_sweep_of_a_sweep_against_itself_finds_no_difference(tmp_path):
    """The same sweep given as both precisions: every paired difference is 0, equivalent at any margin, and the
    augmentation effect is the same on both sides."""
    sweep = ROOT / "tests" / "fixtures" / "sweep_small"
    result = run_script("fidelity_sweep.py", str(sweep), str(sweep), out=tmp_path / "sweep.json")
    assert len(result["seeds"]) >= 2 and len(result["equivalence"]) == len(VARIANTS) * 3
    for name, row in result["equivalence"].items():
        assert row["mean"] == 0.0 and row["fp32_mean"] == row["bf16_mean"] and row["equivalent"], name
    assert result["augmentation_effect"]["fp32"] == result["augmentation_effect"]["bf16"]


@pytest.mark.parametrize("name, args", [
    ("profile_train_step.py", ("--steps", "1", "--rounds", "1")),
    ("bench_road.py", ("--images", "12", "--rounds", "1", "--data", "synthetic")),
    ("bench_fourier.py", ("--data", "synthetic", "--images", "10", "--frequencies", "4", "--rounds", "1")),
    ("bench_corruptions.py", ("--images", "10", "--severities", "1", "--repeats", "1")),
    ("bench_stress_throughput.py", ("--data", "synthetic", "--images", "40", "--precision", "fp32", "--rounds", "1")),
], ids=lambda value: value if isinstance(value, str) else "")
def test_the_in_process_benchmarks_run_on_synthetic_data(name, args, tmp_path):
    result = run_script(name, *args, out=tmp_path / "result.json")
    assert result
    if name == "bench_road.py":  # dropping converged rows leaves every curve as it was, and pays for fewer rows
        assert result["every_row_largest_auc_difference"] == 0.0
        assert result["rows_per_call"]["slices"] < result["rows_per_call"]["every_row"]
        assert result["neighbour_sums_per_call"]["slices"] == result["neighbour_sums_per_call"]["every_row"]
