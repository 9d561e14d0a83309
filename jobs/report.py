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


def main() -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by jobs/stress_test.py (holds summary.json)")
    parser.add_argument("--no-figures", action="store_true", help="keep the existing figures; only rebuild report.html and report.md")
    args = parser.parse_args()

    from stress.report.build import rebuild_report

    html_path, md_path = rebuild_report(args.run_dir, figures=not args.no_figures)
    print(f"report: {html_path}")
    print(f"report: {md_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
