"""Seed sweeps: the whole per-seed pipeline once per seed through Ray Tune, then the sweep summary.

`run_sweep` is what `jobs/seed_sweep.py` and `stress.sweep` call. Each seed is one Tune trial
(`seed_trial`) that runs `Pipeline` into <root>/seed_<seed>/; the statistics across seeds come
from stress.analyses.seeds, the sweep's figures and report from stress.report.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from stress import storage
from stress.analyses.adversarial import attacks_over_seeds
from stress.analyses.fourier import fourier_over_seeds
from stress.analyses.texture import texture_over_seeds
from stress.analyses.seed_slices import slices_over_seeds, suspicion_over_seeds
from stress.analyses.seeds import aggregate, failure_stability, seed_metrics
from stress.artifacts import SCHEMA_VERSION, RunFolder, read_json, write_json, write_npz
from stress.config import ExperimentConfig, merge
from stress.constants import VARIANTS
from stress.data import load_dataset, split_dataset
from stress.driver import cluster
from stress.driver.pipeline import Pipeline, check_folder_kind, check_output_location
from stress.driver.resources import check_resources, default_concurrent_trials
from stress.errors import StressError
from stress.report.build import build_report
from stress.report.figures import class_names
from stress.report.sweep_figures import write_sweep_figures


def run_seed(trial_config: dict, executor=None) -> dict:
    """The whole per-seed pipeline for one seed into <root>/seed_<seed> (a path or a storage URI); its summary."""
    seed = int(trial_config["seed"])
    base = ExperimentConfig.from_dict(trial_config["base"])
    config = merge(base, {"train.seed": seed, "run_name": f"seed_{seed}", "out": trial_config["root"]})
    tag = f"[seed {seed}] "  # trials run at once and print into one log
    executor = executor if executor is not None else cluster.RayExecutor(tag=tag)
    return Pipeline(config, log=lambda line: cluster.write_line(tag + line), executor=executor).run_all(check_resources=False)


def seed_trial(trial_config: dict) -> None:
    """Ray Tune function trainable: run_seed, then its test accuracies reported to Tune."""
    from ray import tune

    summary = run_seed(trial_config)
    tune.report({f"{v}_test_acc": summary["variants"][v]["test_acc"] for v in summary["variants"]} | {"seed": int(trial_config["seed"])})


def run_sweep(config: ExperimentConfig, seeds: list[int], resume: bool = False, max_concurrent: int = 0,
              address: str | None = None, log=print) -> dict:
    """Run every seed of `seeds` into <config.out>/<config.run_name>/seed_<seed>/, then aggregate and report.

    Returns the sweep's summary (also written to its summary.json). A relative data path is
    pinned to the current folder first (Tune runs each trial in its own folder).
    """
    source = config.data.source
    if source not in ("torchvision", "synthetic") and not Path(source).expanduser().is_absolute():
        config = merge(config, {"data.source": str(Path(source).expanduser().resolve())})
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise StressError(f"--seeds/--num-seeds: need distinct non-negative seeds, got {seeds}")
    if max_concurrent < 0:
        raise StressError(f"--max-concurrent must be >= 0, got {max_concurrent}")
    check_output_location(config.out)  # a relative --out under `ray job submit` would be lost
    if config.evaluate:
        raise StressError("--evaluate gives already-trained models, and a seed sweep trains one pair per seed; "
                          "run jobs/stress_test.py for given models")
    # The sweep's location: a path every node sees, or a storage URI that each trial mirrors its seed folder to
    # (wherever it ran) and that the driver reads back into a local staging folder for the summary and report.
    remote = f"{config.out.rstrip('/')}/{config.run_name}" if storage.is_uri(config.out) else None
    root = RunFolder(storage.staging_folder(config.out, config.run_name) if remote
                     else Path(config.out).expanduser().resolve() / config.run_name)  # config.validate checked `out` expands
    location = remote or str(root.root)
    if remote:
        storage.subfolders(remote)  # an unusable URI (scheme, credentials, bucket) is a one-line error before Ray starts
    if not remote:
        check_folder_kind(root.root, "sweep")
    dataset = load_dataset(config.data)  # validate the input before starting anything
    test_images = split_dataset(dataset, config.data, seeds[0]).test_x
    root.ensure_writable()
    started = time.perf_counter()
    check_resources(config.resources, cluster.connect(address, log=log), address, log)
    concurrent = max_concurrent or default_concurrent_trials(config.resources)
    log(f"sweep: seeds {seeds}, up to {concurrent} trial(s) at once, into {location}")
    base = ExperimentConfig.from_dict({**config.to_dict(), "out": location})
    finished = cluster.run_seed_sweep(base, seeds, location, resume, concurrent, seed_trial)
    missing = sorted(set(seeds) - set(finished))
    if missing:
        raise StressError(f"trials for seeds {missing} did not finish; re-run with --resume")
    if remote:
        storage.download(remote, root.root, skip=_not_for_the_summary)
    summary = write_sweep_summary(root.root, seeds, test_images, folder=location)
    write_sweep_figures(root, log)
    html, _ = build_report(root.root)
    if remote:
        storage.upload(root.root, remote)
        log(f"report: {remote}/report.html (local copy {html})")
    else:
        log(f"report: {html}")
    aggregate_block = summary["aggregate"]
    if aggregate_block:
        for key in ("test_acc", "mean_corruption_acc"):
            if key in aggregate_block["paired"]:
                p = aggregate_block["paired"][key]
                log(f"augmented - baseline {key}: {p['mean']:+.4f} (95% CI over seeds {p['low']:+.4f} .. {p['high']:+.4f}, "
                    f"p = {p['p']:.3g}, n = {p['n']})")
    log(f"sweep finished in {time.perf_counter() - started:.0f} s: {location}")
    return summary


def _not_for_the_summary(relative: str) -> bool:
    """What a sweep's driver leaves in storage: Tune's own files, each seed's checkpoints and weights."""
    parts = relative.split("/")
    return parts[0] == "tune" or (len(parts) > 1 and parts[1] in (*storage.SKIP_PARTS, "variants"))


def write_sweep_summary(root, seeds: list[int], test_images: np.ndarray, gallery_size: int = 24, folder: str | None = None) -> dict:
    """Read each seed's run folder under `root`, aggregate, and write the sweep's summary.json and stability.npz.

    `folder` is where the sweep lives, recorded in the summary (default `root`; a storage URI for a sweep kept there).
    """
    root = Path(root)
    per_seed_summary = {s: read_json(root / f"seed_{s}" / "summary.json") for s in seeds}
    per_seed = {s: seed_metrics(per_seed_summary[s]) for s in seeds}
    wrong = {v: [] for v in VARIANTS}
    labels = None
    for s in seeds:
        with np.load(root / f"seed_{s}" / "eval" / "predictions.npz") as table:
            labels = table["labels"]
            for v in VARIANTS:
                wrong[v].append(~table[f"{v}_correct"].astype(bool))
    stability = failure_stability({v: np.stack(rows) for v, rows in wrong.items()})
    first = per_seed_summary[seeds[0]]
    summary = {
        "schema_version": SCHEMA_VERSION,
        "kind": "sweep",
        "run": {"name": root.name, "folder": folder or str(root)},
        "dataset": first["dataset"],
        "class_names": list(class_names(RunFolder(root / f"seed_{seeds[0]}"))),
        "seeds": seeds,
        "per_seed": {str(s): per_seed[s] for s in seeds},
        "aggregate": aggregate(per_seed) if len(seeds) > 1 else None,
        "stability": stability,
    }
    fourier = fourier_over_seeds([per_seed_summary[s].get("fourier") for s in seeds])
    if fourier is not None:
        summary["fourier"] = fourier
    for key, over_seeds in (("texture", texture_over_seeds), ("adversarial", attacks_over_seeds)):
        record = over_seeds([per_seed_summary[s].get(key) for s in seeds])
        if record is not None:
            summary[key] = record
    audit = _labels_over_seeds(root, seeds, per_seed_summary)
    if audit is not None:
        summary["labels"], flags = audit
        summary["slices"] = _slices_over_seeds(root, seeds)
    gallery = {}
    if audit is not None:
        for v in VARIANTS:
            indices = np.asarray(summary["labels"]["variants"][v]["stable_suspect_indices"][:gallery_size], dtype=np.int64)
            gallery[f"{v}_suspect_indices"], gallery[f"{v}_suspect_images"] = indices, test_images[indices]
            gallery[f"{v}_suspect_labels"], gallery[f"{v}_flagged"] = labels[indices], flags[v]
    for v in VARIANTS:
        indices = np.asarray(stability["variants"][v]["always_wrong_indices"][:gallery_size], dtype=np.int64)
        gallery[f"{v}_indices"] = indices
        gallery[f"{v}_images"] = test_images[indices]
        gallery[f"{v}_labels"] = labels[indices]
    write_npz(root / "stability.npz", **gallery, **{f"{v}_wrong": np.stack(rows) for v, rows in wrong.items()})
    write_json(root / "summary.json", summary)
    return summary


def _labels_over_seeds(root: Path, seeds: list[int], summaries: dict[int, dict]) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The sweep's labels block and the flags (n_seeds, n_images) per variant; None if a seed has no label audit."""
    paths = [root / f"seed_{s}" / "eval" / "labels.npz" for s in seeds]
    if not all(p.is_file() for p in paths):
        return None
    flags = {v: [] for v in VARIANTS}
    for path in paths:
        with np.load(path) as table:
            if not all(f"{v}_flagged" in table.files for v in VARIANTS):
                return None  # a seed whose audit was skipped (labels.json says why)
            for v in VARIANTS:
                flags[v].append(table[f"{v}_flagged"].astype(bool))
    stacked = {v: np.stack(rows) for v, rows in flags.items()}
    shares = {v: [summaries[s].get("labels", {}).get("models", {}).get(v, {}).get("suspects_among_confident_failures", {})
                  .get("0.9", {}).get("share") for s in seeds] for v in VARIANTS}
    return suspicion_over_seeds(stacked, shares), stacked


def _slices_over_seeds(root: Path, seeds: list[int]) -> dict | None:
    """The sweep's slices block (stress.analyses.seed_slices); None if a seed has no slices.json."""
    paths = [root / f"seed_{s}" / "eval" / "slices.json" for s in seeds]
    if len(seeds) < 2 or not all(p.is_file() for p in paths):
        return None
    records = [read_json(p) for p in paths]
    return {"variants": {v: slices_over_seeds(records, v) for v in VARIANTS}, "interval_unit": "seeds (independent trainings)"}
