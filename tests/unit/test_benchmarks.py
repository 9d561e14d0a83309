"""The scripts in benchmarks/ still run against the library they measure.

They are run by hand, so nothing else notices when a change to the library breaks one (a new entry in a
task's result, a renamed argument). Here every script prints its --help, and the ones that call the
library's task bodies run at their smallest settings, as a user runs them (a subprocess), on a tiny run
made in this process or on synthetic data. Their JSON is checked against what the run itself recorded
where the two must agree: the test accuracy, the attack stage's per-image outcomes, a sweep compared
with itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides

from stress.config import ExperimentConfig, merge
from stress.constants import VARIANTS
from stress.driver.fanout import LocalExecutor

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "common.py")
# Runs every script's --help in one interpreter: the imports are paid once, a failing script is named.
HELP_ALL = """
import contextlib, io, runpy, sys
failed = []
for path in sys.argv[1:]:
    sys.argv, text = [path, "--help"], io.StringIO()
    try:
        with contextlib.redirect_stdout(text):
            runpy.run_path(path, run_name="__main__")
        failed.append(f"{path}: --help did not exit")
    except SystemExit as stop:
        if stop.code not in (0, None) or not text.getvalue().startswith("usage: "):
            failed.append(f"{path}: exit {stop.code}: {text.getvalue()[:200]!r}")
    except BaseException as error:
        failed.append(f"{path}: {type(error).__name__}: {error}")
print("\\n".join(failed) or "all printed their usage")
sys.exit(1 if failed else 0)
"""


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(BENCHMARKS), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_script(name: str, *args: str, out: Path, timeout: int = 300) -> dict:
    """Runs benchmarks/NAME with ARGS and --out OUT from the repository root; returns the JSON it wrote."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), *args, "--out", str(out)], cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return json.loads(out.read_text())


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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run on synthetic data, every stage but the texture probes, made with stress.run in this process."""
    import stress

    out = tmp_path_factory.mktemp("runs")
    config = merge(ExperimentConfig(), {**tiny_overrides(), "out": str(out), "run_name": "tiny",
                                        "stress.corruptions": ("gaussian_noise", "contrast"), "stress.severities": (1,),
                                        "stress.stress_limit": 20, "stress.faithfulness_images": 10, "stress.fourier_images": 4,
                                        "stress.adversarial_images": 16, "stress.pgd_steps": 2})
    stress.run(config, log=lambda line: None, executor=LocalExecutor())
    return out / "tiny"


def test_fidelity_precision_gives_the_runs_own_test_accuracy_in_fp32(tiny_run, tmp_path):
    result = run_script("fidelity_precision.py", str(tiny_run), "--stress-images", "20", out=tmp_path / "fidelity.json")
    summary = json.loads((tiny_run / "summary.json").read_text())
    with np.load(tiny_run / "eval" / "predictions.npz") as table:
        explained = {v: len(table[f"{v}_faithful_indices"]) for v in VARIANTS}
    for v in VARIANTS:
        r = result["variants"][v]
        assert r["accuracy"]["fp32"] == pytest.approx(summary["variants"][v]["test_acc"], abs=1e-6)  # stored as float32
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
