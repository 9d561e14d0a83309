"""Frozen dataclass configs, combined into one ExperimentConfig.

Parsing of files and flags happens only at the edges (`jobs/`); the library
receives a validated ExperimentConfig. `to_dict`/`from_dict` round-trip it, and
the same dict is written next to every checkpoint and result.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from stress.constants import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from stress.errors import StressError
from stress.paths import check_regular_file, expand

PRECISIONS = ("fp32", "bf16", "auto")  # see stress.precision
COMPILE_SETTINGS = ("auto", "on", "off")  # see stress.precision.resolve_compile
# Fields added after run folders already existed, with the value that reproduces the old
# behaviour. At that value they are left out of stage keys and count as present in an older
# config.json, so run folders written before them keep resuming.
# Values that the dataset or the model resolves (class names, input statistics, the Grad-CAM layer)
# count here at what the seed's CIFAR-10 and SimpleCNN resolved to before they were recorded.
LATER_FIELDS: dict[tuple[str, str], Any] = {
    ("train", "precision"): "fp32", ("stress", "compile"): "off",
    ("data", "class_names"): list(CIFAR10_CLASSES), ("data", "image_size"): 0,
    ("data", "synthetic_classes"): 10, ("data", "synthetic_size"): 32,
    ("model", "kwargs"): {}, ("model", "cifar_stem"): False,
    ("model", "mean"): list(CIFAR10_MEAN), ("model", "std"): list(CIFAR10_STD),
    ("stress", "cam_layer"): "features.relu3",
    ("stress", "exclude_label_suspects"): False,
}


def without_later_defaults(config_dict: dict) -> dict:
    """`config_dict` minus the LATER_FIELDS that sit at their old-behaviour value."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config_dict.items()}
    for (section, name), value in LATER_FIELDS.items():
        if isinstance(out.get(section), dict) and out[section].get(name, value) == value:
            out[section].pop(name, None)
    return out
MAX_SEED = 2**32 - 1  # numpy's seed range; derived generator seeds stay far below 2**63


@dataclass(frozen=True)
class DataConfig:
    source: str = "torchvision"  # "torchvision" | "synthetic" | path to a .npz or cifar-10-batches-py folder
    val_size: int = 0  # images carved from the training set for validation; 0 = a tenth of those in use (5000 for CIFAR-10)
    train_limit: int = 0  # use only the first N training images (0 = all); applied before the split
    test_limit: int = 0  # use only the first N test images (0 = all)
    synthetic_train: int = 2000  # synthetic source: training images
    synthetic_test: int = 500  # synthetic source: test images
    synthetic_classes: int = 10  # synthetic source: classes (up to 100: 10 shapes x 10 colours)
    synthetic_size: int = 32  # synthetic source: pixels per side
    class_names: tuple[str, ...] = ()  # empty = the dataset's (recorded in config.json once resolved)
    image_size: int = 0  # resize every image to N x N pixels on loading (0 = as stored)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "simple_cnn"  # simple_cnn | torchvision:NAME | timm:NAME | package.module:callable (stress.models)
    widths: tuple[int, int, int] = (32, 64, 128)  # simple_cnn: output channels of conv1..conv3
    hidden: int = 256  # simple_cnn: units of the hidden fully connected layer
    num_classes: int = 10  # set from the dataset when a run resolves its config
    in_channels: int = 3
    image_size: int = 32  # pixels per side; set from the dataset when a run resolves its config
    kwargs: dict = field(default_factory=dict)  # keyword arguments for the builder (torchvision, timm, a factory)
    cifar_stem: bool = False  # torchvision/timm: 3x3 stride-1 first conv and no stem max-pool, for 32x32 inputs
    mean: tuple[float, ...] = ()  # per-channel input mean in [0, 1]; empty = measured on the training split
    std: tuple[float, ...] = ()  # per-channel input standard deviation; empty = measured on the training split


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    batch_size: int = 128  # global batch; split evenly over data-parallel workers
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0
    seed: int = 42  # seeds Python, numpy, torch, weight init and the data order
    crop_padding: int = 4  # augmented variant: zero padding before the random 32x32 crop
    flip_probability: float = 0.5  # augmented variant: horizontal flip probability
    eval_batch_size: int = 1000
    precision: str = "fp32"  # forward passes: "fp32", "bf16" (autocast; fp32 weights and losses) or "auto" (bf16 where fast)


@dataclass(frozen=True)
class StressConfig:
    shards: int = 0  # test-set shards per variant for the fan-out (0 = one per available CPU/GPU slot)
    num_cases: int = 8  # confident failure cases to study per variant
    corruptions: tuple[str, ...] = ()  # empty = every implemented corruption
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    stress_limit: int = 0  # corruption/shift evaluation on the first N test images (0 = all)
    calibration_bins: int = 15
    faithfulness_images: int = 500  # images for deletion/insertion curves per variant
    faithfulness_steps: int = 16  # points along the deletion/insertion curves
    skip_stress: bool = False  # skip corruptions, shifts and calibration
    # torch.compile the stress and Fourier stages' forward passes: "auto" (where measured to pay: stress.precision.resolve_compile),
    # "on" or "off". Config files written when this was a switch hold true/false, read as "on"/"off".
    compile: str = "auto"
    cam_layer: str = ""  # module Grad-CAM hooks; empty = the last one with a spatial output (stress.models.find_cam_layer)
    exclude_label_suspects: bool = False  # leave images whose label the audit finds suspect out of the failure cases and gallery
    slice_min_size: int = 30  # test images a candidate failure slice needs to be tested (stress.analyses.slices)
    audit_train_labels: bool = False  # also audit the training labels, with K-fold cross-validated probabilities
    audit_folds: int = 5  # K of that cross-validation: K trainings of the baseline recipe, run in parallel
    fourier_images: int = 500  # test images of the Fourier heat map (stress.perturb.fourier); 0 = no heat map
    fourier_norm: float = 4.0  # L2 norm of each Fourier basis perturbation per channel, on the [0, 1] pixel scale
    texture_images: int = 10000  # test images of the texture-versus-shape probes (stress.perturb.texture); 0 = none
    adversarial_images: int = 1000  # test images attacked with PGD and AutoAttack (stress.perturb.pgd); 0 = no attacks
    browser_images: int = 2000  # confident failures per model in the report's failure browser (with Grad-CAM); 0 = no browser
    pgd_steps: int = 20  # PGD iterations per attack (step size 2.5 eps / steps)
    autoattack: bool = True  # also run AutoAttack (standard, L-inf 8/255) on the attacked images; needs torchattacks


@dataclass(frozen=True)
class ResourceConfig:
    workers_per_trainer: int = 1  # data-parallel Ray Train workers per variant
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = -1.0  # -1 = driver.resources.worker_gpus: a GPU per worker, a shared fraction, or 0
    task_cpus: float = 1.0  # CPUs per fan-out task
    task_gpus: float = -1.0  # GPU fraction per fan-out task; -1 = DEFAULT_TASK_GPUS if the cluster has GPUs, else 0
    max_failures: int = 1  # Ray Train restarts from the last checkpoint after a worker dies
    task_retries: int = 3  # retries of a fan-out task that dies
    node_wait_s: float = 600.0  # on a joined cluster: how long to wait for nodes that can hold the requests


@dataclass(frozen=True)
class ExperimentConfig:
    run_name: str = "default"
    out: str = "runs"  # parent folder (or storage URI) of the run folder
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stress: StressConfig = field(default_factory=StressConfig)
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    # Already-trained models under test, "NAME=CHECKPOINT" each (the first is the reference for
    # comparisons); empty = train the seed's baseline and augmented variants.
    evaluate: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExperimentConfig":
        config = _build(cls, values, "config")
        validate(config)
        return config


MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def evaluate_entries(config: ExperimentConfig) -> list[tuple[str, str]]:
    """config.evaluate as (name, checkpoint path) pairs, in the order given."""
    return [tuple(entry.split("=", 1)) for entry in config.evaluate]  # type: ignore[misc]


def model_names(config: ExperimentConfig) -> tuple[str, ...]:
    """The models under test, the reference first: --evaluate's names, else the trained variants."""
    from stress.constants import VARIANTS

    return tuple(name for name, _ in evaluate_entries(config)) if config.evaluate else VARIANTS


def _build(cls, values: Any, where: str):
    """Build dataclass `cls` from a dict, rejecting unknown keys and coercing tuples."""
    if not isinstance(values, dict):
        raise StressError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise StressError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    kwargs = {}
    for name, value in values.items():
        f = known[name]
        default = getattr(cls(), name) if not dataclasses.is_dataclass(f.type) else None
        if isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
            kwargs[name] = _build(f.default_factory, value, f"{where}.{name}")
        elif isinstance(default, dict):
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise StressError(f"{where}.{name}: expected a mapping with string keys, got {value!r}")
            kwargs[name] = dict(value)
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)):
                raise StressError(f"{where}.{name}: expected a list, got {value!r}")
            kwargs[name] = tuple(value)
        elif cls is StressConfig and name == "compile" and isinstance(value, bool):
            kwargs[name] = "on" if value else "off"  # written when --compile was a switch
        else:
            kwargs[name] = value
    return cls(**kwargs)


def merge(config: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """Return a new config with dotted-key overrides (`{"train.epochs": 3}`) applied."""
    values = config.to_dict()
    for dotted, value in overrides.items():
        node = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise StressError(f"unknown config key {dotted!r}")
            node = node[key]
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return ExperimentConfig.from_dict(values)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a (nested) dict."""
    path = expand(path, "--config")
    check_regular_file(path, "--config")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StressError(f"{path}: cannot read config file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise StressError(f"{path}: not a text file (JSON or YAML expected)") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is a user error here
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StressError(f"{path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'} ({first})") from None
    if not isinstance(values, dict):
        raise StressError(f"{path}: top level must be a mapping")
    return values


def _check_number(where: str, value: Any, *, minimum: float, integer: bool = False, strict: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or (isinstance(value, float) and not math.isfinite(value)):
        hint = ""
        if isinstance(value, str):
            try:
                float(value)
                if "e" in value.lower():
                    hint = " (a string: YAML 1.1 reads 1e-3 as text; write 1.0e-3 or 0.001)"
                else:
                    hint = " (a string; write the number without quotes)"
            except ValueError:
                hint = " (a string)"
        raise StressError(f"{where} must be a finite {'integer' if integer else 'number'}, got {value!r}{hint}")
    if value < minimum or (strict and value == minimum):
        raise StressError(f"{where} must be {'>' if strict else '>='} {minimum}, got {value!r}")


def _check_text(where: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise StressError(f"{where} must be a non-empty string, got {value!r}")


def validate(config: ExperimentConfig) -> None:
    """Raise StressError naming the first invalid field."""
    _check_text("out", config.out)
    _check_text("data.source", config.data.source)
    if "://" not in config.out:
        expand(config.out, "out")
    expand(config.data.source, "data.source")
    _check_text("model.name", config.model.name)
    _check_text("train.precision", config.train.precision)
    for name in ("skip_stress",):
        if not isinstance(getattr(config.stress, name), bool):
            raise StressError(f"stress.{name} must be true or false, got {getattr(config.stress, name)!r}")
    for i, name in enumerate(config.stress.corruptions):
        _check_text(f"stress.corruptions[{i}]", name)
    if not isinstance(config.run_name, str) or not config.run_name or "/" in config.run_name or config.run_name.startswith("."):
        raise StressError(f"run_name must be a non-empty folder name without '/', got {config.run_name!r}")
    d, m, t, s, r = config.data, config.model, config.train, config.stress, config.resources
    _check_number("data.val_size", d.val_size, minimum=0, integer=True)
    _check_number("data.train_limit", d.train_limit, minimum=0, integer=True)
    _check_number("data.test_limit", d.test_limit, minimum=0, integer=True)
    _check_number("data.synthetic_train", d.synthetic_train, minimum=20, integer=True)
    _check_number("data.synthetic_test", d.synthetic_test, minimum=10, integer=True)
    if m.name != "simple_cnn" and ":" not in m.name:
        raise StressError(f"model.name: unknown {m.name!r}; valid: simple_cnn, torchvision:NAME, timm:NAME, package.module:callable")
    if len(m.widths) != 3:
        raise StressError(f"model.widths must list 3 channel counts, got {list(m.widths)}")
    for i, w in enumerate(m.widths):
        _check_number(f"model.widths[{i}]", w, minimum=1, integer=True)
    _check_number("model.hidden", m.hidden, minimum=1, integer=True)
    _check_number("model.num_classes", m.num_classes, minimum=2, integer=True)
    _check_number("model.in_channels", m.in_channels, minimum=1, integer=True)
    _check_number("model.image_size", m.image_size, minimum=8, integer=True)
    if m.name == "simple_cnn" and m.image_size % 8:
        raise StressError(f"model.image_size must be a multiple of 8 for simple_cnn (three 2x2 poolings), got {m.image_size}")
    if not isinstance(m.cifar_stem, bool):
        raise StressError(f"model.cifar_stem must be true or false, got {m.cifar_stem!r}")
    if m.cifar_stem and m.name == "simple_cnn":
        raise StressError("model.cifar_stem adapts torchvision and timm stems; simple_cnn has none to adapt")
    try:
        json.dumps(m.kwargs)
    except (TypeError, ValueError):
        raise StressError(f"model.kwargs must hold JSON values (numbers, strings, lists, mappings), got {m.kwargs!r}") from None
    if bool(m.mean) != bool(m.std):
        raise StressError("model.mean and model.std: give both (the statistics the model's inputs are standardised with) or neither")
    for name in ("mean", "std"):
        values = getattr(m, name)
        if values and len(values) != m.in_channels:
            raise StressError(f"model.{name} must list {m.in_channels} per-channel values (or none, to measure them), got {list(values)}")
        for i, v in enumerate(values):
            _check_number(f"model.{name}[{i}]", v, minimum=0, strict=name == "std")
    _check_number("data.synthetic_classes", d.synthetic_classes, minimum=2, integer=True)
    if d.synthetic_classes > 100:
        raise StressError(f"data.synthetic_classes must be <= 100 (10 shapes x 10 colours), got {d.synthetic_classes}")
    _check_number("data.synthetic_size", d.synthetic_size, minimum=8, integer=True)
    _check_number("data.image_size", d.image_size, minimum=0, integer=True)
    if 0 < d.image_size < 8:
        raise StressError(f"data.image_size must be 0 (as stored) or at least 8, got {d.image_size}")
    for i, c in enumerate(d.class_names):
        _check_text(f"data.class_names[{i}]", c)
    if not isinstance(s.cam_layer, str):
        raise StressError(f"stress.cam_layer must be a module name (or empty for automatic), got {s.cam_layer!r}")
    _check_number("train.epochs", t.epochs, minimum=1, integer=True)
    _check_number("train.batch_size", t.batch_size, minimum=1, integer=True)
    _check_number("train.lr", t.lr, minimum=0, strict=True)
    _check_number("train.weight_decay", t.weight_decay, minimum=0)
    _check_number("train.seed", t.seed, minimum=0, integer=True)
    if t.seed > MAX_SEED:
        raise StressError(f"train.seed must be <= {MAX_SEED} (32 bits), got {t.seed}")
    _check_number("train.crop_padding", t.crop_padding, minimum=0, integer=True)
    _check_number("train.eval_batch_size", t.eval_batch_size, minimum=1, integer=True)
    if s.compile not in COMPILE_SETTINGS:
        raise StressError(f"stress.compile: unknown {s.compile!r}; valid choices: {', '.join(COMPILE_SETTINGS)}")
    if t.precision not in PRECISIONS:
        raise StressError(f"train.precision: unknown {t.precision!r}; valid choices: {', '.join(PRECISIONS)}")
    _check_number("train.flip_probability", t.flip_probability, minimum=0)
    if t.flip_probability > 1:
        raise StressError(f"train.flip_probability must be in [0, 1], got {t.flip_probability!r}")
    _check_number("stress.shards", s.shards, minimum=0, integer=True)
    _check_number("stress.num_cases", s.num_cases, minimum=3, integer=True)
    _check_number("stress.slice_min_size", s.slice_min_size, minimum=1, integer=True)
    _check_number("stress.audit_folds", s.audit_folds, minimum=2, integer=True)
    _check_number("stress.fourier_images", s.fourier_images, minimum=0, integer=True)
    _check_number("stress.fourier_norm", s.fourier_norm, minimum=0, strict=True)
    _check_number("stress.texture_images", s.texture_images, minimum=0, integer=True)
    _check_number("stress.adversarial_images", s.adversarial_images, minimum=0, integer=True)
    _check_number("stress.browser_images", s.browser_images, minimum=0, integer=True)
    _check_number("stress.pgd_steps", s.pgd_steps, minimum=1, integer=True)
    if not isinstance(s.autoattack, bool):
        raise StressError(f"stress.autoattack must be true or false, got {s.autoattack!r}")
    if not isinstance(s.audit_train_labels, bool):
        raise StressError(f"stress.audit_train_labels must be true or false, got {s.audit_train_labels!r}")
    if not isinstance(s.exclude_label_suspects, bool):
        raise StressError(f"stress.exclude_label_suspects must be true or false, got {s.exclude_label_suspects!r}")
    _check_number("stress.stress_limit", s.stress_limit, minimum=0, integer=True)
    _check_number("stress.calibration_bins", s.calibration_bins, minimum=1, integer=True)
    _check_number("stress.faithfulness_images", s.faithfulness_images, minimum=1, integer=True)
    _check_number("stress.faithfulness_steps", s.faithfulness_steps, minimum=2, integer=True)
    for name, values in (("stress.severities", s.severities), ("stress.corruptions", s.corruptions)):
        repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
        if repeated:
            # A repeated entry would count twice in means over the list.
            raise StressError(f"{name}: {', '.join(repeated)} listed more than once; give each once")
    bad = [v for v in s.severities if type(v) is not int or v not in (1, 2, 3, 4, 5)]
    if bad or not s.severities:
        raise StressError(f"stress.severities: invalid {bad or '(empty)'}; valid choices: 1, 2, 3, 4, 5")
    if s.corruptions:
        from stress.constants import CORRUPTIONS

        unknown = [c for c in s.corruptions if c not in CORRUPTIONS]
        if unknown:
            raise StressError(f"stress.corruptions: unknown {', '.join(unknown)}; valid choices: {', '.join(CORRUPTIONS)}")
    _check_number("resources.workers_per_trainer", r.workers_per_trainer, minimum=1, integer=True)
    _check_number("resources.cpus_per_worker", r.cpus_per_worker, minimum=0, strict=True)
    _check_number("resources.task_cpus", r.task_cpus, minimum=0)
    if r.gpus_per_worker != -1:
        _check_number("resources.gpus_per_worker", r.gpus_per_worker, minimum=0)
    if r.task_gpus != -1:
        _check_number("resources.task_gpus", r.task_gpus, minimum=0)
    _check_number("resources.max_failures", r.max_failures, minimum=0, integer=True)
    _check_number("resources.task_retries", r.task_retries, minimum=0, integer=True)
    _check_number("resources.node_wait_s", r.node_wait_s, minimum=0)
    names = []
    for i, entry in enumerate(config.evaluate):
        if not isinstance(entry, str) or "=" not in entry:
            raise StressError(f"evaluate[{i}]: expected NAME=CHECKPOINT, got {entry!r}")
        name, path = entry.split("=", 1)
        if not MODEL_NAME.match(name):
            raise StressError(f"evaluate[{i}]: model name {name!r} must be letters, digits, '_', '.' or '-' (up to 64, "
                              "starting with a letter or digit)")
        if not path:
            raise StressError(f"evaluate[{i}]: {name}= names no checkpoint file")
        names.append(name)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise StressError(f"evaluate: model name(s) {', '.join(repeated)} given more than once")
    if t.batch_size % r.workers_per_trainer:
        raise StressError(f"train.batch_size ({t.batch_size}) must divide evenly over {r.workers_per_trainer} workers")
