"""Resume integrity of the per-seed pipeline, without Ray: dataset fingerprints, config records, saved shards."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from stress.artifacts import RunFolder, read_json, write_npz
from stress.config import ExperimentConfig, merge
from stress.driver import stages
from stress.driver.fanout import STAGE_KEY, LocalExecutor, load_saved_shard, shard_key
from stress.driver.pipeline import Pipeline
from stress.driver.stages import evaluation_key, evaluation_shard_key, stress_key, trained
from stress.errors import StressError


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


@pytest.mark.parametrize("content", ["[]", '{"seed": 42}', '{"val_indices": 3}'])
def test_a_split_record_of_the_wrong_structure_is_refused_and_nothing_changes(prepared, content):
    config, _, run = prepared
    run.path("split.json").write_text(content)
    before = folder_hashes(run.root)
    with pytest.raises(StressError, match="split.json: not a valid split record") as info:
        Pipeline(config, log=lambda line: None).check_inputs()
    assert "\n" not in str(info.value) and folder_hashes(run.root) == before


def test_a_split_record_with_other_validation_indices_is_refused(prepared):
    config, _, run = prepared
    record = read_json(run.path("split.json"))
    record["val_indices"] = list(reversed(record["val_indices"]))
    run.path("split.json").write_text(json.dumps(record))
    with pytest.raises(StressError, match="validation split differs"):
        Pipeline(config, log=lambda line: None).check_inputs()


def test_a_replaced_model_is_trained_again_and_its_stages_re_run(prepared):
    """A train record names the weights it wrote; stages that read weights record them too."""
    config, _, run = prepared
    lines: list[str] = []
    model = run.variant_dir("baseline") / "model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights as training wrote them")
    key = "train-key"
    run.mark_done("train_baseline", 1.0, key, weights=run.weights_digest(("baseline",)))
    assert trained(run, "baseline", key, lines.append) and not lines
    run.mark_done("evaluate", 1.0, "eval-key", weights=run.weights_digest())
    assert run.stage_done("evaluate", "eval-key", run.weights_digest())
    model.write_bytes(b"other weights")
    assert not trained(run, "baseline", key, lines.append)
    assert "model.pt is missing or not the file training wrote: training again" in lines[-1]
    assert not run.stage_done("evaluate", "eval-key", run.weights_digest())
    model.unlink()
    assert not trained(run, "baseline", key, lines.append)
    model.mkdir()  # a folder where the weights go
    assert not trained(run, "baseline", key, lines.append)
    # A record from before weights were recorded still counts, while the file is there.
    model.rmdir()
    model.write_bytes(b"old weights")
    run.mark_done("train_baseline", 1.0, key)
    assert trained(run, "baseline", key, lines.append)


@pytest.mark.parametrize("content", ["[]", "3", "{ half"])
def test_a_stage_record_of_the_wrong_structure_means_the_stage_re_runs(tmp_path, content):
    run = RunFolder(tmp_path / "r")
    run.mark_done("stress", 1.0, "k")
    assert run.stage_done("stress", "k")
    run.path("stages", "stress.json").write_text(content)
    assert run.stage_record("stress") is None and not run.stage_done("stress", "k")


def test_evaluation_shards_are_saved_under_the_key_they_are_looked_up_by(prepared):
    """Saved evaluation shards must be found again by a re-run (a shadowed name once saved the task's name)."""
    config, _, run = prepared

    class FakeTasks(LocalExecutor):
        def run(self, function, calls, resources, on_result, log):
            for task, args, kwargs in calls:
                start, stop = args[4], args[5]
                on_result(task, {"indices": np.arange(start, stop)})

    stages.predict_all(run, config, FakeTasks(), {"baseline": None, "augmented": None}, None, None, 20, 2, lambda line: None)
    key = shard_key(run, evaluation_shard_key(config))
    saved = sorted(run.path("eval", "shards").glob("*.npz"))
    assert [p.name for p in saved] == ["augmented_0_10.npz", "augmented_10_20.npz", "baseline_0_10.npz", "baseline_10_20.npz"]
    assert all(load_saved_shard(path, key, pytest.fail) is not None for path in saved)


def test_evaluate_shards_saved_before_the_label_audit_are_still_found(tiny_config):
    """The stage's record key moved to version 3 (label audit); its shards keep the key they were saved under by version 2."""
    from stress.artifacts import config_key

    config = tiny_config()
    before = config_key(config.to_dict(), ("data", "model", "train"),
                        {"stress": ("shards", "num_cases", "faithfulness_images", "faithfulness_steps", "cam_layer")}, 2)
    assert evaluation_shard_key(config) == before and evaluation_key(config) != before


@pytest.mark.parametrize("before, after, changed", [
    ({"train.precision": "bf16"}, {}, "train.precision"),  # back to fp32, the value older config.json files leave out
    ({"train.precision": "auto"}, {"train.precision": "bf16"}, "train.precision"),
    ({"model.mean": (0.5, 0.5, 0.5), "model.std": (0.25, 0.25, 0.25)}, {}, "model.mean, model.std"),  # back to CIFAR-10 statistics
    ({}, {"train.precision": "bf16"}, "train.precision"),
])
def test_a_changed_training_option_is_refused_whichever_way_it_changes(tmp_path, before, after, changed):
    from stress.driver.pipeline import check_resume

    run = RunFolder(tmp_path / "r")
    run.root.mkdir()
    run.path("config.json").write_text(json.dumps(merge(ExperimentConfig(), before).to_dict()))
    check_resume(run, merge(ExperimentConfig(), before))  # the same options resume
    with pytest.raises(StressError, match=rf"different config \({changed}\)"):
        check_resume(run, merge(ExperimentConfig(), after))


def test_an_old_config_without_the_later_options_resumes_at_their_old_values(tmp_path):
    from stress.config import without_later_defaults
    from stress.driver.pipeline import check_resume

    run = RunFolder(tmp_path / "r")
    run.root.mkdir()
    run.path("config.json").write_text(json.dumps(without_later_defaults(ExperimentConfig().to_dict())))  # no precision key
    check_resume(run, ExperimentConfig())
    with pytest.raises(StressError, match=r"different config \(train.precision\)"):
        check_resume(run, merge(ExperimentConfig(), {"train.precision": "auto"}))


def test_a_single_run_into_a_sweep_folder_is_refused_and_nothing_changes(prepared, tmp_path):
    config, _, run = prepared
    sweep_root = tmp_path / "runs" / "sw"
    for seed in (42, 43):  # what a seed sweep leaves: seed folders and its own summary
        (sweep_root / f"seed_{seed}").mkdir(parents=True)
        (sweep_root / f"seed_{seed}" / "summary.json").write_text("{}")
    (sweep_root / "summary.json").write_text('{"seeds": [42, 43]}')
    before = folder_hashes(sweep_root)
    with pytest.raises(StressError, match=r"sw holds a seed sweep \(seed_42, seed_43\); use another --run-name") as info:
        Pipeline(merge(config, {"run_name": "sw"}), log=lambda line: None).check_inputs()
    assert "\n" not in str(info.value) and folder_hashes(sweep_root) == before
    Pipeline(config, log=lambda line: None).check_inputs()  # the single run's own folder resumes


def test_a_sweep_interrupted_before_its_seed_folders_is_still_a_sweep_and_its_own_resume_passes(tmp_path):
    from stress.driver.pipeline import check_folder_kind

    root = tmp_path / "sw"
    (root / "tune").mkdir(parents=True)  # Ray Tune's folder: the sweep started, no trial has written its seed folder yet
    with pytest.raises(StressError, match=r"sw holds a seed sweep \(tune\)"):
        check_folder_kind(root, "run")
    (root / "seed_42").mkdir()
    (root / "summary.json").write_text('{"seeds": [42]}')
    check_folder_kind(root, "sweep")  # the sweep's own folder, resumed: nothing of a single run in it
    check_folder_kind(tmp_path / "missing", "run")  # a new folder is anything's
    check_folder_kind(tmp_path / "missing", "sweep")
