"""stress.tracking: a run folder logged to a real MLflow file store, read back through MLflow's own client."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stress.errors import StressError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_small"
ROOT = Path(__file__).resolve().parents[2]


def _flat(values: dict, prefix: str = "") -> dict:
    """The slow way: every leaf of config.json under its dotted path."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out


@pytest.fixture
def run_folder(tmp_path) -> Path:
    root = tmp_path / "run_small"
    shutil.copytree(FIXTURE, root)
    from stress.report.build import build_report

    build_report(root)
    (root / "figures").mkdir(exist_ok=True)
    (root / "figures" / "one.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


def test_a_run_round_trips_through_an_mlflow_store(run_folder, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    from mlflow.tracking import MlflowClient

    from stress.tracking import log_run

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    lines = []
    run_id = log_run(run_folder, uri, log=lines.append)
    client = MlflowClient(tracking_uri=uri)
    config = json.loads((run_folder / "config.json").read_text())
    summary = json.loads((run_folder / "summary.json").read_text())
    experiment = client.get_experiment_by_name(config["run_name"])
    assert experiment is not None
    run = client.get_run(run_id)
    assert run.info.experiment_id == experiment.experiment_id and run.info.status == "FINISHED"
    expected = {k: (v if isinstance(v, str) else json.dumps(v))[:500] for k, v in _flat(config).items()}
    assert run.data.params == expected
    assert run.data.params["train.lr"] == str(config["train"]["lr"])
    for model in ("baseline", "augmented"):
        history = json.loads((run_folder / "variants" / model / "history.json").read_text())["epochs"]
        logged = client.get_metric_history(run_id, f"{model}.val_acc")
        assert [(m.step, m.value) for m in sorted(logged, key=lambda m: m.step)] == [(e["epoch"], e["val_acc"]) for e in history]
        assert run.data.metrics[f"{model}.test_acc"] == summary["variants"][model]["test_acc"]
        assert run.data.metrics[f"{model}.ece"] == summary["calibration"][model]["ece"]
        assert run.data.metrics[f"{model}.confident_failures_0.9"] == summary["failures"][model]["confident_errors"]["0.9"]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"summary.json", "config.json", "report.html", "report.md", "figures"} <= artifacts
    assert [a.path for a in client.list_artifacts(run_id, "figures")] == ["figures/one.png"]
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="summary.json", tracking_uri=uri))
    assert json.loads(local.read_text()) == summary
    assert lines and lines[0].startswith(f"mlflow: run {run_id} in experiment")
    # A second run of the same folder is a second MLflow run in the same experiment.
    assert log_run(run_folder, uri, log=lines.append) != run_id
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_without_the_extra_the_option_is_a_one_line_error(monkeypatch):
    import builtins

    from stress import tracking

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(StressError, match=r"--mlflow-uri needs MLflow, which is not installed: pip install 'stress\[mlflow\]'"):
        tracking.check_mlflow()


def test_the_run_command_checks_for_mlflow_before_it_starts(tmp_path):
    """With mlflow hidden, `stress run --mlflow-uri` stops with one line and writes no run folder."""
    hide = ("import sys; sys.modules['mlflow'] = None; from stress.commands import main; "
            "main(['run', '--data', 'synthetic', '--out', sys.argv[1], '--mlflow-uri', 'file:/nowhere'])")
    done = subprocess.run([sys.executable, "-c", hide, str(tmp_path / "runs")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: --mlflow-uri needs MLflow") and done.stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists()
