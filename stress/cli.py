"""Command-line helpers shared by the jobs: flags -> config overrides, one-line errors."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Callable

from stress.config import ExperimentConfig, load_config_file, merge
from stress.constants import DEFAULT_TASK_GPUS, DEFAULT_WORKER_GPUS
from stress.errors import Interrupted, StressError

# flag name -> (dotted config key, type, help)
EXPERIMENT_FLAGS: dict[str, tuple[str, Any, str]] = {
    "data": ("data.source", str, "torchvision (CIFAR-10, downloaded and cached), torchvision:cifar100 | torchvision:svhn, synthetic, "
                                 "or a path: a .npz file, an image folder (train/<class>/, test/<class>/) or cifar-10-batches-py [torchvision]"),
    "image-size": ("data.image_size", int, "resize every image to N x N on loading (32 gives the CIFAR-10-C corruptions); 0 = as stored [0]"),
    "model": ("model.name", str, "simple_cnn, torchvision:NAME (e.g. torchvision:resnet18), timm:NAME, or package.module:callable, "
                                 "a factory called with num_classes=, image_size= and model.kwargs from --config [simple_cnn]"),
    "cam-layer": ("stress.cam_layer", str, "module Grad-CAM hooks (a name from model.named_modules()); "
                                           "default: the last one whose output is a spatial map [auto]"),
    "out": ("out", str, "where run folders go: a path (local or shared filesystem) or an s3:// / gs:// URI [runs]"),
    "run-name": ("run_name", str, "run folder name; re-running the same name resumes it [default]"),
    "epochs": ("train.epochs", int, "training epochs per variant [15]"),
    "seed": ("train.seed", int, "seed for weights, data order and split [42]"),
    "batch-size": ("train.batch_size", int, "global batch size [128]"),
    "lr": ("train.lr", float, "Adam learning rate [1e-3]"),
    "precision": ("train.precision", str, "forward passes: fp32, bf16 (autocast, fp32 weights) or auto (bf16 where the CPU/GPU runs it fast) [fp32]"),
    "val-size": ("data.val_size", int, "validation images carved from the training set; 0 = a tenth of the training images in use (5000 of CIFAR-10's 50,000) [0]"),
    "train-limit": ("data.train_limit", int, "use only the first N training images, 0 = all [0]"),
    "test-limit": ("data.test_limit", int, "use only the first N test images, 0 = all [0]"),
    "workers-per-trainer": ("resources.workers_per_trainer", int, "data-parallel Ray Train workers per variant [1]"),
    "cpus-per-worker": ("resources.cpus_per_worker", float, "CPUs per training worker [1]"),
    "gpus-per-worker": ("resources.gpus_per_worker", float, f"GPUs per training worker; -1 = {DEFAULT_WORKER_GPUS:g} where the cluster has one GPU per worker, a shared fraction (1/2 on one GPU) for single-worker trainers where it has fewer, 0 without GPUs [-1]"),
    "task-cpus": ("resources.task_cpus", float, "CPUs per fan-out task [1]"),
    "task-gpus": ("resources.task_gpus", float, f"GPU fraction per fan-out task; -1 = {DEFAULT_TASK_GPUS:g} if the cluster has GPUs [-1]"),
    "node-wait": ("resources.node_wait_s", float, "on a joined cluster, seconds to wait for nodes that can hold the requests (autoscaling) before giving up [600]"),
    "max-failures": ("resources.max_failures", int, "training restarts from the last checkpoint after worker loss [1]"),
    "shards": ("stress.shards", int, "test-set shards per variant for the fan-out; 0 = one per free CPU/GPU slot [0]"),
    "num-cases": ("stress.num_cases", int, "confident failure cases to study per variant (>= 3) [8]"),
    "corruptions": ("stress.corruptions", str, "comma-separated corruption names; empty = all [all]"),
    "severities": ("stress.severities", str, "comma-separated severities in 1..5 [1,2,3,4,5]"),
    "stress-limit": ("stress.stress_limit", int, "corruption/shift evaluation on the first N test images, 0 = all [0]"),
    "faithfulness-images": ("stress.faithfulness_images", int, "images for deletion/insertion curves per variant [500]"),
    "slice-min-size": ("stress.slice_min_size", int, "test images a candidate failure slice needs to be tested [30]"),
    "audit-folds": ("stress.audit_folds", int, "folds of --audit-train-labels' cross-validation: K parallel trainings [5]"),
    "fourier-images": ("stress.fourier_images", int, "test images of the Fourier heat map (one perturbed copy per frequency); 0 = none [500]"),
    "fourier-norm": ("stress.fourier_norm", float, "L2 norm of each Fourier basis perturbation, on the [0, 1] pixel scale [4]"),
    "texture-images": ("stress.texture_images", int, "test images of the texture-versus-shape probes (patch shuffling, low/high-pass); 0 = none [10000]"),
    "adversarial-images": ("stress.adversarial_images", int, "test images attacked with PGD (L-inf and L2) and AutoAttack; 0 = no attacks [1000]"),
    "pgd-steps": ("stress.pgd_steps", int, "PGD iterations per attack [20]"),
    "compile": ("stress.compile", str, "torch.compile the stress and Fourier stages' forward passes: auto, on or off; about 15 s per worker, "
                                       "then 1.6-2x faster on a CPU; auto = on for simple_cnn on CPU tasks with at least 1,000 "
                                       "batches per worker (a full-size run), else off; --compile alone = on [auto]"),
    "browser-images": ("stress.browser_images", int, "confident failures (>= 0.9) per model in the report's failure browser, most confident first, each with both models' Grad-CAM; 0 = no browser [2000]"),
}


# Flags that may be given without a value, and the value that stands for.
BARE_VALUES = {"compile": "on"}

METAVARS = {"compile": "WHEN", "model": "NAME", "cam-layer": "NAME", "data": "SOURCE", "out": "PATH", "run-name": "NAME", "corruptions": "LIST", "severities": "LIST", "node-wait": "S"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error contract: one line `error: ...` on stderr, exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


# --help sections, in order; every experiment flag belongs to one (tests/unit/test_cli_commands.py checks it).
FLAG_GROUPS: dict[str, tuple[str, ...]] = {
    "data": ("data", "image-size", "val-size", "train-limit", "test-limit"),
    "model": ("model", "cifar-stem", "evaluate", "cam-layer"),
    "training": ("epochs", "seed", "batch-size", "lr", "precision"),
    "stress suite": ("skip-stress", "stress-limit", "corruptions", "severities", "num-cases", "faithfulness-images",
                     "slice-min-size", "exclude-label-suspects", "audit-train-labels", "audit-folds", "fourier-images",
                     "fourier-norm", "texture-images", "adversarial-images", "pgd-steps", "no-autoattack", "browser-images"),
    "resources": ("workers-per-trainer", "cpus-per-worker", "gpus-per-worker", "task-cpus", "task-gpus", "shards",
                  "node-wait", "max-failures", "compile", "address"),
    "output": ("out", "storage", "run-name", "mlflow-uri"),
}

# Switches: flag -> (dotted config key, help); given, they set the key to `True` (or, for no-*, `False`).
SWITCHES: dict[str, tuple[str, str]] = {
    "cifar-stem": ("model.cifar_stem", "torchvision/timm models: 3x3 stride-1 first convolution and no stem max-pool, for 32x32 images"),
    "exclude-label-suspects": ("stress.exclude_label_suspects",
                               "leave test images whose label the audit (cleanlab) finds suspect out of the failure cases and gallery"),
    "audit-train-labels": ("stress.audit_train_labels", "also audit the training labels: K-fold cross-validated probabilities from K "
                                                        "trainings of the baseline recipe (run in parallel on Ray Train), then confident learning"),
    "skip-stress": ("stress.skip_stress", "skip the stress families: corruptions, shifts, calibration, the Fourier heat map, "
                                          "the texture probes and the attacks"),
    "no-autoattack": ("stress.autoattack", "run PGD only, not AutoAttack (standard, L-inf 8/255; about 100 gradient steps per image still correct)"),
}


def add_experiment_flags(parser: argparse.ArgumentParser, address: bool = False, mlflow: bool = False) -> None:
    """The experiment's flags, in --help sections (FLAG_GROUPS); `address` adds --address, `mlflow` --mlflow-uri."""
    parser.add_argument("--config", metavar="FILE", help="JSON or YAML config; flags given on the command line override it")
    groups = {name: parser.add_argument_group(name) for name in FLAG_GROUPS}
    group_of = {flag: groups[name] for name, flags in FLAG_GROUPS.items() for flag in flags}
    for name, flags in FLAG_GROUPS.items():
        for flag in flags:
            group = group_of[flag]
            if flag in EXPERIMENT_FLAGS:
                _, kind, text = EXPERIMENT_FLAGS[flag]
                bare = {"nargs": "?", "const": BARE_VALUES[flag]} if flag in BARE_VALUES else {}
                group.add_argument(f"--{flag}", type=kind, default=None, help=text, metavar=METAVARS.get(flag, "N" if kind is int else "X"),
                                   **bare)
            elif flag in SWITCHES:
                group.add_argument(f"--{flag}", action="store_true", default=None, help=SWITCHES[flag][1])
            elif flag == "storage":
                group.add_argument("--storage", dest="out", default=None, help="same as --out", metavar="URI")
            elif flag == "evaluate":
                group.add_argument("--evaluate", action="append", default=None, metavar="NAME=CHECKPOINT",
                                   help="stress-test an already-trained model instead of training: a state dict (or a stress "
                                        "model.pt) for --model's architecture; repeat for more models, the first being the "
                                        "reference for comparisons")
            elif flag == "mlflow-uri":
                if mlflow:
                    group.add_argument("--mlflow-uri", metavar="URI", help="also log the finished run to this MLflow tracking URI "
                                       "(http://host:5000, databricks, file:/path): config, per-epoch metrics, headline, report "
                                       "and figures; needs pip install 'stress[mlflow]'")
            elif flag == "address":
                if address:
                    group.add_argument("--address", help="Ray address to join (default: $RAY_ADDRESS, else start Ray locally)")
            else:  # pragma: no cover - FLAG_GROUPS names a flag nobody defines
                raise AssertionError(f"--{flag} is in FLAG_GROUPS but has no definition")


def _parse_list(flag: str, text: str, kind) -> tuple:
    try:
        return tuple(kind(item.strip()) for item in text.split(",") if item.strip())
    except ValueError:
        raise StressError(f"--{flag}: expected a comma-separated list, got {text!r}") from None


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """Defaults, then the config file, then the flags that were given."""
    base = ExperimentConfig.from_dict(load_config_file(args.config)) if args.config else ExperimentConfig()
    overrides: dict[str, Any] = {}
    for flag, (key, _, _) in EXPERIMENT_FLAGS.items():
        value = getattr(args, flag.replace("-", "_"))
        if value is None:
            continue
        if flag == "corruptions":
            value = _parse_list(flag, value, str)
        elif flag == "severities":
            value = _parse_list(flag, value, int)
        overrides[key] = value
    for flag, (key, _) in SWITCHES.items():
        if getattr(args, flag.replace("-", "_"), None):
            overrides[key] = not flag.startswith("no-")
    if getattr(args, "evaluate", None):
        overrides["evaluate"] = tuple(args.evaluate)
    return merge(base, overrides)


def check_input_paths(config: ExperimentConfig) -> None:
    """The files a run reads (--data, --evaluate) and the run folder it writes (a local --out), refused in one line
    before torch and Ray are imported."""
    from pathlib import Path

    from stress import storage
    from stress.artifacts import RunFolder
    from stress.config import evaluate_entries
    from stress.data.dataset import check_source_path, is_named_source
    from stress.paths import checkpoint_file

    if not is_named_source(config.data.source):
        check_source_path(config.data.source)
    for _, path in evaluate_entries(config):
        checkpoint_file(path)
    if not storage.is_uri(config.out):
        RunFolder(Path(config.out) / config.run_name).check_writable()


def _interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def run_main(main: Callable[[], int]) -> None:
    """Run a job's main: user errors print one line and exit 2; SIGINT/SIGTERM exit 130.

    SIGTERM (what `ray job stop`, Kubernetes and batch schedulers send) is handled like
    Ctrl-C, so the driver stops between atomic writes and the run folder stays consistent.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        sys.exit(main())
    except StressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        # A run says what it saved (stress.errors.Interrupted); anything else claims nothing.
        print(str(exc) if isinstance(exc, Interrupted) and str(exc) else "interrupted", file=sys.stderr)
        sys.exit(130)
