"""Repeat the whole stress test over several seeds with Ray Tune, then aggregate.

Each seed is one Tune trial running the same per-seed pipeline as jobs/stress_test.py
(both trainings on Ray Train, failure mining, explanations, stress suite) into
<out>/<run-name>/seed_<seed>/. The sweep folder gets summary.json with `seeds`,
`per_seed`, `aggregate` and `stability` blocks. Interrupted? Re-run with --resume.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from stress.cli import ArgumentParser, add_experiment_flags, config_from_args, run_main  # noqa: E402
from stress.errors import StressError  # noqa: E402


def main() -> int:
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
    source = config.data.source
    if source not in ("torchvision", "synthetic") and not Path(source).expanduser().is_absolute():
        # Tune runs each trial in its own folder: pin a relative data path to where the sweep was started.
        from stress.config import merge

        config = merge(config, {"data.source": str(Path(source).expanduser().resolve())})
    seeds = args.seeds if args.seeds else list(range(42, 42 + (args.num_seeds if args.num_seeds is not None else 3)))
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise StressError(f"--seeds/--num-seeds: need distinct non-negative seeds, got {seeds}")
    if args.max_concurrent < 0:
        raise StressError(f"--max-concurrent must be >= 0, got {args.max_concurrent}")

    from stress import cluster
    from stress.artifacts import RunFolder
    from stress.data import load_dataset, split_dataset
    from stress.report import build_report
    from stress.sweep import write_sweep_summary
    from stress.sweep_report import write_sweep_figures

    root = RunFolder(Path(config.out).expanduser().resolve() / config.run_name)  # config.validate checked `out` expands
    dataset = load_dataset(config.data)  # validate the input before starting anything
    test_images = split_dataset(dataset, config.data, seeds[0]).test_x
    root.ensure_writable()
    started = time.perf_counter()
    cluster.check_resources(config.resources, cluster.connect(args.address), args.address)
    concurrent = args.max_concurrent or cluster.default_concurrent_trials(config.resources)
    print(f"sweep: seeds {seeds}, up to {concurrent} trial(s) at once, into {root.root}")
    base = config.__class__.from_dict({**config.to_dict(), "out": str(root.root)})
    finished = cluster.run_seed_sweep(base, seeds, str(root.root), args.resume, concurrent)
    missing = sorted(set(seeds) - set(finished))
    if missing:
        raise StressError(f"trials for seeds {missing} did not finish; re-run with --resume")
    summary = write_sweep_summary(root.root, seeds, test_images)
    write_sweep_figures(root, print)
    html, _ = build_report(root.root)
    print(f"report: {html}")
    aggregate = summary["aggregate"]
    if aggregate:
        for key in ("test_acc", "mean_corruption_acc"):
            if key in aggregate["paired"]:
                p = aggregate["paired"][key]
                print(f"augmented - baseline {key}: {p['mean']:+.4f} (95% CI {p['low']:+.4f} .. {p['high']:+.4f}, p = {p['p']:.3g}, n = {p['n']})")
    print(f"sweep finished in {time.perf_counter() - started:.0f} s: {root.root}")
    return 0


if __name__ == "__main__":
    run_main(main)
