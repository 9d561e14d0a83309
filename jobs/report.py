"""Rebuild the figures and the report of a finished run folder, from its files alone.

Reads only the run folder's JSON, .npz and PNG files: no model is loaded and nothing is
trained, so a copied run folder can be re-reported anywhere. Writes figures/*.png,
report.html (self-contained) and report.md into RUN_DIR.

example: python jobs/report.py runs/default
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from stress.cli import ArgumentParser, run_main  # noqa: E402
from stress.errors import StressError  # noqa: E402
from stress.paths import expand  # noqa: E402


def main() -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by jobs/stress_test.py (holds summary.json)")
    parser.add_argument("--no-figures", action="store_true", help="keep the existing figures; only rebuild report.html and report.md")
    args = parser.parse_args()
    folder = expand(args.run_dir, "RUN_DIR")
    if not folder.is_dir():
        raise StressError(f"{folder}: no such run folder")
    if not (folder / "summary.json").is_file():
        raise StressError(f"{folder}: not a run folder (no summary.json)")

    from stress.artifacts import RunFolder, read_json
    from stress.report import build_report

    try:
        if not args.no_figures:
            summary = read_json(folder / "summary.json")
            if isinstance(summary, dict) and summary.get("kind") == "sweep":
                from stress.sweep_report import write_sweep_figures as draw
            else:
                from stress.figures import write_figures as draw
            draw(RunFolder(folder))
        html_path, md_path = build_report(folder)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        # The files' top-level structure is checked where they are read; this catches a value
        # deeper inside one that is not what the job that writes it writes.
        if os.environ.get("STRESS_DEBUG"):
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise StressError(
            f"{folder}: a file in the run folder has an unexpected structure ({type(exc).__name__}: {exc} "
            f"in {Path(where.filename).name}:{where.lineno}); re-run the job that wrote it (STRESS_DEBUG=1 shows the traceback)"
        ) from None
    print(f"report: {html_path}")
    print(f"report: {md_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
