"""The stages as plain functions, in this process (LocalExecutor, no Ray): outputs, skips, and which options re-run what."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from stress.artifacts import RunFolder
from stress.config import ExperimentConfig, ModelConfig, merge
from stress.constants import VARIANTS
from stress.data import load_dataset, split_dataset
from stress.driver import forward_plan, stages
from stress.driver.forward_plan import FREQUENCIES_PER_TASK
from stress.driver.fourier_stage import fourier_stage, heat_map_images
from stress.driver.slice_stage import slices_stage
from stress.driver.fanout import LocalExecutor
from stress.driver.pipeline import Pipeline
from stress.errors import StressError
from stress.evaluate.predict import predict_logits
from stress.evaluate.shards import evaluate_shard, load_model
from stress.models import create_model
from stress.perturb.shifts import list_shifts
from stress.resolve import resolve

pytestmark = pytest.mark.slow  # trainings and in-process pipeline runs, seconds each: make test runs them, make unit does not

STRESS = {"stress.corruptions": ("gaussian_noise",), "stress.severities": (1,), "stress.stress_limit": 20,
          "stress.faithfulness_images": 8, "stress.faithfulness_steps": 4, "stress.shards": 2}


class CountingExecutor(LocalExecutor):
    """LocalExecutor that records which functions it ran and how often."""

    def __init__(self):
        self.ran: list[str] = []

    def run(self, function, calls, resources, on_result, log):
        self.ran += [function.__name__] * len(calls)
        super().run(function, calls, resources, on_result, log)

    def train_variants(self, config, arrays, storage, variants, on_done, log=print):
        self.ran += [f"train_{v}" for v in variants]
        super().train_variants(config, arrays, storage, variants, on_done)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run folder after all three stages, run in this process; its config and splits."""
    config = merge(ExperimentConfig(), {**tiny_overrides(), **STRESS, "out": str(tmp_path_factory.mktemp("runs")), "run_name": "local"})
    run = RunFolder(Path(config.out) / config.run_name)
    splits = split_dataset(load_dataset(config.data), config.data, config.train.seed)
    config = resolve(config, splits).config  # as the pipeline does: the dataset's statistics, the Grad-CAM layer
    executor, lines = CountingExecutor(), []
    outcomes = [stages.train_stage(run, config, splits, executor, str(run.path("train")), lines.append),
                stages.evaluate_stage(run, config, splits, executor, lines.append),
                slices_stage(run, config, splits, executor, lines.append),
                stages.stress_stage(run, config, splits, executor, lines.append)]
    return config, splits, run, executor, outcomes, lines


def test_each_stage_runs_and_writes_its_outputs(trained_run):
    config, splits, run, executor, outcomes, _ = trained_run
    assert [(o.name, o.ran) for o in outcomes] == [("train", True), ("evaluate", True), ("slices", True), ("stress", True)]
    assert all(o.seconds > 0 for o in outcomes)
    assert executor.ran.count("evaluate_shard") == 2 * 2 + 2  # 2 variants x 2 shards, + the validation pass per variant
    groups = 1 + -(-len(list_shifts()) // forward_plan.SHIFTS_PER_TASK)  # gaussian_noise, then the shifts in groups
    assert executor.ran.count("stress_shard") == groups * 2
    assert executor.ran.count("embed_shard") == 2 * 2
    for v in VARIANTS:
        assert (run.variant_dir(v) / "model.pt").is_file() and (run.variant_dir(v) / "history.json").is_file()
    for name in ("predictions.npz", "failures.json", "explanations.json", "robustness.json", "calibration.json", "labels.json",
                 "labels.npz", "slices.json", "slices.npz"):
        assert run.path("eval", name).is_file(), name
    assert sorted(p.name for p in run.path("eval", "shards").glob("*.npz")) == sorted(
        f"{v}_{a}_{b}.npz" for v in VARIANTS for a, b in ((0, 20), (20, 40)))


def test_the_evaluate_stage_equals_one_in_process_pass_over_the_test_set(trained_run):
    """The merged shards are the predictions of one plain forward pass (an independent path: predict_logits)."""
    config, splits, run, *_ = trained_run
    import torch

    from stress.artifacts import load_torch

    with np.load(run.path("eval", "predictions.npz")) as table:
        for v in VARIANTS:
            model = load_model(load_torch(run.variant_dir(v) / "model.pt")["model"], config.to_dict()["model"], torch.device("cpu"))
            logits = predict_logits(model, torch.tensor(splits.test_x), 100, stats=(config.model.mean, config.model.std)).numpy()
            np.testing.assert_allclose(table[f"{v}_logits"], logits, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(table[f"{v}_correct"], logits.argmax(1) == splits.test_y)
            # ... and of one unsharded evaluate_shard call, Grad-CAM statistics included.
            whole = evaluate_shard(load_torch(run.variant_dir(v) / "model.pt")["model"], config.to_dict()["model"],
                                   splits.test_x, splits.test_y, 0, len(splits.test_y))
            np.testing.assert_allclose(table[f"{v}_centre_share_predicted"], whole["centre_share_predicted"], atol=1e-5)


def test_a_re_run_skips_every_stage(trained_run):
    config, splits, run, *_ = trained_run
    executor, lines = CountingExecutor(), []
    outcomes = [stages.train_stage(run, config, splits, executor, str(run.path("train")), lines.append),
                stages.evaluate_stage(run, config, splits, executor, lines.append),
                slices_stage(run, config, splits, executor, lines.append),
                stages.stress_stage(run, config, splits, executor, lines.append)]
    assert [o.ran for o in outcomes] == [False, False, False, False] and executor.ran == []
    assert "evaluate: already finished: skipped" in lines and "stress: already finished: skipped" in lines
    assert "slices: already finished: skipped" in lines


@pytest.mark.parametrize("option, value, reruns", [
    ("stress.corruptions", ("contrast",), {"stress"}),
    ("stress.severities", (1, 2), {"stress"}),
    ("stress.stress_limit", 10, {"stress"}),
    ("stress.calibration_bins", 5, {"stress"}),
    ("stress.num_cases", 4, {"evaluate"}),
    ("stress.faithfulness_images", 4, {"evaluate"}),
    ("stress.exclude_label_suspects", True, {"evaluate"}),
    ("stress.slice_min_size", 5, {"slices"}),
    ("resources.task_retries", 1, set()),
    ("stress.skip_stress", True, set()),
])
def test_an_option_re_runs_only_the_stages_that_read_it(trained_run, tmp_path, option, value, reruns):
    config, splits, run, *_ = trained_run
    copy = RunFolder(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    changed = merge(config, {option: value})
    executor, lines = CountingExecutor(), []
    outcomes = {o.name: o.ran for o in (
        stages.train_stage(copy, changed, splits, executor, str(copy.path("train")), lines.append),
        stages.evaluate_stage(copy, changed, splits, executor, lines.append),
        slices_stage(copy, changed, splits, executor, lines.append),
        stages.stress_stage(copy, changed, splits, executor, lines.append))}
    assert {name for name, ran in outcomes.items() if ran} == reruns
    assert not any(name.startswith("train_") for name in executor.ran)
    if option == "stress.exclude_label_suspects":  # the evaluate stage's analysis re-runs on its saved shards
        assert "evaluate_shard" not in executor.ran
    if option == "stress.slice_min_size":  # the slices are found again from the saved embeddings
        assert "embed_shard" not in executor.ran


def test_the_check_can_fail_a_stage_that_re_runs_on_an_option_it_does_not_read(trained_run, tmp_path, monkeypatch):
    """Planted: an evaluate key over the whole stress section makes --corruptions re-run the evaluate stage."""
    config, splits, run, *_ = trained_run
    copy = RunFolder(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    from stress.artifacts import config_key

    monkeypatch.setattr(stages, "evaluation_key", lambda c: config_key(c.to_dict(), ("data", "model", "train", "stress")))
    outcome = stages.evaluate_stage(copy, merge(config, {"stress.corruptions": ("contrast",)}), splits, CountingExecutor(), lambda line: None)
    assert outcome.ran


def test_the_whole_pipeline_runs_in_process_through_the_public_api(trained_run, tmp_path, monkeypatch):
    """stress.run(config, executor=LocalExecutor()) on a finished run folder: every stage skipped, summary and report written."""
    import stress
    from stress.driver import pipeline

    # The code's commit as the run starts; a commit made while it runs (the second answer) is not what it ran.
    answers = iter([{"git_commit": "a" * 40, "git_modified": True}, {"git_commit": "b" * 40, "git_modified": False}])
    monkeypatch.setattr(pipeline, "source_state", lambda: next(answers))

    config, _, run, *_ = trained_run
    config = merge(config, {"out": str(tmp_path), "run_name": "copy"})
    shutil.copytree(run.root, tmp_path / "copy")
    # The baseline's training as if resumed on a CPU where --precision auto meant bf16 for its last epoch.
    history_path = tmp_path / "copy" / "variants" / "baseline" / "history.json"
    history = json.loads(history_path.read_text())
    history["epochs"][-1]["precision"] = "bf16"
    history["epochs"] = [{**history["epochs"][-1], "precision": "fp32", "epoch": 0}] + history["epochs"]
    for i, epoch in enumerate(history["epochs"]):  # validation loss lowest at epoch 1, three times that at the last
        epoch["val_loss"] = 0.5 if i == 0 else 1.5
    history_path.write_text(json.dumps(history))
    lines: list[str] = []
    summary = stress.run(config, log=lines.append, executor=LocalExecutor())
    assert summary["variants"]["baseline"]["precision"] == "mixed (bf16, fp32)" and summary["variants"]["augmented"]["precision"] == "fp32"
    assert {f"[{v}] training already finished: skipped" for v in VARIANTS} <= set(lines)
    assert "evaluate: already finished: skipped" in lines and "stress: already finished: skipped" in lines
    assert (tmp_path / "copy" / "report.html").is_file() and summary["variants"].keys() == set(VARIANTS)
    written = json.loads((tmp_path / "copy" / "summary.json").read_text())
    assert written["variants"] == json.loads(json.dumps(summary["variants"]))
    # The analysed weights are the last epoch's: the summary says how its validation numbers compare (slow loop over the history).
    for v in VARIANTS:
        epochs = json.loads((tmp_path / "copy" / "variants" / v / "history.json").read_text())["epochs"]
        entry = summary["variants"][v]
        assert (entry["final_val_acc"], entry["final_val_loss"]) == (epochs[-1]["val_acc"], epochs[-1]["val_loss"])
        lowest = sorted(range(len(epochs)), key=lambda i: (epochs[i]["val_loss"], i))[0]
        assert (entry["best_val_loss"], entry["best_val_loss_epoch"]) == (epochs[lowest]["val_loss"], lowest + 1)
    # The summary holds the stage files' numbers as written (the stages did not run again).
    assert written["robustness"] == json.loads(run.path("eval", "robustness.json").read_text())
    labels = json.loads(run.path("eval", "labels.json").read_text())
    assert written["labels"]["models"] == labels["models"] and written["labels"]["suspects"] == labels["suspects"][:20]
    assert written["slices"]["models"]["baseline"]["slices"] == json.loads(run.path("eval", "slices.json").read_text())["models"]["baseline"]["slices"]
    assert "tested" not in written["slices"]["models"]["baseline"]  # every candidate tried stays in eval/slices.json
    # What each analysis stage's tasks ran in, from the stage records, in the manifest and the report's setup row.
    manifest = json.loads((tmp_path / "copy" / "manifest.json").read_text())
    assert manifest["precision"]["stages"] == {"evaluate": "fp32", "slices": "fp32", "stress": "fp32"}
    assert manifest["git_commit"] == "a" * 40 and manifest["git_modified"] is True
    report = (tmp_path / "copy" / "report.md").read_text()
    assert f"| git commit | {'a' * 40} (with uncommitted changes to tracked files) |" in report
    assert "fp32 (the driver resolves it to fp32 on cpu); training ran in fp32 on cpu and mixed (bf16, fp32) on cpu; the analyses in fp32 |" in report
    assert "## Label errors and failure slices" in report and "figures/embedding_map.png" in report
    assert "baseline: validation loss was lowest at epoch 1 (0.500) and is 1.500 after epoch" in report
    assert report.count("past the validation optimum") == 1  # the augmented model's history was left as trained
    figures = tmp_path / "copy" / "figures"
    assert (figures / "embedding_map.png").is_file() and (figures / "label_suspects.png").is_file() == bool(labels["suspects"])


def test_a_checkpoint_from_another_architecture_is_a_one_line_error(tmp_path):
    from stress.artifacts import RunFolder, save_torch
    from stress.driver.stages import load_weights

    run = RunFolder(tmp_path / "run")
    wide = create_model(ModelConfig(widths=(16, 32, 64))).state_dict()
    for variant in ("baseline", "augmented"):
        save_torch(run.variant_dir(variant) / "model.pt", {"model": wide})
    config = {"name": "simple_cnn", "widths": [32, 64, 128], "hidden": 256, "num_classes": 10, "in_channels": 3, "image_size": 32}
    with pytest.raises(StressError) as error:
        load_weights(run, config)
    message = str(error.value)
    assert "model.pt: checkpoint does not match the configured model" in message and "\n" not in message


def test_a_storage_uri_holds_every_finished_stage_when_a_later_stage_fails(tmp_path):
    """With --out on a URI (file:// here), the run folder is mirrored after each stage, not only at the end."""
    from stress.errors import StressError as Failure

    class StressFails(LocalExecutor):
        def run(self, function, calls, resources, on_result, log):
            if function.__name__ == "stress_shard":
                raise Failure("the stress stage failed")
            super().run(function, calls, resources, on_result, log)

    remote = tmp_path / "bucket"
    config = merge(ExperimentConfig(), {**tiny_overrides(), **STRESS, "train.epochs": 1, "out": f"file://{remote}", "run_name": "r"})
    with pytest.raises(Failure, match="the stress stage failed"):
        Pipeline(config, log=lambda line: None, executor=StressFails()).run_all()
    stages_there = sorted(p.stem for p in (remote / "r" / "stages").glob("*.json"))
    assert stages_there == ["browser", "evaluate", "slices", "train_augmented", "train_baseline"]
    assert (remote / "r" / "eval" / "predictions.npz").is_file() and (remote / "r" / "variants" / "baseline" / "model.pt").is_file()
    assert not (remote / "r" / "eval" / "robustness.json").exists()


def test_label_suspects_are_marked_in_the_cases_and_left_out_with_the_option(trained_run, tmp_path):
    config, splits, run, *_ = trained_run
    suspects = set(np.flatnonzero(np.load(run.path("eval", "labels.npz"))["suspect"]).tolist())
    cases = [c for v in VARIANTS for c in json.loads(run.path("eval", "failures.json").read_text())[v]["cases"]]
    assert any(c["index"] in suspects for c in cases)  # the tiny models' cases include suspects: the check below can fail
    assert all((c["label_suspect"] or "").startswith("label suspect: given") == (c["index"] in suspects) for c in cases)
    copy = RunFolder(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    stages.evaluate_stage(copy, merge(config, {"stress.exclude_label_suspects": True}), splits, CountingExecutor(), lambda line: None)
    failures = json.loads(copy.path("eval", "failures.json").read_text())
    assert all(c["index"] not in suspects and c["label_suspect"] is None for v in VARIANTS for c in failures[v]["cases"])
    gallery = np.load(copy.path("eval", "failure_gallery.npz"))
    assert not suspects & set(np.concatenate([gallery[f"{v}_indices"] for v in VARIANTS]).tolist())


def test_the_fourier_stage_is_one_unsharded_pass_and_re_runs_only_on_its_options(trained_run, tmp_path, monkeypatch):
    """The merged (frequency group x shard) tasks equal one fourier_correct over all the heat map's images."""
    from stress.evaluate.shards import fourier_correct
    from stress.perturb.fourier import frequencies

    config, splits, run, *_ = trained_run
    copy = RunFolder(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    config = merge(config, {"stress.fourier_images": 12})
    executor, lines = CountingExecutor(), []
    outcome = fourier_stage(copy, config, splits, executor, lines.append)
    freqs = frequencies(32, 32)
    assert outcome.ran and executor.ran.count("fourier_shard") == -(-len(freqs) // FREQUENCIES_PER_TASK) * 2
    chosen = heat_map_images(len(splits.test_y), 12, config.train.seed)
    assert len(set(chosen.tolist())) == 12 and (np.diff(chosen) > 0).all()
    model_config = config.to_dict()["model"]
    models = {v: load_model(stages.load_weights(copy, model_config)[v], model_config, torch.device("cpu")) for v in VARIANTS}
    x, y = torch.tensor(splits.test_x[chosen]), torch.tensor(splits.test_y[chosen])
    whole = fourier_correct(models, x, y, freqs, config.train.seed, 0, 4.0, stats=(tuple(config.model.mean), tuple(config.model.std)))
    record = json.loads(copy.path("eval", "fourier.json").read_text())
    with np.load(copy.path("eval", "fourier.npz")) as table:
        np.testing.assert_array_equal(table["indices"], chosen)
        for v in VARIANTS:
            np.testing.assert_allclose(table[f"{v}_error"], 1 - whole[v].mean(axis=1))
    assert record["frequencies"] == len(freqs) and record["images"] == 12 and set(record["models"]) == set(VARIANTS)
    assert any(line.startswith("[baseline] Fourier heat map: error ") for line in lines)
    # The same torch.compile decision as the stress stage's (stages.compile_decision): off for a few batches per worker.
    from stress.driver.forward_plan import compile_decision

    why = compile_decision(config, len(splits.test_y), executor)[1]
    assert why.startswith("auto: ") and f"fourier: torch.compile off ({why})" in lines
    assert copy.stage_record("fourier")["compiled"] is False
    from PIL import Image

    from stress.report.figures import write_figures

    drawn = {p.name for p in write_figures(copy, log=lambda message: None)}
    assert {"fourier_heatmap.png", "fourier_radial.png"} <= drawn
    for name in ("fourier_heatmap.png", "fourier_radial.png"):
        with Image.open(copy.figures / name) as image:
            assert image.format == "PNG" and image.width > 600
    # a re-run skips; another norm re-runs only this stage; a corruption option does not touch it
    again = CountingExecutor()
    assert not fourier_stage(copy, config, splits, again, lines.append).ran and again.ran == []
    assert not fourier_stage(copy, merge(config, {"stress.corruptions": ("contrast",)}), splits, again, lines.append).ran
    # a new version of the stage's summary re-runs it on the saved tasks
    import stress.driver.fourier_stage as module

    monkeypatch.setattr(module, "FOURIER_VERSION", module.FOURIER_VERSION + 1)
    assert fourier_stage(copy, config, splits, again, lines.append).ran and again.ran == []
    assert fourier_stage(copy, merge(config, {"stress.fourier_norm": 2.0}), splits, again, lines.append).ran
    assert set(again.ran) == {"fourier_shard"}


def test_the_texture_stage_equals_one_unsharded_pass_and_reuses_its_tasks(trained_run, tmp_path, monkeypatch):
    from stress.driver.probe_stages import subset, texture_stage
    from stress.evaluate.probe_shards import texture_shard
    from stress.perturb.texture import probes

    config, splits, run, *_ = trained_run
    copy = RunFolder(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    config = merge(config, {"stress.texture_images": 30})
    executor, lines = CountingExecutor(), []
    assert texture_stage(copy, config, splits, executor, lines.append).ran and executor.ran.count("texture_shard") == 2
    chosen = subset(len(splits.test_y), 30, config.train.seed, 0x7E)
    model_config = config.to_dict()["model"]
    weights = stages.load_weights(copy, model_config)
    whole = texture_shard(weights, model_config, splits.test_x[chosen], splits.test_y[chosen], 0, 30, probes(32, 32), seed=config.train.seed)
    record = json.loads(copy.path("eval", "texture.json").read_text())
    assert str(whole.pop("precision")) == "fp32" and record["precision"] == copy.stage_record("texture")["precision"] == "fp32"
    with np.load(copy.path("eval", "texture.npz")) as table:
        np.testing.assert_array_equal(table["indices"], chosen)
        for key, value in whole.items():
            np.testing.assert_array_equal(table[key], value)
    assert record["images"] == 30 and [e["grid"] for e in record["models"]["baseline"]["index"]] == [2, 4, 8]
    assert any(line.startswith("[augmented] texture probes: clean ") for line in lines)
    again = CountingExecutor()
    assert not texture_stage(copy, config, splits, again, lines.append).ran
    import stress.driver.probe_stages as module

    monkeypatch.setattr(module, "TEXTURE_VERSION", module.TEXTURE_VERSION + 1)
    assert texture_stage(copy, config, splits, again, lines.append).ran and again.ran == []  # a new summary, the saved tasks
    assert not texture_stage(copy, merge(config, {"stress.texture_images": 0}), splits, again, lines.append).ran


def test_a_stage_resumed_where_auto_means_another_precision_records_the_mix(trained_run, tmp_path, monkeypatch):
    """--precision auto is in the shards' key as the literal "auto": shards saved on a CPU without fast bf16 are reused on
    one with it. The stage record, the stage's JSON and the log say the results mix fp32 and bf16."""
    import stress.precision as precision
    from stress.driver.probe_stages import texture_stage

    config, splits, run, *_ = trained_run
    copy = RunFolder(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    config = merge(config, {"stress.texture_images": 30, "train.precision": "auto"})
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)  # the first machine
    assert texture_stage(copy, config, splits, CountingExecutor(), lambda line: None).ran
    assert copy.stage_record("texture")["precision"] == "fp32"
    copy.clear_stage("texture")
    next(iter(sorted(copy.path("eval", "texture_shards").glob("*.npz")))).unlink()  # the task the interruption lost
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)  # resumed on a machine with bf16 units
    executor, lines = CountingExecutor(), []
    assert texture_stage(copy, config, splits, executor, lines.append).ran and executor.ran == ["texture_shard"]
    assert copy.stage_record("texture")["precision"] == "mixed (bf16, fp32)"
    assert json.loads(copy.path("eval", "texture.json").read_text())["precision"] == "mixed (bf16, fp32)"
    assert any(line.startswith("texture: its tasks ran in bf16 and fp32 under --precision auto") for line in lines), lines


@pytest.mark.parametrize("images, slots, on_gpus, tasks", [
    (1000, 2, False, 10),  # CPUs: a task per 100 images, for progress lines every few minutes
    (1000, 16, False, 16),  # more CPU slots than that: one per slot
    (50, 2, False, 2),
    (1000, 4, True, 4),  # GPUs (4 tasks of 0.25 GPU): one wave of 4 tasks of 250 images, not 3 waves of 100-image tasks
    (1000, 1, True, 1),
    (3, 8, True, 3),  # never an empty task
])
def test_attack_tasks_are_one_per_slot_on_gpus_and_per_100_images_on_cpus(images, slots, on_gpus, tasks):
    from stress.driver.probe_stages import attack_task_count

    assert attack_task_count(images, slots, on_gpus) == tasks


def test_the_attack_stage_attacks_each_model_and_draws_its_cases(trained_run, tmp_path, monkeypatch):
    from stress.driver.probe_stages import attack_stage, subset
    from stress.evaluate.probe_shards import attack_shard
    from stress.perturb.pgd import ATTACKS
    from stress.report.figures import write_figures

    pytest.importorskip("torchattacks")
    config, splits, run, *_ = trained_run
    copy = RunFolder(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    config = merge(config, {"stress.adversarial_images": 12, "stress.pgd_steps": 3})
    executor, lines = CountingExecutor(), []
    assert attack_stage(copy, config, splits, executor, lines.append).ran and executor.ran.count("attack_shard") == 2
    chosen = subset(len(splits.test_y), 12, config.train.seed, 0xAD)
    model_config = config.to_dict()["model"]
    whole = attack_shard(stages.load_weights(copy, model_config), model_config, splits.test_x[chosen], splits.test_y[chosen], 0, 12,
                         [(a.norm, a.eps) for a in ATTACKS], steps=3, seed=config.train.seed)
    record = json.loads(copy.path("eval", "adversarial.json").read_text())
    with np.load(copy.path("eval", "adversarial.npz")) as table:
        for key in ("baseline|clean", "augmented|autoattack", "baseline|linf_8/255", "augmented|l2_0.5"):
            agree = (table[key] == whole[key]).mean()
            assert agree >= 11 / 12, key  # per-image random starts: the sharding changes at most float rounding
    assert record["autoattack"] and set(record["models"]["baseline"]["robust"]) >= {"linf_1/255", "l2_0.25", "autoattack"}
    assert any(line.startswith("[baseline] attacks: clean ") for line in lines)
    if copy.path("eval", "adversarial_cases.npz").is_file():
        assert "adversarial_cases.png" in {p.name for p in write_figures(copy, log=lambda message: None)}
    # without torchattacks: a one-line error that says how to install it, or --no-autoattack
    import stress.driver.probe_stages as module

    monkeypatch.setattr(module, "_autoattack_available", lambda: False)
    with pytest.raises(StressError, match="pip install --no-deps torchattacks==3.5.1"):
        attack_stage(RunFolder(tmp_path / "other"), config, splits, CountingExecutor(), lines.append)
    # and a whole run says so before it trains or writes anything
    fresh = merge(config, {"out": str(tmp_path / "fresh"), "run_name": "r"})
    with pytest.raises(StressError, match="pip install --no-deps torchattacks==3.5.1"):
        Pipeline(fresh, log=lines.append, executor=CountingExecutor()).run_all()
    assert not (tmp_path / "fresh").exists()
    no_aa = merge(config, {"stress.autoattack": False})
    assert attack_stage(copy, no_aa, splits, CountingExecutor(), lines.append).ran
    assert not json.loads(copy.path("eval", "adversarial.json").read_text())["autoattack"]
    assert json.loads(copy.path("eval", "adversarial.json").read_text())["precision"] == "fp32"
    # Under --precision bf16 the attacks run in bf16: their clean flags are the evaluate path's bf16 predictions.
    from stress.augment import input_stats
    from stress.evaluate.predict import predict_logits
    from stress.evaluate.shards import load_model

    lines.clear()
    in_bf16 = merge(no_aa, {"train.precision": "bf16"})
    assert attack_stage(copy, in_bf16, splits, CountingExecutor(), lines.append).ran
    assert json.loads(copy.path("eval", "adversarial.json").read_text())["precision"] == "bf16"
    assert any(line.startswith("attack: PGD ") and " in bf16 on 12 test images" in line for line in lines), lines
    with np.load(copy.path("eval", "adversarial.npz")) as table:
        for v, state in stages.load_weights(copy, model_config).items():
            logits = predict_logits(load_model(state, model_config, torch.device("cpu")), torch.from_numpy(splits.test_x[chosen]),
                                    precision="bf16", stats=input_stats(model_config))
            np.testing.assert_array_equal(table[f"{v}|clean"], (logits.argmax(1) == torch.from_numpy(splits.test_y[chosen])).numpy())
    # "auto" resolves on each task's device: the record says what the tasks used, not what the driver expected.
    import stress.evaluate.probe_shards as shards_module

    monkeypatch.setattr(module, "resolve_precision", lambda precision, device: "fp32")  # the driver's device
    monkeypatch.setattr(shards_module, "resolve_precision", lambda precision, device: "bf16")  # the tasks'
    assert attack_stage(copy, merge(no_aa, {"train.precision": "auto"}), splits, CountingExecutor(), lines.append).ran
    assert json.loads(copy.path("eval", "adversarial.json").read_text())["precision"] == "bf16"


def test_the_browser_stage_keeps_each_confident_failure_with_both_models_grad_cam(trained_run, tmp_path, monkeypatch):
    """Against a slow reference: per image and model, Grad-CAM of one image at a time, block-averaged and scaled in numpy."""
    import stress.driver.browser_stage as module
    from stress.analyses.gradcam import gradcam
    from stress.augment import input_stats, normalize

    config, splits, run, *_ = trained_run
    copy = RunFolder(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    monkeypatch.setattr(module, "CONFIDENT", 0.1)  # a one-epoch model is seldom confidently wrong: lower the bar here
    config = merge(config, {"stress.browser_images": 6})
    lines = []
    assert module.browser_stage(copy, config, splits, lines.append).ran
    with np.load(copy.path("eval", "browser.npz")) as b, np.load(copy.path("eval", "predictions.npz")) as p:
        got = {k: b[k] for k in b.files}
        predictions = {k: p[k] for k in p.files}
    chosen = {}
    for v in VARIANTS:
        wrong = [i for i in range(len(splits.test_y)) if not predictions[f"{v}_correct"][i] and predictions[f"{v}_confidence"][i] >= 0.1]
        wrong.sort(key=lambda i: (-predictions[f"{v}_confidence"][i], i))
        chosen[v] = wrong[:6]
        np.testing.assert_array_equal(got[f"{v}_failures"], chosen[v])
    union = sorted(set(chosen["baseline"]) | set(chosen["augmented"]))
    assert len(union) >= 2
    np.testing.assert_array_equal(got["indices"], union)
    np.testing.assert_array_equal(got["images"], splits.test_x[union])
    model_config = config.to_dict()["model"]
    weights = stages.load_weights(copy, model_config)
    for v in VARIANTS:
        model = load_model(weights[v], model_config, torch.device("cpu"))
        for position, index in enumerate(union):
            x = normalize(torch.as_tensor(splits.test_x[index:index + 1]), input_stats(model_config))
            for kind, target in (("predicted", predictions[f"{v}_predicted"][index]), ("true", splits.test_y[index])):
                full = gradcam(model, x, torch.tensor([int(target)]), config.stress.cam_layer)[0].numpy()  # (32, 32)
                blocks = full.reshape(8, 4, 8, 4).mean(axis=(1, 3))  # SimpleCNN's relu3 is 8 x 8
                expected = np.rint(blocks / blocks.max() * 255) if blocks.max() > 0 else np.zeros_like(blocks)
                assert np.abs(got[f"maps_{v}_{kind}"][position].astype(int) - expected).max() <= 1, (v, kind, index)
    assert any(line.startswith("browser: Grad-CAM of ") for line in lines)
    assert not module.browser_stage(copy, config, splits, lines.append).ran  # finished: skipped
    assert module.browser_stage(copy, merge(config, {"stress.browser_images": 3}), splits, lines.append).ran
    assert not module.browser_stage(copy, merge(config, {"stress.browser_images": 0}), splits, lines.append).ran
    assert not copy.path("eval", "browser.npz").exists()


def test_pooled_maps_keep_their_peak_and_a_blank_map_stays_blank():
    from stress.driver.browser_stage import confident_failures, pool_maps

    maps = np.zeros((2, 4, 4), dtype=np.float32)
    maps[0, :2, :2] = 2.0  # one hot block
    pooled = pool_maps(maps, (2, 2))
    np.testing.assert_array_equal(pooled[0], [[255, 0], [0, 0]])
    np.testing.assert_array_equal(pooled[1], 0)
    correct = np.array([False, True, False, False, False])
    confidence = np.array([0.95, 0.99, 0.89, 0.97, 0.95])
    np.testing.assert_array_equal(confident_failures(correct, confidence, 10), [3, 0, 4])  # 0.89 out, the correct 0.99 out, ties by index
    np.testing.assert_array_equal(confident_failures(correct, confidence, 2), [3, 0])


def test_the_attack_cases_hold_the_clean_class_map_on_the_adversarial_image():
    """attack_cases against Grad-CAM redrawn here for the clean prediction's class on the cases' adversarial images; planted:
    the new class's map (what the cases held before) differs from it wherever the attack changed the class."""
    import dataclasses

    from stress.analyses.gradcam import gradcam
    from stress.augment import input_stats, normalize
    from stress.config import ModelConfig
    from stress.driver.probe_stages import attack_cases
    from stress.evaluate.predict import predict_logits
    from stress.models import create_model
    from stress.perturb.pgd import ATTACKS

    torch.manual_seed(0)
    config = ModelConfig(widths=(8, 16, 32), hidden=32)
    model_config = json.loads(json.dumps(dataclasses.asdict(config)))
    model = create_model(config).eval()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)).numpy()
    labels = predict_logits(model, torch.from_numpy(images), stats=input_stats(config)).argmax(1).numpy()
    strongest = len([a for a in ATTACKS if a.norm == "linf"]) - 1
    cases = attack_cases({"m": model.state_dict()}, model_config, images, labels, np.arange(6), {"m": np.full(6, strongest)}, 0, 5,
                         None, "fp32")
    inputs = normalize(torch.from_numpy(cases["m_adversarial"]).float(), input_stats(config))
    expected = gradcam(model, inputs, torch.from_numpy(cases["m_predicted_clean"]).long()).numpy()
    np.testing.assert_allclose(cases["m_cam_adversarial_clean_class"], expected, atol=1e-5)
    changed = cases["m_predicted_clean"] != cases["m_predicted_adversarial"]
    assert changed.any()
    assert not np.allclose(cases["m_cam_adversarial_clean_class"][changed], cases["m_cam_adversarial"][changed])
