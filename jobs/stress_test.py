"""Train the baseline and the augmented SimpleCNN in parallel on Ray Train, then stress-test both.

Locally `ray.init()` starts Ray on this machine; with RAY_ADDRESS set (or under
`ray job submit`) it joins that cluster. Re-running with the same --run-name resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from stress.cli import ArgumentParser, add_experiment_flags, config_from_args, run_main  # noqa: E402


def main() -> int:
    # One line at a time into a log file too (`> job.log`, `ray job logs`): progress shows as it happens, and no
    # buffered line is written twice by a process forked from this one.
    sys.stdout.reconfigure(line_buffering=True)
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_experiment_flags(parser)
    parser.add_argument("--address", help="Ray address to join (default: $RAY_ADDRESS, else start Ray locally)")
    args = parser.parse_args()
    config = config_from_args(args)

    from stress.driver.pipeline import Pipeline

    pipeline = Pipeline(config)
    summary = pipeline.run_all(args.address)
    for variant, values in summary["variants"].items():
        extra = f"best_val_acc {values['best_val_acc']:.4f}" if "best_val_acc" in values else f"from {values.get('checkpoint')}"
        print(f"{variant}: test_acc {values['test_acc']:.4f}  {extra}")
    print(f"run folder: {pipeline.run.root}")
    return 0


if __name__ == "__main__":
    run_main(main)
