"""stress: stress-test image classifiers, and explain where and why they fail.

The public API, for notebooks and scripts (the jobs in jobs/ are thin wrappers around it):

    import stress

    config = stress.load_config("my_run.yaml", **{"train.epochs": 5, "stress.stress_limit": 2000})
    summary = stress.run(config)                   # train both variants, evaluate, stress, report
    # any network and dataset: model.name "torchvision:resnet18" | "timm:NAME" | "package.module:callable";
    # already-trained models: evaluate=["mine=mine.pt", ...] skips training (the first is the reference)
    given = stress.run(stress.load_config(None, **{"model.name": "torchvision:resnet18", "evaluate": ["mine=mine.pt"]}))
    sweep = stress.sweep(config, seeds=[42, 43, 44])  # the same per seed, then statistics over seeds
    html, markdown = stress.build_report("runs/default")  # re-draw and re-render from the files alone

The package's folders are the pipeline's stages, in order:

    data/, models/, resolve.py   datasets; networks (SimpleCNN and the registry); what they fill into a config
    augment.py, train.py         batched crop/flip and normalisation; the training loop (plain PyTorch)
    perturb/     test-time uint8 -> uint8 transforms: CIFAR-10-C corruptions, geometric shifts
    evaluate/    task bodies over one shard of the test set: predictions, Grad-CAM, stress cells
    analyses/    merged arrays -> findings (failures, explanations, robustness, calibration, seeds)
    report/      run-folder files -> figures, report.html and report.md (no model is loaded)
    driver/      the stages in order; the only package that imports Ray

config.py, cli.py, constants.py, artifacts.py (run-folder files), storage.py (URIs) and
errors.py are shared by all of them; commands.py is the `stress` command (and jobs/'s parsers),
tracking.py sends a finished run to MLflow. Nothing here imports Ray until a function needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from stress.config import ExperimentConfig

__all__ = ["ExperimentConfig", "build_report", "load_config", "run", "sweep"]


def load_config(path: str | Path | None = None, **overrides: Any) -> ExperimentConfig:
    """A validated config: the defaults, then the JSON or YAML file at `path`, then `overrides`.

    Overrides use dotted keys, the same names as the config file's sections:
    `load_config(**{"data.source": "synthetic", "train.epochs": 2})`. Bad values raise
    stress.errors.StressError with a one-line message.
    """
    from stress.config import load_config_file, merge

    base = ExperimentConfig.from_dict(load_config_file(path)) if path is not None else ExperimentConfig()
    return merge(base, overrides) if overrides else base


def run(config: ExperimentConfig, address: str | None = None, log=print, executor=None) -> dict:
    """Run the whole stress test for one seed into <config.out>/<config.run_name>/ and return its summary.

    Starts Ray on this machine, or joins the cluster at `address` / $RAY_ADDRESS. Re-running
    with the same run name resumes: finished stages are skipped. `executor` chooses where the
    work runs; stress.driver.fanout.LocalExecutor() runs everything in this process, without Ray.
    """
    from stress.driver.pipeline import Pipeline

    return Pipeline(config, log=log, executor=executor).run_all(address)


def sweep(config: ExperimentConfig, seeds: Iterable[int] = (42, 43, 44), resume: bool = False,
          max_concurrent: int = 0, address: str | None = None, log=print) -> dict:
    """Run the stress test once per seed through Ray Tune, then aggregate over seeds.

    Writes <config.out>/<config.run_name>/seed_<seed>/ per seed and the sweep's summary.json,
    figures and report beside them; returns that summary. `resume=True` continues an
    interrupted sweep. Statements about the augmentation itself need this (seed-level intervals).
    """
    from stress.driver.sweep import run_sweep

    return run_sweep(config, list(seeds), resume=resume, max_concurrent=max_concurrent, address=address, log=log)


def build_report(run_dir: str | Path, figures: bool = True) -> tuple[Path, Path]:
    """Re-draw the figures (unless figures=False) and write report.html and report.md of a run or sweep folder.

    Reads only the folder's JSON, .npz and PNG files: no model is loaded. Returns the two paths.
    """
    from stress.report.build import rebuild_report

    return rebuild_report(run_dir, figures=figures)
