"""--evaluate: already-trained models stress-tested without training, in this process (LocalExecutor, no Ray)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from stress.artifacts import load_torch, read_json
from stress.config import ExperimentConfig, merge
from stress.constants import VARIANTS
from stress.driver.fanout import LocalExecutor
from stress.driver.pipeline import Pipeline
from stress.errors import StressError

pytestmark = pytest.mark.slow  # trainings and in-process pipeline runs, seconds each: make test runs them, make unit does not

SMALL = {**tiny_overrides(), "stress.corruptions": ("gaussian_noise", "contrast"), "stress.severities": (1, 3),
         "stress.stress_limit": 20, "stress.faithfulness_images": 8, "stress.faithfulness_steps": 3, "stress.shards": 2,
         "stress.num_cases": 3}


def run(out: Path, name: str, **overrides) -> tuple[dict, Path, list[str]]:
    config = merge(ExperimentConfig(), {**SMALL, "out": str(out), "run_name": name, **overrides})
    lines: list[str] = []
    return Pipeline(config, log=lines.append, executor=LocalExecutor()).run_all(), out / name, lines


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests run (conftest.single_thread): the temperature fit's last bits depend on it
    try:
        summary, folder, _ = run(out, "trained")
    finally:
        torch.set_num_threads(previous)
    return summary, folder


def test_the_trained_runs_model_files_given_back_reproduce_its_numbers(trained, tmp_path):
    summary, folder = trained
    given = tuple(f"{v}={folder / 'variants' / v / 'model.pt'}" for v in VARIANTS)
    again, other, lines = run(tmp_path, "given", evaluate=given)
    assert not any(line.startswith("training ") or "] training " in line for line in lines)  # nothing trained
    assert all(f"[{v}] {folder / 'variants' / v / 'model.pt'}: imported" in " ".join(lines) for v in VARIANTS)
    with np.load(folder / "eval" / "predictions.npz") as a, np.load(other / "eval" / "predictions.npz") as b:
        for v in VARIANTS:
            np.testing.assert_array_equal(a[f"{v}_logits"], b[f"{v}_logits"])
            np.testing.assert_array_equal(a[f"{v}_centre_share_predicted"], b[f"{v}_centre_share_predicted"])
    for section in ("robustness", "calibration", "failures"):
        assert json.dumps(again[section], sort_keys=True) == json.dumps(summary[section], sort_keys=True), section
    for v in VARIANTS:
        assert again["variants"][v]["test_acc"] == pytest.approx(summary["variants"][v]["test_acc"], abs=1e-6)
        assert again["variants"][v]["checkpoint"].endswith(f"{v}/model.pt")
    text = (other / "report.md").read_text()
    assert "Models under test" in text and "given with --evaluate" in text
    # A re-run skips every stage.
    _, _, lines = run(tmp_path, "given", evaluate=given)
    assert "evaluate: already finished: skipped" in lines and "stress: already finished: skipped" in lines


def test_three_plain_state_dicts_with_the_first_as_reference(trained, tmp_path):
    _, folder = trained
    paths = []
    for k, v in enumerate(("augmented", "baseline", "augmented")):
        state = load_torch(folder / "variants" / v / "model.pt")["model"]
        if k == 2:
            state = {key: value + 0.01 * torch.randn_like(value) if value.is_floating_point() else value for key, value in state.items()}
        torch.save(state, tmp_path / f"m{k}.pt")
        paths.append(tmp_path / f"m{k}.pt")
    summary, other, lines = run(tmp_path / "out", "three", evaluate=(f"aug={paths[0]}", f"base={paths[1]}", f"noisy={paths[2]}"))
    assert list(summary["variants"]) == ["aug", "base", "noisy"]
    robustness = summary["robustness"]
    assert robustness["reference"] == "aug" and set(robustness["gains"]) == {"base", "noisy"}
    assert robustness["gains"]["base"]["models"] == ["aug", "base"]
    # base − aug is minus (aug − base) of the trained run's view, image for image.
    with np.load(other / "eval" / "predictions.npz") as table:
        assert {"aug_logits", "base_logits", "noisy_logits"} <= set(table.files)
    assert set(summary["failures"]["cross_models"]) == {"base", "noisy"}
    assert all(len(c["others"]) == 2 for c in summary["failures"]["aug"]["cases"])
    text = (other / "report.md").read_text()
    assert "base − aug" in text and "noisy − aug" in text
    assert "augmented" not in summary["calibration"] and set(summary["calibration"]) == {"aug", "base", "noisy"}
    assert any(line.startswith("noisy - aug: mean corruption acc") for line in lines)
    # The augmentation's rules speak of trained pairs only; the per-model ones run for every given model.
    from stress.report.observations import derive_observations

    given_rules = [o.rule for o in derive_observations(summary)]
    assert "corruption_gain" not in given_rules and given_rules.count("worst_corruptions") == 3
    assert "corruption_gain" in [o.rule for o in derive_observations(trained[0])]  # the same rule on the trained run


def test_one_given_model_runs_every_stage(trained, tmp_path):
    _, folder = trained
    summary, other, _ = run(tmp_path, "one", evaluate=(f"mine={folder / 'variants' / 'baseline' / 'model.pt'}",))
    assert list(summary["variants"]) == ["mine"] and summary["robustness"]["gains"] == {}
    assert "cross_model" not in summary["failures"]
    assert (other / "report.html").is_file() and "mine" in (other / "report.md").read_text()


def with_recorded_stats(source: Path, target: Path, mean, std) -> Path:
    """A copy of a project model.pt whose recorded training config says it was trained with `mean` and `std`."""
    saved = load_torch(source)
    saved["config"]["model"].update(mean=list(mean), std=list(std))
    torch.save(saved, target)
    return target


def checked(tmp_path: Path, evaluate: tuple[str, ...], **overrides) -> Pipeline:
    config = merge(ExperimentConfig(), {**SMALL, "out": str(tmp_path / "out"), "run_name": "given", "evaluate": evaluate, **overrides})
    pipeline = Pipeline(config, log=lambda line: None, executor=LocalExecutor())
    pipeline.check_inputs()
    return pipeline


def test_given_model_files_are_standardised_with_the_statistics_their_training_recorded(trained, tmp_path):
    """The project's model.pt records the statistics it trained with; evaluate-only uses them rather than measuring
    the dataset again (which may give others: another copy, another --train-limit, or CIFAR-10's published constants)."""
    _, folder = trained
    recorded = load_torch(folder / "variants" / "baseline" / "model.pt")["config"]["model"]
    assert recorded["mean"] and recorded["std"]
    odd = [with_recorded_stats(folder / "variants" / v / "model.pt", tmp_path / f"{v}.pt", (0.3, 0.31, 0.32), (0.2, 0.21, 0.22))
           for v in VARIANTS]
    pipeline = checked(tmp_path, tuple(f"{v}={path}" for v, path in zip(VARIANTS, odd)))
    assert pipeline.config.model.mean == (0.3, 0.31, 0.32) and pipeline.config.model.std == (0.2, 0.21, 0.22)
    assert pipeline.resolution.describe()["input_stats"]["how"] == "recorded in the checkpoints (model.pt)"
    # Statistics given in the config win over recorded ones.
    given = checked(tmp_path, (f"a={odd[0]}",), **{"model.mean": (0.5, 0.5, 0.5), "model.std": (0.25, 0.25, 0.25)})
    assert given.config.model.mean == (0.5, 0.5, 0.5) and given.resolution.input_stats == "given"
    # A plain state dict records nothing: the dataset's statistics are measured, as for a training run.
    torch.save(load_torch(odd[0])["model"], tmp_path / "plain.pt")
    plain = checked(tmp_path, (f"a={odd[0]}", f"b={tmp_path / 'plain.pt'}"))
    assert plain.config.model.mean == tuple(recorded["mean"]) and plain.resolution.input_stats == "measured on the training split"
    # Checkpoints trained on different statistics cannot share a run.
    with pytest.raises(StressError) as info:
        checked(tmp_path, (f"a={odd[0]}", f"b={folder / 'variants' / 'augmented' / 'model.pt'}"))
    assert "trained with different input statistics" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_bad_checkpoints_and_names_are_one_line_errors_before_anything_is_written(trained, tmp_path):
    _, folder = trained
    good = folder / "variants" / "baseline" / "model.pt"
    (tmp_path / "list.pt").write_bytes(b"")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    wide = merge(ExperimentConfig(), {"model.widths": (16, 16, 16)})
    torch.save(__import__("stress.models", fromlist=["create_model"]).create_model(wide.model).state_dict(), tmp_path / "wide.pt")
    cases = [
        ((f"a={tmp_path / 'none.pt'}",), "no such checkpoint file"),
        ((f"a={tmp_path / 'list.pt'}",), "not a state dict"),
        ((f"a={tmp_path / 'wide.pt'}",), "does not fit --model simple_cnn"),
        ((f"a={good}", f"a={good}"), "model name(s) a given more than once"),
        ((f"a b={good}",), "model name 'a b' must be letters"),
        (("nothing",), "expected NAME=CHECKPOINT"),
    ]
    for evaluate, needle in cases:
        with pytest.raises(StressError) as info:
            run(tmp_path / "out", "bad", evaluate=evaluate)
        assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)
        assert not (tmp_path / "out").exists()


def test_a_run_folder_keeps_its_models(trained, tmp_path):
    _, folder = trained
    given = (f"baseline={folder / 'variants' / 'baseline' / 'model.pt'}",)
    run(tmp_path, "keep", evaluate=given)
    with pytest.raises(StressError, match=r"different config \(evaluate\)"):
        run(tmp_path, "keep", evaluate=(f"other={folder / 'variants' / 'augmented' / 'model.pt'}",))
    copy = tmp_path / "copy.pt"
    shutil.copy(folder / "variants" / "augmented" / "model.pt", copy)
    assert read_json(tmp_path / "keep" / "stages" / "import_baseline.json")["checkpoint"].endswith("baseline/model.pt")
