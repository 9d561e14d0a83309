"""Send a finished run folder to an MLflow tracking server or store (the optional `mlflow` extra).

`log_run(run_dir, uri)` reads only the run folder's files and logs, under an experiment named after
the run: the resolved config (config.json) as parameters with dotted names; per model, every epoch's
training metrics (variants/<model>/history.json) with the epoch as step; the headline metrics of
summary.json; and summary.json, config.json, manifest.json, the reports and the figures as artifacts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stress.errors import StressError

INSTALL = "pip install 'stress[mlflow]' (or pip install mlflow-skinny==3.17.2)"
MAX_PARAM = 500  # characters of a parameter's value kept (MLflow stores at most 6,000)
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "seconds", "images_per_second")


def check_mlflow() -> None:
    """A one-line error, before anything runs, when the extra is not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise StressError(f"--mlflow-uri needs MLflow, which is not installed: {INSTALL}") from None


def flatten(values: dict, prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 0.001}} -> {"train.lr": "0.001"}; lists as JSON, cut to MAX_PARAM characters."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text[:MAX_PARAM]
    return out


def headline_metrics(summary: dict) -> dict[str, float]:
    """Per model: test accuracy and loss, best validation accuracy, error count, confident failures, mean
    corruption accuracy, ECE before and after temperature; only the numbers the summary holds."""
    metrics: dict[str, float] = {}
    for model, values in summary.get("variants", {}).items():
        for key in ("test_acc", "test_loss", "best_val_acc"):
            if isinstance(values.get(key), (int, float)):
                metrics[f"{model}.{key}"] = float(values[key])
        failures = (summary.get("failures") or {}).get(model) or {}
        for threshold, count in (failures.get("confident_errors") or {}).items():
            metrics[f"{model}.confident_failures_{threshold}"] = float(count)
        robustness = (summary.get("robustness") or {}).get(model) or {}
        if isinstance(robustness.get("mean_corruption_acc"), (int, float)):
            metrics[f"{model}.mean_corruption_acc"] = float(robustness["mean_corruption_acc"])
        calibration = (summary.get("calibration") or {}).get(model) or {}
        for key in ("ece", "ece_after_temperature"):
            if isinstance(calibration.get(key), (int, float)):
                metrics[f"{model}.{key}"] = float(calibration[key])
    return metrics


def log_run(run_dir: str | Path, uri: str, log=print) -> str:
    """Log the finished run folder `run_dir` to the MLflow tracking URI `uri`; returns the MLflow run id."""
    check_mlflow()
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    root = Path(run_dir)
    if uri.startswith("file:"):
        # MLflow 3 keeps its file store in maintenance mode behind this switch; a file: URI asks for it.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    summary = json.loads((root / "summary.json").read_text())
    config = json.loads((root / "config.json").read_text()) if (root / "config.json").is_file() else {}
    client = MlflowClient(tracking_uri=uri)
    name = config.get("run_name") or root.name
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run = client.create_run(experiment_id, run_name=name, tags={"stress.run_folder": str(root.resolve())})
    run_id = run.info.run_id
    try:
        params = [Param(k, v) for k, v in flatten(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            client.log_batch(run_id, params=params[start:start + 100])
        metrics = []
        for model in summary.get("variants", {}):
            history = root / "variants" / model / "history.json"
            if history.is_file():
                for epoch in json.loads(history.read_text()).get("epochs", []):
                    metrics += [Metric(f"{model}.{key}", float(epoch[key]), 0, int(epoch["epoch"]))
                                for key in EPOCH_METRICS if isinstance(epoch.get(key), (int, float))]
        metrics += [Metric(key, value, 0, 0) for key, value in headline_metrics(summary).items()]
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start:start + 1000])
        for file in ("summary.json", "config.json", "manifest.json", "report.html", "report.md", "report.pdf"):
            if (root / file).is_file():
                client.log_artifact(run_id, str(root / file))
        if (root / "figures").is_dir():
            client.log_artifacts(run_id, str(root / "figures"), artifact_path="figures")
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    log(f"mlflow: run {run_id} in experiment {name!r} at {uri} ({len(params)} parameters, {len(metrics)} metric values)")
    return run_id
