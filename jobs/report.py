"""Rebuild the figures and the report of a finished run folder, from its files alone.

Reads only the run folder's JSON, .npz and PNG files: no model is loaded and nothing is
trained, so a copied run folder can be re-reported anywhere. Writes figures/*.png,
report.html (self-contained) and report.md into RUN_DIR.

example: python jobs/report.py runs/default
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from stress.cli import ArgumentParser, run_main  # noqa: E402
from stress.errors import StressError  # noqa: E402


def main() -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by jobs/stress_test.py (holds summary.json)")
    parser.add_argument("--no-figures", action="store_true", help="keep the existing figures; only rebuild report.html and report.md")
    args = parser.parse_args()
    folder = Path(args.run_dir).expanduser()
    if not folder.is_dir():
        raise StressError(f"{folder}: no such run folder")
    if not (folder / "summary.json").is_file():
        raise StressError(f"{folder}: not a run folder (no summary.json)")

    from stress.artifacts import RunFolder, read_json
    from stress.report import build_report

    if not args.no_figures:
        summary = read_json(folder / "summary.json")
        if isinstance(summary, dict) and summary.get("kind") == "sweep":
            from stress.sweep_report import write_sweep_figures as draw
        else:
            from stress.figures import write_figures as draw
        draw(RunFolder(folder))
    html_path, md_path = build_report(folder)
    print(f"report: {html_path}")
    print(f"report: {md_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
