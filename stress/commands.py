"""The `stress` command and its subcommands: run, sweep, report, screenshot.

`stress SUBCOMMAND ...`, `python -m stress SUBCOMMAND ...` and the scripts in jobs/ (what
`ray job submit` runs from a checkout) all build their parsers here, so their options, help
and output are the same. Each subcommand is a pair: `configure` adds its options to a parser,
`execute` runs it on the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from stress.cli import ArgumentParser, add_experiment_flags, check_input_paths, config_from_args, run_main
from stress.errors import StressError


@dataclass(frozen=True)
class Command:
    summary: str  # one line, for `stress --help`
    description: str  # the subcommand's --help text
    configure: Callable[[argparse.ArgumentParser], None]
    execute: Callable[[argparse.Namespace], int]


def version() -> str:
    """The installed distribution's version, or the source tree's when run from a checkout without installing."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("stress")
    except PackageNotFoundError:
        return "0.1.0 (source tree, not installed)"


# --- run ----------------------------------------------------------------------------------------------------

RUN_DESCRIPTION = """\
Train the baseline and the augmented SimpleCNN in parallel on Ray Train, then stress-test both
(or, with --evaluate, stress-test networks you already trained).

Locally `ray.init()` starts Ray on this machine; with RAY_ADDRESS set (or under `ray job submit`)
it joins that cluster. Re-running with the same --run-name resumes: finished stages are skipped.

examples:
  stress run                                              CIFAR-10, downloaded once and cached
  stress run --data cifar10.npz                           an offline copy
  stress run --data synthetic --epochs 1                  a smoke run, no download
  stress run --model torchvision:resnet18 --cifar-stem    your architecture, trained here
  stress run --model torchvision:resnet18 --cifar-stem --evaluate mine=mine.pt   already trained
"""


def configure_run(parser: argparse.ArgumentParser) -> None:
    add_experiment_flags(parser, address=True, mlflow=True)


def execute_run(args: argparse.Namespace) -> int:
    # One line at a time into a log file too (`> job.log`, `ray job logs`): progress shows as it happens, and no
    # buffered line is written twice by a process forked from this one.
    sys.stdout.reconfigure(line_buffering=True)
    config = config_from_args(args)
    check_input_paths(config)  # a mistyped path fails at once, not after seconds of imports
    if args.mlflow_uri:
        from stress.tracking import check_mlflow

        check_mlflow()  # before anything runs

    from stress.driver.pipeline import Pipeline

    pipeline = Pipeline(config)
    summary = pipeline.run_all(args.address)
    if args.mlflow_uri:
        from stress.tracking import log_run

        log_run(pipeline.run.root, args.mlflow_uri)
    for variant, values in summary["variants"].items():
        extra = f"best_val_acc {values['best_val_acc']:.4f}" if "best_val_acc" in values else f"from {values.get('checkpoint')}"
        print(f"{variant}: test_acc {values['test_acc']:.4f}  {extra}")
    print(f"run folder: {pipeline.run.root}")
    return 0


# --- sweep --------------------------------------------------------------------------------------------------

SWEEP_DESCRIPTION = """\
Repeat the whole stress test over several seeds with Ray Tune, then aggregate.

Each seed is one Tune trial running the same per-seed pipeline as `stress run` (both trainings on
Ray Train, failure mining, explanations, stress suite) into <out>/<run-name>/seed_<seed>/. The
sweep folder gets summary.json with `seeds`, `per_seed`, `aggregate` and `stability` blocks, and a
report whose statements about the augmentation rest on seed-level intervals.
Interrupted? Re-run with --resume.

example: stress sweep --data cifar10.npz --seeds 42 43 44 --stress-limit 2000
"""


def configure_sweep(parser: argparse.ArgumentParser) -> None:
    add_experiment_flags(parser, address=True)
    for action in parser._actions:  # a sweep has its own default folder (execute_sweep), so a single run is never overwritten
        if action.dest == "run_name" and action.option_strings == ["--run-name"]:
            action.help = "sweep folder name (a single run's folder is refused) [sweep]"
    group = parser.add_argument_group("sweep")
    seeds = group.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="the seeds to run, e.g. --seeds 42 43 44")
    seeds.add_argument("--num-seeds", type=int, metavar="N", help="run N seeds starting at 42 [3]")
    group.add_argument("--resume", action="store_true", help="continue an interrupted sweep: only unfinished trials run")
    group.add_argument("--max-concurrent", type=int, default=0, metavar="N", help="trials at once; 0 = as many as the cluster's CPUs hold [0]")


def execute_sweep(args: argparse.Namespace) -> int:
    sys.stdout.reconfigure(line_buffering=True)
    if args.run_name is None:
        args.run_name = "sweep"
    config = config_from_args(args)
    check_input_paths(config)
    seeds = args.seeds if args.seeds else list(range(42, 42 + (args.num_seeds if args.num_seeds is not None else 3)))

    from stress.driver.sweep import run_sweep

    run_sweep(config, seeds, resume=args.resume, max_concurrent=args.max_concurrent, address=args.address)
    return 0


# --- report -------------------------------------------------------------------------------------------------

REPORT_DESCRIPTION = """\
Rebuild the figures and the report of a finished run or sweep folder, from its files alone.

Reads only the run folder's JSON, .npz and PNG files: no model is loaded and nothing is trained,
so a copied run folder can be re-reported anywhere. Writes figures/*.png, report.html
(self-contained) and report.md into RUN_DIR; --pdf also prints report.pdf with headless Chromium.

example: stress report runs/default --pdf
"""


def configure_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `stress run` or `stress sweep` (holds summary.json)")
    parser.add_argument("--no-figures", action="store_true", help="keep the existing figures; only rebuild report.html and report.md")
    parser.add_argument("--pdf", action="store_true",
                        help="also write report.pdf (A4, through headless Chromium's print-to-PDF; needs chromium and chromium-driver)")


def execute_report(args: argparse.Namespace) -> int:
    from stress.artifacts import existing_run_folder

    existing_run_folder(args.run_dir)  # before matplotlib and the report modules are imported
    from stress.report.build import rebuild_report

    if args.pdf:
        from stress.report.browser import find_browser

        if find_browser() is None:  # before anything is rebuilt
            raise StressError("--pdf needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    html_path, md_path = rebuild_report(args.run_dir, figures=not args.no_figures)
    print(f"report: {html_path}")
    print(f"report: {md_path}")
    if args.pdf:
        from stress.report.browser import print_pdf

        pdf_path, pages = print_pdf(html_path, html_path.with_suffix(".pdf"))
        print(f"report: {pdf_path} ({pages} pages)")
    return 0


# --- screenshot ---------------------------------------------------------------------------------------------

SCREENSHOT_DESCRIPTION = """\
Save a full-page screenshot of a run's report.html with headless Chromium (for a README or a slide).

Needs the Debian packages chromium and chromium-driver and the Python package selenium. The browser
runs with a fresh profile and no network features; the report is opened as a file:// URL and needs
no network itself.

example: stress screenshot runs/default docs/report.png --width 1200
"""


def configure_screenshot(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder holding report.html (see `stress report`)")
    parser.add_argument("out", metavar="OUT.png", help="where to write the screenshot")
    parser.add_argument("--width", type=int, default=1200, help="viewport width in CSS pixels; 390 looks like a phone [1200]")
    parser.add_argument("--max-height", type=int, default=30000, help="cut the page after this many CSS pixels [30000]")
    parser.add_argument("--section", metavar="ID", help="capture only this section of the report, e.g. labels or robustness [whole page]")


def execute_screenshot(args: argparse.Namespace) -> int:
    from stress.paths import expand
    from stress.report.browser import screenshot_report

    report = expand(args.run_dir, "RUN_DIR") / "report.html"
    if not report.is_file():
        raise StressError(f"{report}: missing; build it with stress report {args.run_dir}")
    print(f"screenshot: {screenshot_report(report, args.out, args.width, args.max_height, args.section)}")
    return 0


COMMANDS: dict[str, Command] = {
    "run": Command("train both variants (or take yours) and stress-test them", RUN_DESCRIPTION, configure_run, execute_run),
    "sweep": Command("the same over several seeds (Ray Tune), with statistics over seeds", SWEEP_DESCRIPTION,
                     configure_sweep, execute_sweep),
    "report": Command("rebuild a run folder's figures and report (optionally a PDF)", REPORT_DESCRIPTION,
                      configure_report, execute_report),
    "screenshot": Command("screenshot a run's report with headless Chromium", SCREENSHOT_DESCRIPTION,
                          configure_screenshot, execute_screenshot),
}


def command_parser(name: str, prog: str | None = None) -> ArgumentParser:
    """The parser of one subcommand on its own (what a script in jobs/ uses)."""
    command = COMMANDS[name]
    parser = ArgumentParser(prog=prog, description=command.description, formatter_class=argparse.RawDescriptionHelpFormatter)
    command.configure(parser)
    parser.set_defaults(execute=command.execute)
    return parser


def build_parser(prog: str = "stress") -> ArgumentParser:
    """`stress` with its subcommands; each subparser is configured exactly as command_parser's."""
    parser = ArgumentParser(prog=prog, description="Stress-test image classifiers: where and why they fail, and what an "
                                                   "intervention changes. `stress SUBCOMMAND --help` for each.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subparsers = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND", parser_class=ArgumentParser)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.summary, description=command.description,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        command.configure(sub)
        sub.set_defaults(execute=command.execute)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "stress") -> None:
    """Entry point of `stress` and `python -m stress`: one-line errors (exit 2), SIGINT/SIGTERM exit 130."""
    parser = build_parser(prog)

    def body() -> int:
        args = parser.parse_args(argv)
        if not hasattr(args, "execute"):
            parser.print_help()
            return 2
        return args.execute(args)

    run_main(body)


def job_main(name: str, argv: Sequence[str] | None = None) -> None:
    """Entry point of a script in jobs/: the subcommand `name` with the script's own name as prog."""
    parser = command_parser(name)

    def body() -> int:
        args = parser.parse_args(argv)
        return args.execute(args)

    run_main(body)
