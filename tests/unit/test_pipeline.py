"""Resume integrity of the per-seed pipeline, without Ray: dataset fingerprints, config records, saved shards."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from stress.artifacts import RunFolder, read_json, write_npz
from stress.config import ExperimentConfig, merge
from stress.errors import StressError
from stress.evaluation import STAGE_KEY, evaluation_key, load_saved_shard
from stress.pipeline import Pipeline
from stress.suite import stress_key


def write_data(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), y_train=rng.integers(0, 10, 60).astype(np.uint8),
             x_test=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), y_test=rng.integers(0, 10, 20).astype(np.uint8))


def folder_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def prepared(tmp_path):
    data = tmp_path / "data.npz"
    write_data(data, seed=0)
    config = ExperimentConfig.from_dict({"out": str(tmp_path / "runs"), "run_name": "r", "data": {"source": str(data), "val_size": 10}})
    pipeline = Pipeline(config, log=lambda line: None)
    pipeline.check_inputs()
    pipeline.prepare()
    return config, data, pipeline.run


def test_a_replaced_data_file_is_refused_and_nothing_changes(prepared):
    config, data, run = prepared
    before = folder_hashes(run.root)
    assert read_json(run.path("split.json"))["dataset_sha256"]
    write_data(data, seed=1)  # same path, other contents
    with pytest.raises(StressError, match="was run on other data") as info:
        Pipeline(config, log=lambda line: None).check_inputs()
    assert "\n" not in str(info.value)
    assert folder_hashes(run.root) == before
    write_data(data, seed=0)  # the original data resumes
    Pipeline(config, log=lambda line: None).check_inputs()


def test_a_re_run_with_new_evaluation_options_keeps_the_old_config_until_its_stages_finish(prepared):
    config, _, run = prepared
    changed = merge(config, {"stress.faithfulness_images": 7})
    pipeline = Pipeline(changed, log=lambda line: None)
    pipeline.check_inputs()
    pipeline.prepare()
    assert read_json(run.path("config.json"))["stress"]["faithfulness_images"] == config.stress.faithfulness_images
    pipeline.write_config()  # what run_all does once every stage matches the new options
    assert read_json(run.path("config.json"))["stress"]["faithfulness_images"] == 7


def test_the_interrupt_message_names_only_saved_stages(prepared):
    config, _, run = prepared
    pipeline = Pipeline(config, log=lambda line: None)
    assert pipeline.interrupt_message().startswith("interrupted before any stage finished: nothing was saved")
    run.mark_done("train_baseline", 1.0, "k")
    assert "saved stage(s) train_baseline in" in pipeline.interrupt_message()


def test_a_shard_saved_under_other_options_is_recomputed(tmp_path):
    config = ExperimentConfig()
    lines: list[str] = []
    path = tmp_path / "baseline_0_10.npz"
    key = evaluation_key(config)
    write_npz(path, indices=np.arange(10), **{STAGE_KEY: np.array(key)})
    assert set(load_saved_shard(path, key, lines.append)) == {"indices"}
    # --faithfulness-images 20 -> 50 changes the evaluate key: the 20-image shard must not be reused.
    other = evaluation_key(merge(config, {"stress.faithfulness_images": 50}))
    assert other != key and load_saved_shard(path, other, lines.append) is None
    assert lines == ["baseline_0_10.npz: saved under other options or older code: recomputed"]
    write_npz(path, indices=np.arange(10))  # a shard from before keys existed
    assert load_saved_shard(path, key, lines.append) is None


def test_stage_keys_follow_only_the_options_each_stage_reads():
    config = ExperimentConfig()
    more_severities = merge(config, {"stress.severities": (1, 2)})
    assert stress_key(more_severities) != stress_key(config)  # severities 1 -> 1,2 re-runs the stress stage ...
    assert evaluation_key(more_severities) == evaluation_key(config)  # ... but not the evaluate stage
    skip = merge(config, {"stress.skip_stress": True, "stress.corruptions": ("contrast",)})
    assert evaluation_key(skip) == evaluation_key(config)
    fewer_images = merge(config, {"stress.faithfulness_images": 50})
    assert evaluation_key(fewer_images) != evaluation_key(config) and stress_key(fewer_images) == stress_key(config)
    assert evaluation_key(merge(config, {"train.epochs": 3})) != evaluation_key(config)
