"""Repeat the whole stress test over several seeds with Ray Tune, then aggregate.

Each seed is one Tune trial running the same per-seed pipeline as jobs/stress_test.py
(both trainings on Ray Train, failure mining, explanations, stress suite) into
<out>/<run-name>/seed_<seed>/. The sweep folder gets summary.json with `seeds`,
`per_seed`, `aggregate` and `stability` blocks. Interrupted? Re-run with --resume.
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
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="the seeds to run, e.g. --seeds 42 43 44")
    group.add_argument("--num-seeds", type=int, metavar="N", help="run N seeds starting at 42 [3]")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep: only unfinished trials run")
    parser.add_argument("--max-concurrent", type=int, default=0, metavar="N", help="trials at once; 0 = as many as the cluster's CPUs hold [0]")
    parser.add_argument("--address", help="Ray address to join (default: $RAY_ADDRESS, else start Ray locally)")
    args = parser.parse_args()
    if args.run_name is None:
        args.run_name = "sweep"
    config = config_from_args(args)
    seeds = args.seeds if args.seeds else list(range(42, 42 + (args.num_seeds if args.num_seeds is not None else 3)))

    from stress.driver.sweep import run_sweep

    run_sweep(config, seeds, resume=args.resume, max_concurrent=args.max_concurrent, address=args.address)
    return 0


if __name__ == "__main__":
    run_main(main)
