"""stress.models' registry, the Grad-CAM layer search, the CIFAR stem and the resolved config, on synthetic shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from stress.config import ExperimentConfig, ModelConfig, load_config_file, merge
from stress.data import load_dataset, split_dataset
from stress.errors import StressError
from stress.models import GRADCAM_LAYER, SimpleCNN, check_cam_layer, check_model, cifar_stem, create_model, find_cam_layer
from stress.resolve import resolve


def one_line_error(call, needle: str) -> str:
    with pytest.raises(StressError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and needle in message, message
    return message


def test_torchvision_resnet18_with_the_cifar_stem_has_a_3x3_stride_1_stem_and_no_max_pool():
    model = create_model(ModelConfig(name="torchvision:resnet18", cifar_stem=True, num_classes=10))
    reference = torchvision.models.resnet18(num_classes=10)  # torchvision's own, for the parts the stem leaves alone
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert (reference.conv1.kernel_size, reference.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(model.maxpool, nn.Identity) and isinstance(reference.maxpool, nn.MaxPool2d)
    assert model.fc.out_features == 10
    names = {n for n, _ in model.named_modules()}
    assert names == {n for n, _ in reference.named_modules()}
    # 32x32 maps stay 32x32 through the stem: layer4 gives 4x4, where the ImageNet stem gives 1x1.
    shapes = {}
    model.layer4.register_forward_hook(lambda m, i, o: shapes.update(adapted=tuple(o.shape)))
    reference.layer4.register_forward_hook(lambda m, i, o: shapes.update(imagenet=tuple(o.shape)))
    probe = torch.randn(2, 3, 32, 32)
    assert model.eval()(probe).shape == (2, 10)
    reference.eval()(probe)
    assert shapes == {"adapted": (2, 512, 4, 4), "imagenet": (2, 512, 1, 1)}
    check_model(model, ModelConfig(name="torchvision:resnet18", num_classes=10))


def test_the_automatic_cam_layer_is_layer4_on_resnet18_and_relu3_on_simple_cnn():
    probe = torch.randn(2, 3, 32, 32)
    assert find_cam_layer(cifar_stem(torchvision.models.resnet18(num_classes=10)), probe) == "layer4"
    assert find_cam_layer(SimpleCNN(ModelConfig()), probe) == GRADCAM_LAYER == "features.relu3"
    # Planted: on the ImageNet stem layer4's map is 1x1, so the last spatial map is layer3's.
    assert find_cam_layer(torchvision.models.resnet18(num_classes=10), probe) == "layer3"
    # A model without spatial maps has none.
    assert find_cam_layer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), probe) is None


def test_cam_layer_checks_name_and_shape():
    model, probe = SimpleCNN(ModelConfig()), torch.randn(2, 3, 32, 32)
    check_cam_layer(model, probe, "features.conv2")
    one_line_error(lambda: check_cam_layer(model, probe, "features.nope"), "no module named 'features.nope'")
    one_line_error(lambda: check_cam_layer(model, probe, "classifier.1"), "not a spatial map")


def test_a_factory_module_in_the_working_directory_is_found_as_python_m_finds_it(tmp_path, monkeypatch):
    """An installed `stress` command's sys.path starts with its bin folder, not the directory it runs in."""
    import sys

    (tmp_path / "stress_test_cwd_factory.py").write_text(
        "from torch import nn\n\ndef build(num_classes, image_size):\n    return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size ** 2, num_classes))\n")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.chdir(tmp_path)
    model = create_model(ModelConfig(name="stress_test_cwd_factory:build", num_classes=7, image_size=8))
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 7)
    assert sys.path[0] == str(tmp_path)
    sys.modules.pop("stress_test_cwd_factory", None)


def test_a_user_factory_gets_classes_size_and_the_kwargs_of_a_config_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  name: tests.factories.resnet:resnet\n  kwargs: {depth: 14, width: 4}\n")
    config = ExperimentConfig.from_dict(load_config_file(path))
    assert config.model.kwargs == {"depth": 14, "width": 4}
    model = create_model(merge(config, {"model.num_classes": 7}).model)
    blocks = [n for n, m in model.named_modules() if type(m).__name__ == "Block"]
    assert len(blocks) == 3 * 2  # depth 14 = 6n + 2 with n = 2
    assert model.stem[0].out_channels == 4 and model.head.out_features == 7


@pytest.mark.parametrize("name, needle", [
    ("torchvision:resnet_nope", "torchvision has no classification model 'resnet_nope'"),
    ("nosuchpackage.models:build", "cannot import 'nosuchpackage.models' (ModuleNotFoundError"),
    ("tests.factories.resnet:missing", "tests.factories.resnet has no callable 'missing'"),
    ("tests.factories.resnet:raises", "raised RuntimeError: planted: this factory always fails"),
    ("tests.factories.resnet:not_a_module", "returned a str, not a torch.nn.Module"),
    ("resnet", "'resnet' is not simple_cnn, torchvision:NAME, timm:NAME or package.module:callable"),
])
def test_bad_model_names_and_factories_give_one_line_errors(name, needle):
    one_line_error(lambda: create_model(ModelConfig(name=name)), needle)


def test_builder_kwargs_it_does_not_take_are_one_line_errors():
    one_line_error(lambda: create_model(ModelConfig(name="torchvision:resnet18", kwargs={"wings": 2})), "building torchvision:resnet18 failed (TypeError")


def test_timm_models_build_with_pretrained_off():
    timm = pytest.importorskip("timm")
    model = create_model(ModelConfig(name="timm:resnet18", num_classes=10, cifar_stem=True))
    assert isinstance(model, timm.models.resnet.ResNet)
    assert model.conv1.kernel_size == (3, 3) and model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    one_line_error(lambda: create_model(ModelConfig(name="timm:nope_net")), "timm has no model 'nope_net'")


def synthetic(tmp_path, **overrides) -> tuple[ExperimentConfig, object]:
    config = merge(ExperimentConfig(), {"data.source": "synthetic", "data.synthetic_train": 120, "data.synthetic_test": 20,
                                        "data.val_size": 20, "out": str(tmp_path), **overrides})
    return config, split_dataset(load_dataset(config.data), config.data, config.train.seed)


def test_a_model_whose_output_is_not_the_datasets_class_count_is_refused_before_anything_is_written(tmp_path):
    config, splits = synthetic(tmp_path, **{"model.name": "tests.factories.resnet:wrong_classes"})
    one_line_error(lambda: resolve(config, splits), "gives output of shape (2, 11) for 2 images; expected (2, 10)")
    assert list(tmp_path.iterdir()) == []


def test_a_model_that_cannot_take_the_images_is_refused(tmp_path):
    config, splits = synthetic(tmp_path, **{"model.name": "tests.factories.resnet:flat", "data.synthetic_size": 48})
    resolved = resolve(config, splits)
    assert resolved.cam_layer == "" and resolved.describe()["gradcam_layer"]["skipped"]
    # SimpleCNN's classifier is sized for the configured image; a mismatched probe fails in one line.
    one_line_error(lambda: check_model(SimpleCNN(ModelConfig()), ModelConfig(image_size=40)), "cannot take a batch of shape (2, 3, 40, 40)")


def test_resolve_fills_in_the_dataset_and_the_model(tmp_path):
    config, splits = synthetic(tmp_path, **{"data.synthetic_classes": 100, "data.synthetic_size": 48, "data.synthetic_train": 400,
                                            "model.name": "torchvision:resnet18", "model.cifar_stem": True})
    resolution = resolve(config, splits)
    resolved = resolution.config
    assert resolved.model.num_classes == 100 and resolved.model.image_size == 48
    assert len(resolved.data.class_names) == 100 and resolved.data.class_names[:2] == ("red disc", "green square")
    assert resolved.stress.cam_layer == "layer4" and resolution.cam_layer_chosen == "automatic"
    # The statistics are those of the training split, against a plain numpy reference.
    pixels = splits.train_x.astype(np.float64) / 255
    np.testing.assert_allclose(resolved.model.mean, pixels.mean(axis=(0, 2, 3)), atol=5e-5)
    np.testing.assert_allclose(resolved.model.std, pixels.std(axis=(0, 2, 3)), atol=5e-5)
    assert resolution.input_stats == "measured on the training split"
    json.dumps(resolution.describe())
    # Given statistics and a given layer are kept.
    given = resolve(merge(config, {"model.mean": (0.5, 0.5, 0.5), "model.std": (0.25, 0.25, 0.25), "stress.cam_layer": "layer3"}), splits)
    assert given.config.model.mean == (0.5, 0.5, 0.5) and given.input_stats == "given"
    assert given.config.stress.cam_layer == "layer3" and given.cam_layer_chosen == "given"


def two_level_images(levels: list[tuple[int, int]], n: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 (n, 3, 32, 32) images whose channel c holds levels[c][0] and levels[c][1], half each: per-channel mean
    (low + high) / 2 and population standard deviation (high - low) / 2, in 0..255 units, exactly."""
    rng = np.random.default_rng(seed)
    half = n * 32 * 32 // 2
    channels = [rng.permutation(np.repeat(np.array(pair, dtype=np.uint8), half)).reshape(n, 32, 32) for pair in levels]
    return np.stack(channels, axis=1)


def test_statistics_within_the_tolerance_of_cifar10s_published_ones_are_replaced_by_them(tmp_path):
    """A 10-class 3-channel split measuring close to CIFAR-10 (a re-encoded copy) trains with the published constants,
    as torchvision's download does; one just beyond the tolerance, or with another class count, keeps its own."""
    import dataclasses

    from stress.constants import CIFAR10_MEAN, CIFAR10_STD
    from stress.resolve import PUBLISHED_TOLERANCE

    config, splits = synthetic(tmp_path)
    # Means 125, 123, 114 and standard deviations 63, 62, 67 (of 255): 0.4902, 0.4824, 0.4471 and 0.2471, 0.2431,
    # 0.2627, within 0.0012 of the published constants (0.4914, 0.4822, 0.4465; 0.2470, 0.2435, 0.2616).
    near = dataclasses.replace(splits, train_x=two_level_images([(62, 188), (61, 185), (47, 181)]))
    resolution = resolve(config, near)
    assert resolution.config.model.mean == CIFAR10_MEAN and resolution.config.model.std == CIFAR10_STD
    assert resolution.input_stats.startswith("CIFAR-10's published constants")
    assert "mean 0.4902, 0.4824, 0.4471, std 0.2471, 0.2431, 0.2627" in resolution.input_stats
    # The red channel 2 levels brighter: mean 127/255 = 0.4980, 0.0066 above the published 0.4914: measured.
    assert 127 / 255 - CIFAR10_MEAN[0] > PUBLISHED_TOLERANCE
    far = resolve(config, dataclasses.replace(splits, train_x=two_level_images([(64, 190), (61, 185), (47, 181)])))
    assert far.config.model.mean == (0.498, 0.4824, 0.4471) and far.config.model.std == (0.2471, 0.2431, 0.2627)
    assert far.input_stats == "measured on the training split"
    # CIFAR-10's statistics with 11 classes: not CIFAR-10.
    eleven = dataclasses.replace(near, class_names=tuple(f"c{i}" for i in range(11)))
    other = resolve(config, eleven)
    assert other.config.model.mean == (0.4902, 0.4824, 0.4471) and other.input_stats == "measured on the training split"


def test_half_given_statistics_and_a_stem_on_simple_cnn_are_refused():
    one_line_error(lambda: ExperimentConfig.from_dict({"model": {"mean": [0.5, 0.5, 0.5]}}), "give both")
    one_line_error(lambda: ExperimentConfig.from_dict({"model": {"mean": [0.5], "std": [0.2]}}), "must list 3 per-channel values")
    one_line_error(lambda: ExperimentConfig.from_dict({"model": {"cifar_stem": True}}), "simple_cnn has none to adapt")
    one_line_error(lambda: ExperimentConfig.from_dict({"model": {"kwargs": [1, 2]}}), "model.kwargs: expected a mapping")
