"""Property: a re-run after an option change or a damaged file reports what a fresh run reports.

A small run is built once. Each case copies it, changes one option or damages one file, and
re-runs the same pipeline. Then either
- every number in the re-run's summary.json equals the number a fresh run with the final
  options gives (timings aside; the fresh run starts from the base run's training, which none of
  the option changes reaches: copy_of_training), or
- the re-run is refused in one line and no file of the folder changed (hashes before and after).

The runs share one local Ray instance in this process, so each costs seconds, not a Ray start.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from stress.artifacts import read_json
from stress.config import ExperimentConfig, merge
from stress.driver.pipeline import Pipeline
from stress.errors import StressError

pytestmark = pytest.mark.e2e

BASE = {
    "run_name": "r",
    "data": {"val_size": 40, "test_limit": 40},
    "train": {"epochs": 1, "batch_size": 64},
    "stress": {"shards": 2, "num_cases": 3, "corruptions": ["gaussian_noise", "contrast"], "severities": [1],
               "stress_limit": 24, "faithfulness_images": 8, "faithfulness_steps": 4, "texture_images": 20, "fourier_images": 8,
               "adversarial_images": 8, "pgd_steps": 2},
}
TIMING = {"timing", "seconds", "train_seconds", "images_per_second", "started", "finished", "seconds_predict", "seconds_gradcam"}


def write_data(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (400, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 400).astype(np.uint8)
    x[np.arange(400), y, y] = 255  # a learnable cue, so that the models differ from chance a little
    np.savez(path, x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    return path


def numbers(value, path="") -> dict[str, float]:
    """Every number in a JSON value by its path, timings, paths and run names left out."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key not in TIMING and key not in ("folder", "name", "source"):
                out.update(numbers(item, f"{path}/{key}"))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(numbers(item, f"{path}[{i}]"))
        return out
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return {path: value} if isinstance(value, str) else {}
    return {path: value}


def same_numbers(a: dict, b: dict) -> list[str]:
    """The paths where two summaries differ (NaN equals NaN)."""
    differ = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y:
            differ.append(f"{key}: {x!r} != {y!r}")
    return differ


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def config_for(out: Path, data: Path, **overrides) -> ExperimentConfig:
    config = ExperimentConfig.from_dict({**BASE, "out": str(out), "data": {**BASE["data"], "source": str(data)}})
    return merge(config, overrides)


def resolved(config: ExperimentConfig) -> ExperimentConfig:
    """`config` as a run records it: with the dataset's and the model's values filled in (stress.resolve)."""
    from stress.data import load_dataset, split_dataset
    from stress.resolve import resolve

    return resolve(config, split_dataset(load_dataset(config.data), config.data, config.train.seed)).config


def run(config: ExperimentConfig) -> dict:
    Pipeline(config, log=lambda line: None).run_all()
    return read_json(Path(config.out) / config.run_name / "summary.json")


@pytest.fixture(scope="module")
def ray_instance():
    import ray

    from stress.driver import cluster

    cluster.connect(None, num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, ray_instance):
    root = tmp_path_factory.mktemp("property")
    data = write_data(root / "data.npz", seed=0)
    summary = run(config_for(root / "base", data))
    return root, data, summary


def copy_of_base(base_run, name: str) -> tuple[Path, Path]:
    root, data, _ = base_run
    out = root / name
    shutil.copytree(root / "base", out)
    return out, data


TRAINING_OUTPUTS = ("config.json", "split.json", "stages/train_baseline.json", "stages/train_augmented.json", "variants", "train")


def copy_of_training(base_run, name: str) -> tuple[Path, Path]:
    """A copy of the base run that holds its training and nothing after it.

    The option changes below reach no training option, and CPU training is deterministic, so a fresh run
    with the final options trains exactly these weights again: starting from them, every later stage
    runs from nothing, as in a fresh run, without a second Ray Train start-up per case."""
    root, data, _ = base_run
    out = root / name
    for relative in TRAINING_OUTPUTS:
        source, target = root / "base" / "r" / relative, out / "r" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    return out, data


def damage_shard(folder: Path) -> None:
    shard = sorted((folder / "eval" / "shards").glob("*.npz"))[0]
    shard.write_bytes(shard.read_bytes()[:50])  # a truncated shard, as a crash mid-write would not leave it
    (folder / "stages" / "evaluate.json").unlink()  # the stage did not finish


def replace_weights(folder: Path) -> None:
    (folder / "variants" / "baseline" / "model.pt").write_bytes(b"not the weights training wrote")


def stale_shard_of_other_weights(folder: Path) -> None:
    # A shard left by the same options but other weights must not be reused.
    shard = sorted((folder / "eval" / "stress_shards").glob("gaussian_noise@*.npz"))[0]
    with np.load(shard) as saved:
        arrays = dict(saved)
    arrays = {k: (np.zeros_like(v) if k.endswith("correct") else v) for k, v in arrays.items()}
    arrays["stage_key"] = np.array(str(arrays["stage_key"]).rsplit("|", 1)[0] + "|baseline:0000,augmented:0000")
    np.savez_compressed(shard, **arrays)
    (folder / "stages" / "stress.json").unlink()


def broken_record(folder: Path) -> None:
    (folder / "stages" / "stress.json").write_text("[]")


# (case, option overrides for the re-run, damage to the folder before it)
CHANGES = [
    ("more severities", {"stress.severities": (1, 2)}, None),
    ("more faithfulness images", {"stress.faithfulness_images": 16}, None),
    ("another corruption list", {"stress.corruptions": ("gaussian_noise", "fog")}, None),
    ("truncated evaluation shard", {}, damage_shard),
    ("replaced model.pt", {}, replace_weights),
    ("stress shard of other weights", {}, stale_shard_of_other_weights),
    ("wrongly structured stage record", {}, broken_record),
]


@pytest.mark.parametrize("case, overrides, damage", CHANGES, ids=[c[0] for c in CHANGES])
def test_a_re_run_reports_what_a_fresh_run_with_the_final_options_reports(base_run, case, overrides, damage):
    root, _, base_summary = base_run
    slug = case.replace(" ", "_")
    out, data = copy_of_base(base_run, slug)
    if damage:
        damage(out / "r")
    rerun = run(config_for(out, data, **overrides))
    fresh = base_summary if not overrides else run(config_for(copy_of_training(base_run, f"fresh_{slug}")[0], data, **overrides))
    differ = same_numbers(numbers(rerun), numbers(fresh))
    assert not differ, f"{case}: {len(differ)} numbers differ from a fresh run, e.g. {differ[:5]}"
    assert read_json(out / "r" / "config.json") == resolved(config_for(out, data, **overrides)).to_dict()


REFUSED = [
    ("more epochs", {"train.epochs": 2}, "different config"),
    ("another seed", {"train.seed": 7}, "different config"),
    ("replaced data file", None, "other data"),  # the same path with other contents
]


@pytest.mark.parametrize("case, overrides, message", REFUSED, ids=[c[0] for c in REFUSED])
def test_a_refused_re_run_changes_no_file(base_run, case, overrides, message):
    out, data = copy_of_base(base_run, case.replace(" ", "_"))
    original = data.read_bytes()
    before = hashes(out / "r")
    try:
        if overrides is None:
            write_data(data, seed=1)
        with pytest.raises(StressError, match=message) as info:
            Pipeline(config_for(out, data, **(overrides or {})), log=lambda line: None).run_all()
    finally:
        data.write_bytes(original)  # the other cases read the same file
    assert "\n" not in str(info.value)
    assert hashes(out / "r") == before


def test_the_property_check_tells_different_summaries_apart(base_run):
    """The comparison is not vacuous: one changed number, or a missing one, is reported."""
    _, _, summary = base_run
    a = numbers(summary)
    assert len(a) > 100
    changed = dict(a)
    key = next(k for k, v in a.items() if isinstance(v, float) and "test_acc" in k)
    changed[key] = a[key] + 1e-9
    assert same_numbers(a, changed) == [f"{key}: {a[key]!r} != {changed[key]!r}"]
    fewer = dict(a)
    fewer.pop(key)
    assert same_numbers(a, fewer)


def test_a_second_job_on_a_storage_uri_is_refused_while_the_first_holds_it(base_run, tmp_path):
    import json
    import subprocess
    import sys

    _, data, _ = base_run
    bucket = tmp_path / "bucket"
    config = merge(config_for(tmp_path, data), {"out": f"file://{bucket}"})
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as first:
        try:
            (bucket / "r").mkdir(parents=True)
            holder = {"owner": "someone", "host": __import__("socket").gethostname(), "pid": first.pid, "started": "now", "token": "t"}
            (bucket / "r" / "run.lock").write_text(json.dumps(holder))
            with pytest.raises(StressError, match=f"is in use by someone@.* pid {first.pid}") as info:
                Pipeline(config, log=lambda line: None).run_all()
            assert "\n" not in str(info.value)
            assert sorted(p.name for p in (bucket / "r").iterdir()) == ["run.lock"]  # nothing else was written
        finally:
            first.kill()
