"""The whole pipeline, in this process, on networks and datasets other than the seed's (synthetic shapes, no network).

Each run is tiny; what is checked is that every stage runs for the model and the data given, and
that what depends on them (classes, size, statistics, Grad-CAM layer, corruption tables) is the
dataset's and the model's, recorded, and shown in the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides

from stress.artifacts import read_json
from stress.config import ExperimentConfig, load_config_file, merge
from stress.constants import VARIANTS
from stress.driver.fanout import LocalExecutor
from stress.driver.pipeline import Pipeline
from stress.errors import StressError

pytestmark = pytest.mark.slow  # trainings and in-process pipeline runs, seconds each: make test runs them, make unit does not

SMALL = {**tiny_overrides(), "train.epochs": 1, "stress.corruptions": ("gaussian_noise",), "stress.severities": (1,),
         "stress.stress_limit": 10, "stress.faithfulness_images": 4, "stress.faithfulness_steps": 3, "stress.shards": 1,
         "stress.num_cases": 3}


def run_pipeline(tmp_path: Path, config: ExperimentConfig | None = None, **overrides) -> tuple[dict, Path, list[str]]:
    config = merge(config or ExperimentConfig(), {**SMALL, "out": str(tmp_path), "run_name": "r", **overrides})
    lines: list[str] = []
    summary = Pipeline(config, log=lines.append, executor=LocalExecutor()).run_all()
    return summary, tmp_path / "r", lines


def report_text(folder: Path) -> str:
    return (folder / "report.md").read_text()


def test_torchvision_resnet18_with_the_cifar_stem_runs_every_stage(tmp_path):
    summary, folder, lines = run_pipeline(tmp_path, **{"model.name": "torchvision:resnet18", "model.cifar_stem": True,
                                                       "data.synthetic_train": 120, "data.synthetic_test": 20, "data.val_size": 20,
                                                       "stress.skip_stress": True})
    config, manifest = read_json(folder / "config.json"), read_json(folder / "manifest.json")
    assert config["model"]["name"] == "torchvision:resnet18" and config["stress"]["cam_layer"] == "layer4"
    assert manifest["model"]["gradcam_layer"] == {"name": "layer4", "chosen": "automatic", "skipped": None}
    assert manifest["compile"] == {"requested": "auto", "stress": None, "fourier": None, "why": None}
    from stress.precision import cpu_bf16_flags, cpu_model, cpu_signature

    assert manifest["hardware"]["cpu_model"] == cpu_model()  # what the stage times were measured on
    assert manifest["hardware"].get("cpu_signature") == cpu_signature()  # its generation, where the name is only "AMD EPYC"
    assert manifest["hardware"]["cpu_bf16_flags"] == (", ".join(cpu_bf16_flags()) or "none")
    assert any("Grad-CAM at layer4" in line for line in lines)
    assert summary["explanations"]["layer"] == "layer4" and "centre_share" in summary["explanations"]["baseline"]
    text = report_text(folder)
    assert "torchvision:resnet18 (CIFAR stem)" in text and "layer4 (automatic)" in text
    assert all((folder / c["figure"]).is_file() for v in VARIANTS for c in summary["failures"][v]["cases"])


def test_a_user_factory_with_kwargs_from_a_config_file_on_100_classes(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("model:\n  name: tests.factories.resnet:resnet\n  kwargs: {depth: 8, width: 4}\n")
    summary, folder, _ = run_pipeline(tmp_path, ExperimentConfig.from_dict(load_config_file(path)), **{
        "data.synthetic_classes": 100, "data.synthetic_train": 600, "data.synthetic_test": 200, "data.val_size": 100})
    config = read_json(folder / "config.json")
    assert config["model"]["kwargs"] == {"depth": 8, "width": 4} and config["model"]["num_classes"] == 100
    assert len(config["data"]["class_names"]) == 100 and config["stress"]["cam_layer"] == "stage3"
    assert summary["dataset"]["classes"] == 100
    # Names of the dataset, not CIFAR-10's, in the failure record and the report.
    names = set(config["data"]["class_names"])
    cases = summary["failures"]["baseline"]["cases"]
    assert cases and all(c["true_name"] in names and c["predicted_name"] in names for c in cases)
    assert "airplane" not in report_text(folder)
    with np.load(folder / "eval" / "predictions.npz") as table:
        assert table["baseline_logits"].shape == (200, 100)
    assert summary["robustness"]["corruptions_skipped"] is None  # 32x32: CIFAR-10-C's tables apply (CIFAR-100-C's are the same)


def test_48_pixel_images_skip_the_corruptions_and_run_everything_else(tmp_path):
    summary, folder, lines = run_pipeline(tmp_path, **{"data.synthetic_size": 48})
    assert read_json(folder / "config.json")["model"]["image_size"] == 48
    reason = summary["robustness"]["corruptions_skipped"]
    assert "48x48" in reason and "--image-size 32" in reason
    assert any(line.startswith("stress: corruptions skipped") for line in lines)
    assert summary["robustness"]["baseline"]["mean_corruption_acc"] is None
    assert summary["robustness"]["baseline"]["shifts"] and summary["calibration"]["baseline"]["ece"] is not None
    assert "centre_share" in summary["explanations"]["baseline"]
    assert "Corruptions skipped" in report_text(folder)
    # Resized on purpose to 32, the corruptions run.
    summary32, _, _ = run_pipeline(tmp_path / "resized", **{"data.synthetic_size": 48, "data.image_size": 32})
    assert summary32["robustness"]["corruptions_skipped"] is None and summary32["robustness"]["baseline"]["by_corruption"]


def test_64_pixel_images_get_the_tiny_imagenet_c_tables(tmp_path):
    summary, folder, lines = run_pipeline(tmp_path, **{"data.synthetic_size": 64, "stress.corruptions": ("gaussian_noise", "fog")})
    robustness = summary["robustness"]
    assert robustness["corruptions_skipped"] is None and robustness["corruption_tables"] == "Tiny-ImageNet-C"
    assert set(robustness["baseline"]["by_corruption"]) == {"gaussian_noise", "fog"}
    assert "the Tiny-ImageNet-C tables" in report_text(folder)


def test_an_image_folder_on_disk_runs_with_its_class_names(tmp_path):
    from PIL import Image

    from stress.data import make_synthetic

    raw = make_synthetic(120, 40, seed=2, num_classes=3, size=24)
    for split, n in (("train", 120), ("test", 40)):
        for k in range(n):
            label = ("ant", "bee", "cow")[int(raw[f"y_{split}"][k])]
            (tmp_path / "folder" / split / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(raw[f"x_{split}"][k]).save(tmp_path / "folder" / split / label / f"{k:04d}.png")
    summary, folder, _ = run_pipeline(tmp_path / "out", **{"data.source": str(tmp_path / "folder"), "data.val_size": 20})
    config = read_json(folder / "config.json")
    assert config["data"]["class_names"] == ["ant", "bee", "cow"] and config["model"]["image_size"] == 24
    assert summary["dataset"]["train"] == 100 and summary["dataset"]["test"] == 40
    assert {p["true_name"] for p in summary["failures"]["baseline"]["top_confusions"]} <= {"ant", "bee", "cow"}


def test_a_model_without_a_spatial_layer_runs_without_grad_cam_and_the_report_says_why(tmp_path):
    summary, folder, lines = run_pipeline(tmp_path, **{"model.name": "tests.factories.resnet:flat"})
    assert summary["explanations"] == {"skipped": read_json(folder / "manifest.json")["model"]["gradcam_layer"]["skipped"]}
    assert any(line.startswith("Grad-CAM skipped") for line in lines)
    why = "compiling was measured to pay for simple_cnn only, not tests.factories.resnet:flat"
    assert read_json(folder / "manifest.json")["compile"] == {"requested": "auto", "stress": False, "fourier": None, "why": f"auto: {why}"}
    assert f"stress: torch.compile off (auto: {why})" in lines
    assert not (folder / "eval" / "gradcam_cases.npz").exists()
    assert summary["failures"]["baseline"]["cases"] and summary["robustness"]["baseline"]["by_corruption"]
    text = report_text(folder)
    assert "Grad-CAM skipped: no module of the model gives a spatial map" in text
    assert f"| torch.compile | auto: stress stage eager ({why}) |" in text


def test_bad_models_are_refused_before_anything_is_written(tmp_path):
    for name, needle in (("tests.factories.resnet:wrong_classes", "expected (2, 10)"), ("torchvision:nonet", "no classification model"),
                         ("tests.factories.resnet:raises", "planted")):
        with pytest.raises(StressError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            run_pipeline(tmp_path, **{"model.name": name})
        assert not (tmp_path / "r").exists()
    with pytest.raises(StressError, match="stress.cam_layer: no module named 'layer9'"):
        run_pipeline(tmp_path, **{"model.name": "torchvision:resnet18", "stress.cam_layer": "layer9"})
    assert not (tmp_path / "r").exists()
    json.dumps(SMALL)  # the overrides are plain values
