"""The per-seed pipeline behind `jobs/stress_test.py`, `stress.run` and each seed of a sweep.

Stages run in order and each records its completion in the run folder, so a re-run
with the same run name skips what finished and resumes what did not:

    prepare   config.json, split.json (dataset fingerprint)         here
    train     both variants at once -> variants/<v>/{model.pt,history.json}   stress.driver.stages
    train_audit  --audit-train-labels: K fold trainings at once -> eval/train_labels.*  stress.driver.train_audit_stage
    evaluate  fan-out over test shards: predictions, Grad-CAM, label audit, failures, explanations   stages
    browser   here: Grad-CAM of every confident failure, for the report's failure browser   stress.driver.browser_stage
    slices    fan-out: penultimate-layer embeddings; failure slices               stress.driver.slice_stage
    stress    fan-out: corruptions, shifts, calibration                       stages
    fourier   fan-out: Fourier heat maps (frequency group x shard)            stress.driver.fourier_stage
    texture   fan-out: patch shuffling, low / high-pass probes                stress.driver.probe_stages
    attack    fan-out: PGD and AutoAttack, Grad-CAM of adversarial cases      stress.driver.probe_stages
    report    summary.json, figures, report.html/.md, manifest.json   here, stress.report

Where the work runs is the executor's business: Ray (`RayExecutor`, the default) or this
process (`stress.driver.fanout.LocalExecutor`).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from stress import storage
from stress.artifacts import SCHEMA_VERSION, RunFolder, read_json, read_record, write_json
from stress.config import ExperimentConfig, evaluate_entries, merge, without_later_defaults
from stress.constants import VARIANTS
from stress.data import Splits, load_dataset, split_dataset
from stress.driver import stages
from stress.driver.cluster import RayExecutor, python_versions
from stress.driver.browser_stage import browser_stage
from stress.driver.fanout import Executor, one_or_mixed
from stress.driver.fourier_stage import fourier_stage
from stress.driver.provenance import hardware, precision_record, source_state
from stress.driver.probe_stages import attack_stage, check_autoattack, texture_stage
from stress.driver.slice_stage import slices_stage
from stress.driver.train_audit_stage import train_audit_stage
from stress.driver.stages import TRAINING_SECTIONS
from stress.errors import Interrupted, StressError
from stress.paths import expand
from stress.report.build import build_report
from stress.report.figures import write_figures
from stress.resolve import Resolution, resolve


# What every interval in a single run's summary.json is taken over. None of them contains the
# variation between trainings: statements about the augmentation itself need a seed sweep,
# whose summary.json says "seeds" (aggregate.interval_unit).
INTERVAL_UNITS = {
    "failures": "test images of each trained model (Wilson intervals; bootstrap over images for Cohen's d)",
    "explanations": "test images of each trained model (t-intervals, paired where two orders are compared)",
    "robustness": "test images of one trained pair (t-intervals over images, paired for augmented − baseline)",
    "calibration": "test images of each trained model (bootstrap over images)",
    "labels": "confident failures (or test images) of each trained model (Wilson intervals)",
    "slices": "test images of one trained model (Wilson intervals at each slice's Holm-adjusted level)",
    "train_labels": "training images (Wilson interval), with --audit-train-labels",
    "fourier": "the heat map's test images of each trained model (t-intervals over images, paired for model differences; "
               "Holm over the three bands)",
    "texture": "the probed test images of each trained model (Wilson intervals; Newcombe's paired intervals and McNemar's test "
               "per probe for model differences, Holm over the probes; percentile bootstrap over images for the texture-reliance "
               "index, paired for model differences, Holm over its scales)",
    "adversarial": "the attacked test images of each trained model (Wilson intervals; Newcombe's paired intervals and McNemar's "
                   "exact test over images for model differences, Holm over attacks)",
    "intervention": "not measured in a single run: one trained pair; run jobs/seed_sweep.py",
}


def check_resume(run: RunFolder, config: ExperimentConfig, dataset_sha256: str | None = None, val_indices=None) -> None:
    """A run folder resumes only with the same data, model and training options, and the same dataset.

    Evaluation and resource options may change between re-runs; stages whose inputs
    changed are re-run (their records carry a key of those inputs). The dataset is compared
    first, by its SHA-256 fingerprint recorded in split.json when the run was prepared: the same
    path with other contents is another dataset (whose measured input statistics differ too).
    """
    split = run.path("split.json")
    if split.is_file():
        record = read_json(split)
        if not isinstance(record, dict) or not isinstance(record.get("val_indices"), list):
            raise StressError(f"{split}: not a valid split record (no list of val_indices), so the data this run "
                              "was trained on is unknown; use another --run-name")
        recorded = record.get("dataset_sha256")
        if dataset_sha256 and recorded and recorded != dataset_sha256:
            raise StressError(
                f"{run.root} was run on other data (sha256 {recorded[:12]}…, now {dataset_sha256[:12]}…); "
                "use another --run-name for this dataset"
            )
    path = run.path("config.json")
    if path.is_file():
        previous, current = read_json(path), config.to_dict()
        if not isinstance(previous, dict):
            raise StressError(f"{path}: not a config object; use another --run-name")
        fields = {section: list(current[section]) for section in TRAINING_SECTIONS}
        # Both sides without the options at their old-behaviour values (absent from older config.json files): every
        # field is compared, so a change to such a value (--precision bf16 -> fp32) is one too.
        previous, current = without_later_defaults(previous), without_later_defaults(current)
        changed = sorted(
            f"{section}.{key}"
            for section in TRAINING_SECTIONS
            for key in fields[section]
            if not isinstance(previous.get(section), dict) or previous[section].get(key) != current[section].get(key)
        )
        if list(previous.get("evaluate") or []) != list(current.get("evaluate") or []):
            changed.append("evaluate")
        if changed:
            raise StressError(
                f"{run.root} holds a run with a different config ({', '.join(changed) or 'top-level keys'}); "
                "use another --run-name or the same options"
            )
    if split.is_file() and val_indices is not None:
        if [int(i) for i in read_json(split)["val_indices"]] != [int(i) for i in val_indices]:
            raise StressError(f"{split}: the run's validation split differs from the one these options give; "
                              "use another --run-name")


def check_folder_kind(root: Path, kind: str) -> None:
    """A single run ("run") and a seed sweep ("sweep") never share a folder: each would overwrite the other's summary.json,
    figures and report. A sweep holds seed_<n> folders, and Ray Tune's tune/ from its start; a single run holds its
    config.json and split.json. Local folders only: a storage URI's folder is not looked at."""
    if not root.is_dir():
        return
    if kind == "run":
        seeds = sorted(p.name for p in root.glob("seed_*") if p.is_dir()) or (["tune"] if (root / "tune").is_dir() else [])
        if seeds:
            raise StressError(f"{root} holds a seed sweep ({', '.join(seeds[:3])}{', ...' if len(seeds) > 3 else ''}); "
                              "use another --run-name for a single run")
    elif any((root / name).is_file() for name in ("config.json", "split.json")):
        raise StressError(f"{root} holds a single run (its config.json and split.json); use another --run-name for the sweep")


def check_output_location(out: str) -> None:
    """Under `ray job submit` the job runs in a temporary copy of the working dir: refuse relative outputs there."""
    if storage.is_uri(out) or expand(out, "--out").is_absolute():
        return
    cwd = Path.cwd()
    if "runtime_resources" in cwd.parts:
        raise StressError(
            f"--out {out!r} is relative, but this job runs in Ray's temporary copy of the working dir ({cwd}); "
            "pass an absolute path on shared storage or an s3:// / gs:// URI"
        )


class Pipeline:
    """Runs the stages of one seed into one run folder."""

    def __init__(self, config: ExperimentConfig, log=print, executor: Executor | None = None):
        self.config = config
        self.executor: Executor = executor if executor is not None else RayExecutor()
        self.remote = f"{config.out.rstrip('/')}/{config.run_name}" if storage.is_uri(config.out) else None
        if self.remote:
            self.run = RunFolder(storage.staging_folder(config.out, config.run_name))
            self.train_storage = f"{self.remote}/train"
        else:
            self.run = RunFolder(Path(config.out) / config.run_name)
            self.train_storage = str(self.run.path("train"))
        self.log = log
        self.source = source_state()  # the code's commit, taken before anything runs
        self.stage_seconds: dict[str, float] = {}
        self.splits: Splits | None = None
        self.resolution: Resolution | None = None  # what the dataset and the model filled into the config
        self.locked = False  # whether this pipeline holds the run folder's lock
        self.remote_lock: str | None = None  # the token of the storage URI's run.lock this pipeline holds

    # -- stages ---------------------------------------------------------------
    def sync(self) -> None:
        """Mirror the run folder to remote storage (no-op for paths)."""
        if self.remote:
            storage.upload(self.run.root, self.remote)

    def check_inputs(self) -> None:
        """Everything that can be wrong with the input, checked before anything is created."""
        started = time.perf_counter()
        check_output_location(self.config.out)
        check_autoattack(self.config)
        if self.remote and storage.download(self.remote, self.run.root):
            self.log(f"resuming {self.remote} (copied to {self.run.root})")
        dataset = load_dataset(self.config.data)
        self.splits = split_dataset(dataset, self.config.data, self.config.train.seed)
        config, stats_source = self.recorded_stats()
        self.resolution = resolve(config, self.splits, stats_source)
        self.config = self.resolution.config
        if self.config.evaluate:  # every checkpoint readable and fitting the architecture, before anything is written
            from stress.evaluate.checkpoints import read_checkpoint

            for _, path in evaluate_entries(self.config):
                read_checkpoint(path, self.config.to_dict()["model"])
        check_folder_kind(self.run.root, "run")
        check_resume(self.run, self.config, self.splits.sha256, self.splits.val_indices)
        self.run.check_writable()
        self.stage_seconds["prepare"] = time.perf_counter() - started

    def recorded_stats(self) -> tuple[ExperimentConfig, str]:
        """The config, with the input statistics the --evaluate checkpoints' training recorded (this project's model.pt
        files) filled in where none are given, and how they were chosen."""
        if not self.config.evaluate or self.config.model.mean:
            return self.config, "given"
        from stress.evaluate.checkpoints import recorded_input_stats

        recorded = recorded_input_stats([path for _, path in evaluate_entries(self.config)])
        if recorded is None:
            return self.config, "given"
        return merge(self.config, {"model.mean": list(recorded[0]), "model.std": list(recorded[1])}), "recorded in the checkpoints (model.pt)"

    def prepare(self) -> None:
        run, config = self.run, self.config
        started = time.perf_counter()
        run.ensure_writable()
        if not run.path("config.json").is_file():
            # A re-run rewrites config.json only after its stages have finished (write_config), so the
            # file never claims options whose results are not in the folder yet.
            self.write_config()
        write_json(run.path("split.json"), {"seed": config.train.seed, "val_indices": self.splits.val_indices,
                                            "dataset_sha256": self.splits.sha256})
        self.stage_seconds["prepare"] += time.perf_counter() - started
        self.log(f"data: {self.splits.summary_line()}")
        m = self.config.model
        self.log(f"data: inputs standardised with mean {', '.join(f'{v:.4f}' for v in m.mean)}, "
                 f"std {', '.join(f'{v:.4f}' for v in m.std)} ({self.resolution.input_stats})")

    # -- outputs --------------------------------------------------------------
    def write_config(self) -> None:
        write_json(self.run.path("config.json"), self.config.to_dict())

    def write_summary(self) -> dict:
        run, config = self.run, self.config
        variants = self.imported_models() if config.evaluate else {}
        for v in () if config.evaluate else VARIANTS:
            history = read_record(run.variant_dir(v) / "history.json", "training history", keys=("epochs", "test"))
            epochs = history["epochs"]
            if not isinstance(epochs, list) or not epochs or not all(isinstance(e, dict) for e in epochs) or not isinstance(history["test"], dict):
                raise StressError(f"{run.variant_dir(v) / 'history.json'}: not a valid training history (epochs or test of the wrong type)")
            record = run.stage_record(f"train_{v}") or {}
            variants[v] = {
                "test_acc": history["test"]["acc"],
                "test_loss": history["test"]["loss"],
                "best_val_acc": max(e["val_acc"] for e in epochs),
                # The analysed weights are the last epoch's (no selection on validation), so say how they compare.
                "final_val_acc": epochs[-1]["val_acc"], "final_val_loss": epochs[-1]["val_loss"],
                "best_val_loss": min(e["val_loss"] for e in epochs),
                "best_val_loss_epoch": 1 + min(range(len(epochs)), key=lambda i: epochs[i]["val_loss"]),
                "epochs": len(epochs),
                "train_seconds": sum(e["seconds"] for e in epochs),
                "images_per_second": sum(e["images_per_second"] for e in epochs) / len(epochs),
                "gpus_per_worker": record.get("gpus_per_worker"),
                # As resolved on the trainer's device, every epoch's: a training resumed on other hardware can mix them.
                "precision": one_or_mixed([e.get("precision") for e in epochs]),
                "device": one_or_mixed([e.get("device") for e in epochs]),
            }
        summary = {
            "schema_version": SCHEMA_VERSION,
            "run": {"name": config.run_name, "folder": self.remote or str(run.root), "seed": config.train.seed},
            "dataset": self.splits.describe(),
            "variants": variants,
        }
        for section in ("failures", "explanations", "robustness", "calibration", "labels", "slices", "train_labels", "fourier", "texture", "adversarial"):
            path = run.path("eval", f"{section}.json")
            if path.is_file():
                summary[section] = read_json(path)
        if "suspects" in summary.get("labels", {}):  # labels.json lists up to 200 suspects; the rest are in eval/labels.npz
            summary["labels"]["suspects"] = summary["labels"]["suspects"][:20]
        if "train_labels" in summary:
            summary["train_labels"]["flagged_images"] = summary["train_labels"]["flagged_images"][:20]
        for v in summary.get("slices", {}).get("models", {}).values():
            v.pop("tested", None)  # every candidate tried, for sweeps: in eval/slices.json
        summary["interval_units"] = INTERVAL_UNITS
        write_json(run.path("summary.json"), summary)
        return summary

    def imported_models(self) -> dict:
        """summary.json's entry per --evaluate model: its checkpoint, and test accuracy and loss from the evaluate stage."""
        import numpy as np

        from stress.analyses.calibration import negative_log_likelihood

        out = {}
        with np.load(self.run.path("eval", "predictions.npz")) as table:
            for name, path in evaluate_entries(self.config):
                record = self.run.stage_record(f"import_{name}") or {}
                out[name] = {"checkpoint": path, "test_acc": float(table[f"{name}_correct"].mean()),
                             "test_loss": negative_log_likelihood(table[f"{name}_logits"], table["labels"]),
                             "parameters": record.get("parameters")}
        return out

    def write_manifest(self, started_at: float, resources: dict) -> None:
        previous = read_json(self.run.path("manifest.json")) if self.run.path("manifest.json").is_file() else {}
        earlier = previous.get("stage_seconds") if isinstance(previous, dict) else None
        # A manifest of the wrong structure is rewritten: it only carries timings of earlier attempts.
        stage_seconds = {**(earlier if isinstance(earlier, dict) else {}), **self.stage_seconds}
        write_json(
            self.run.path("manifest.json"),
            {
                "versions": python_versions(),
                **self.source,
                "dataset": self.splits.describe(),
                "seeds": {"train": self.config.train.seed, "split": self.config.train.seed},
                "model": {"name": self.config.model.name, **self.resolution.describe()},
                "training": ({"none": "models given with --evaluate", "models": dict(evaluate_entries(self.config))} if self.config.evaluate else
                             {"optimizer": "Adam", "loss": "cross-entropy",
                              "augmentation": f"RandomCrop({self.config.model.image_size}, padding) + RandomHorizontalFlip (augmented variant only)"}),
                "resources": {"cluster": resources, **self.config.to_dict()["resources"]},
                "hardware": hardware(),
                "precision": precision_record(self.config.train.precision, self.run),
                "compile": self.compile_record(),
                "started": dt.datetime.fromtimestamp(started_at, dt.timezone.utc).isoformat(),
                "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
                "stage_seconds": stage_seconds,
            },
        )

    def compile_record(self) -> dict:
        """--compile as asked, whether the stress and Fourier stages' forward passes ran compiled (None: the stage
        did not run), and why (one decision for both: stress.driver.forward_plan.compile_decision)."""
        records = {stage: self.run.stage_record(stage) or {} for stage in ("stress", "fourier")}
        why = records["stress"].get("compile_reason") or records["fourier"].get("compile_reason")
        return {"requested": self.config.stress.compile, **{k: r.get("compiled") for k, r in records.items()}, "why": why}

    def run_all(self, address: str | None = None, check_resources: bool = True) -> dict:
        try:
            return self._run_all(address, check_resources)
        except KeyboardInterrupt:
            raise Interrupted(self.interrupt_message()) from None
        finally:
            if self.remote_lock is not None:
                storage.release_lock(self.remote, self.remote_lock)
            if self.locked:
                self.run.release_lock()

    def interrupt_message(self) -> str:
        """What an interrupted run has saved: the stages whose records exist, and only those."""
        folder = self.run.root / "stages"
        saved = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        if not saved:
            return "interrupted before any stage finished: nothing was saved; re-run the same command to start again"
        return f"interrupted: saved stage(s) {', '.join(saved)} in {self.run.root}; re-run the same command to resume"

    def _run_all(self, address: str | None, check_resources: bool) -> dict:
        started_at = time.time()
        self.check_inputs()
        started = time.perf_counter()
        resources = self.executor.start(address, self.log)
        self.stage_seconds["ray_start"] = time.perf_counter() - started
        if check_resources:  # a sweep's driver checks once for all of its trials
            self.executor.check(self.config.resources, resources, address, self.log)
        # The first write: from here on this process is the run folder's only writer.
        self.run.ensure_writable()
        self.run.acquire_lock(self.log)
        self.locked = True
        if self.remote:
            self.remote_lock = storage.acquire_lock(self.remote, self.log)
        self.prepare()
        self.sync()
        self.log(f"{self.executor.name}: {resources}")
        run, config, splits, executor, log = self.run, self.config, self.splits, self.executor, self.log
        first = ((lambda: stages.import_stage(run, config, log)) if config.evaluate else
                 (lambda: stages.train_stage(run, config, splits, executor, self.train_storage, log)))
        for stage in (
            first,
            lambda: train_audit_stage(run, config, splits, executor, self.train_storage, log),
            lambda: stages.evaluate_stage(run, config, splits, executor, log),
            lambda: browser_stage(run, config, splits, log),
            lambda: slices_stage(run, config, splits, executor, log),
            lambda: stages.stress_stage(run, config, splits, executor, log),
            lambda: fourier_stage(run, config, splits, executor, log),
            lambda: texture_stage(run, config, splits, executor, log),
            lambda: attack_stage(run, config, splits, executor, log),
        ):
            outcome = stage()
            if outcome.ran:
                self.stage_seconds[outcome.name] = outcome.seconds
                self.sync()  # a storage URI holds every finished stage, whatever happens next
        self.write_config()  # every stage now matches these options
        summary = self.write_summary()
        started = time.perf_counter()
        write_figures(self.run, self.log)
        self.stage_seconds["figures"] = time.perf_counter() - started
        self.write_manifest(started_at, resources)
        started = time.perf_counter()
        html, _ = build_report(self.run.root)
        self.stage_seconds["report"] = time.perf_counter() - started
        self.write_manifest(started_at, resources)
        self.log(f"report: {html}")
        self.sync()
        return summary
