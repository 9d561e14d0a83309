"""`pip install .` into a fresh virtual environment gives a working `stress` command, outside the checkout.

The fresh environment gets the project as a built wheel (no editable link to the checkout), and sees
the test environment's already-installed dependencies through a .pth file, so the test needs neither
the network nor the minutes of a torch download; `make setup` resolves the pinned dependencies
themselves from pyproject.toml on every CI run.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("fresh-venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    fresh_site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    # The dependencies (torch, ray, ...) of the environment running this test, but not its `stress`: a plain path
    # line does not run the editable finder's .pth of that environment.
    (fresh_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # ensurepip's own older setuptools would shadow the test environment's (which builds wheels itself).
    subprocess.run([python, "-m", "pip", "uninstall", "--quiet", "--yes", "setuptools"], capture_output=True, timeout=300)
    # A copy of the source: building a wheel writes build/ into the folder it builds.
    source = tmp_path_factory.mktemp("source") / "stress"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "docs", "__pycache__"))
    done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", str(source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return env_dir


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env["COLUMNS"] = "200"
    return env


def test_the_installed_command_comes_from_the_wheel_and_prints_its_help(fresh, tmp_path):
    stress = fresh / "bin" / "stress"
    assert stress.is_file()
    where = subprocess.run([fresh / "bin" / "python", "-c", "import stress; print(stress.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env=_clean_env(), timeout=120)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(fresh), where.stdout  # not the checkout
    top = subprocess.run([stress, "--help"], capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), timeout=120)
    assert top.returncode == 0 and all(name in top.stdout for name in ("run", "sweep", "report", "screenshot"))
    version = subprocess.run([stress, "--version"], capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), timeout=120)
    assert version.stdout.strip() == "stress 0.1.0"
    run_help = subprocess.run([stress, "run", "--help"], capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), timeout=120)
    for section in ("data:", "model:", "training:", "stress suite:", "resources:", "output:"):
        assert f"\n{section}\n" in run_help.stdout


def test_the_installed_command_runs_a_synthetic_job(fresh, tmp_path):
    args = ["run", "--data", "synthetic", "--epochs", "1", "--shards", "1", "--faithfulness-images", "8", "--stress-limit", "20",
            "--corruptions", "contrast", "--severities", "1", "--fourier-images", "0", "--texture-images", "20",
            "--adversarial-images", "0", "--out", str(tmp_path / "runs")]
    done = subprocess.run([fresh / "bin" / "stress", *args], capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = tmp_path / "runs" / "default"
    assert (folder / "report.html").is_file() and (folder / "summary.json").is_file()
    assert f"run folder: {folder}" in done.stdout
    assert "data: synthetic: 1,800 train / 200 val / 500 test images" in done.stdout  # the validation size followed the data
    import json

    config = json.loads((folder / "config.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert config["data"]["val_size"] == 200
    assert manifest["model"]["val_size"] == {"value": 200, "chosen": "a tenth of the training images in use"}
    # The log names the input statistics the run trained with, as config.json records them.
    mean, std = (", ".join(f"{v:.4f}" for v in config["model"][k]) for k in ("mean", "std"))
    assert f"data: inputs standardised with mean {mean}, std {std} (measured on the training split)" in done.stdout
