"""The `stress` command: subcommands, one parser shared with jobs/*.py, grouped --help, --version."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stress.cli import EXPERIMENT_FLAGS, FLAG_GROUPS, SWITCHES
from stress.commands import COMMANDS, build_parser, command_parser

ROOT = Path(__file__).resolve().parents[2]
JOBS = {"run": "stress_test.py", "sweep": "seed_sweep.py", "report": "report.py", "screenshot": "screenshot.py"}


def _actions(parser: argparse.ArgumentParser) -> list[tuple]:
    return [(tuple(a.option_strings), a.dest, a.default, a.type, a.help, a.nargs, a.metavar, type(a).__name__)
            for a in parser._actions]


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_subcommand_and_the_job_parser_are_the_same(name):
    assert _actions(_subparser(name)) == _actions(command_parser(name))
    assert _subparser(name).description == command_parser(name).description


def _help(argv: list[str]) -> str:
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("name", sorted(JOBS))
def test_each_job_script_prints_its_subcommands_help(name):
    """What `ray job submit -- python jobs/X.py` runs takes the same options as `stress X` (planted: another subcommand differs)."""
    job = _help([sys.executable, f"jobs/{JOBS[name]}", "--help"])
    module = _help([sys.executable, "-m", "stress", name, "--help"])
    # Everything after the usage paragraph (whose prog names differ) is identical.
    assert job.split("\n\n", 1)[1] == module.split("\n\n", 1)[1]
    other = next(n for n in JOBS if n != name)
    assert _help([sys.executable, "-m", "stress", other, "--help"]).split("\n\n", 1)[1] != job.split("\n\n", 1)[1]


def test_every_experiment_flag_has_one_help_section():
    grouped = [flag for flags in FLAG_GROUPS.values() for flag in flags]
    assert len(grouped) == len(set(grouped))
    defined = set(EXPERIMENT_FLAGS) | set(SWITCHES) | {"storage", "evaluate", "address", "mlflow-uri"}
    assert set(grouped) == defined
    assert list(FLAG_GROUPS) == ["data", "model", "training", "stress suite", "resources", "output"]


def test_run_help_lists_its_sections_in_order():
    text = command_parser("run").format_help()
    positions = [text.index(f"\n{name}:\n") for name in FLAG_GROUPS]
    assert positions == sorted(positions)
    data_section = text[positions[0]:positions[1]]
    assert "--val-size" in data_section and "--epochs" not in data_section
    assert "--seeds" in command_parser("sweep").format_help().split("\nsweep:\n")[1]


def test_version_and_no_subcommand():
    out = subprocess.run([sys.executable, "-m", "stress", "--version"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("python -m stress 0.1.0")
    bare = subprocess.run([sys.executable, "-m", "stress"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bare.returncode == 2 and "run" in bare.stdout and "sweep" in bare.stdout


def test_a_bad_option_is_one_line_on_stderr():
    out = subprocess.run([sys.executable, "-m", "stress", "run", "--epochs", "many"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: argument --epochs")


def test_switches_reach_the_config():
    from stress.cli import config_from_args

    args = command_parser("run").parse_args(["--no-autoattack", "--model", "torchvision:resnet18", "--cifar-stem", "--skip-stress", "--val-size", "7"])
    config = config_from_args(args)
    assert config.stress.autoattack is False and config.model.cifar_stem is True and config.stress.skip_stress is True
    assert config.data.val_size == 7
    defaults = config_from_args(command_parser("run").parse_args([]))
    assert defaults.stress.autoattack is True and defaults.model.cifar_stem is False and defaults.data.val_size == 0


PROBE = """
import json, sys
from stress.commands import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    print(json.dumps({"code": exc.code, "torch": "torch" in sys.modules, "ray": "ray" in sys.modules}))
"""


def _probe(argv: list[str], cwd: Path) -> tuple[dict, str]:
    import json

    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize("argv, message", [
    (["run", "--data", "/nonexistent/cifar.npz"], "/nonexistent/cifar.npz: no such file or folder"),
    (["sweep", "--data", "/nonexistent/cifar.npz"], "/nonexistent/cifar.npz: no such file or folder"),
    (["run", "--data", "notes.txt"], "notes.txt: unsupported data file"),
    (["run", "--data", "synthetic", "--evaluate", "mine=missing.pt"], "missing.pt: no such checkpoint file"),
    (["run", "--data", "synthetic", "--out", "notes.txt/runs"], "output folder is not writable (a file is in the way"),
    (["sweep", "--data", "synthetic", "--out", "notes.txt/runs"], "output folder is not writable (a file is in the way"),
    (["report", "nowhere"], "nowhere: no such run folder"),
    (["report", "."], "not a run folder (no summary.json)"),
])
def test_a_missing_input_or_unwritable_output_is_refused_before_torch_and_ray_load(tmp_path, argv, message):
    (tmp_path / "notes.txt").write_text("not a dataset\n")
    out = [] if argv[0] == "report" or "--out" in argv else ["--out", str(tmp_path / "runs")]
    outcome, stderr = _probe([*argv, *out], tmp_path)
    assert outcome == {"code": 2, "torch": False, "ray": False}
    assert stderr.startswith("error: ") and message in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_the_import_probe_sees_an_error_that_only_the_pipeline_finds(tmp_path):
    # Planted: a model the pipeline cannot build is found after torch is imported, and the probe says so.
    outcome, stderr = _probe(["run", "--data", "synthetic", "--model", "no_such_module:factory",
                              "--out", str(tmp_path / "runs")], tmp_path)
    assert outcome["code"] == 2 and outcome["torch"] is True
    assert "no_such_module" in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists()
