"""Running the scripts in benchmarks/ as a user does, for tests/unit/test_benchmark_*.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
