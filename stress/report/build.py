"""A run folder's files -> report.html (self-contained) and report.md; the sweep folder's too.

`build_report` renders the pages from summary.json (plus config.json and manifest.json);
`rebuild_report` re-draws the figures first, which is what `jobs/report.py` and
`stress.build_report` do. Neither loads a model.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

from stress.artifacts import RunFolder, existing_run_folder, read_json, read_record, write_bytes_atomic
from stress.constants import VARIANTS
from stress.report.statements import given_models
from stress.errors import StressError
from stress.report.blocks import render_html, render_markdown
from stress.report.failure_browser import failure_browser
from stress.report.figures import write_figures
from stress.report.run_report import compose
from stress.report.sweep_figures import write_sweep_figures
from stress.report.sweep_report import compose_sweep


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md into the run folder; returns their paths.

    A seed-sweep folder (summary.json with kind "sweep") gets the sweep report (stress.report.sweep_report).
    """
    run = RunFolder(existing_run_folder(run_dir))
    summary = read_record(run.path("summary.json"), "run summary")
    name = summary["run"].get("name", run.root.name) if isinstance(summary.get("run"), dict) else run.root.name
    if summary.get("kind") == "sweep":
        sections, title = compose_sweep(summary, run), f"Seed-sweep report: {name}"
    else:
        summary = read_record(run.path("summary.json"), "run summary", keys=("dataset", "variants"))
        for key in ("dataset", "variants"):
            if not isinstance(summary[key], dict):
                raise StressError(f"{run.path('summary.json')}: not a valid run summary ({key!r} is not an object)")
        required = tuple(summary["variants"]) if given_models(summary) else VARIANTS  # trained runs hold both variants
        if not required or any(not isinstance(summary["variants"].get(v), dict) for v in required):
            raise StressError(f"{run.path('summary.json')}: not a valid run summary ('variants' lacks one of {', '.join(required) or 'the models'})")
        for key in ("failures", "explanations", "robustness", "calibration"):
            if summary.get(key) is not None and not isinstance(summary[key], dict):
                raise StressError(f"{run.path('summary.json')}: not a valid run summary ({key!r} is neither an object nor null)")
        config = read_record(run.path("config.json"), "config") if run.path("config.json").is_file() else {}
        manifest = read_record(run.path("manifest.json"), "manifest") if run.path("manifest.json").is_file() else {}
        sections, title = compose(summary, config, manifest), f"Stress-test report: {name}"
        browser = failure_browser(run, summary, config)
        if browser is not None:  # after the failure cases
            at = next((i + 1 for i, s in enumerate(sections) if s.anchor == "failures"), len(sections))
            sections.insert(at, browser)
    html_path = write_bytes_atomic(run.path("report.html"), render_html(sections, run, title).encode())
    md_path = write_bytes_atomic(run.path("report.md"), render_markdown(sections, run, title).encode())
    return html_path, md_path


def rebuild_report(run_dir: str | Path, figures: bool = True, log=print) -> tuple[Path, Path]:
    """Re-draw the figures of a run or sweep folder (unless figures=False), then build_report.

    A value deep inside a file that is not of the structure the job writes becomes a one-line
    StressError naming the folder (STRESS_DEBUG=1 re-raises it with its traceback).
    """
    folder = existing_run_folder(run_dir)
    try:
        if figures:
            summary = read_json(folder / "summary.json")
            draw = write_sweep_figures if isinstance(summary, dict) and summary.get("kind") == "sweep" else write_figures
            draw(RunFolder(folder), log)
        return build_report(folder)
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
