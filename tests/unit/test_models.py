"""stress.models: SimpleCNN shapes, gradients, the Grad-CAM layer and the factory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stress.config import ModelConfig
from stress.errors import StressError
from stress.models import GRADCAM_LAYER, SimpleCNN, create_model


def test_output_shape_and_finite_logits():
    torch.manual_seed(0)
    model = SimpleCNN(ModelConfig())
    logits = model(torch.randn(5, 3, 32, 32))
    assert logits.shape == (5, 10) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    # Different inputs give different logits (the network is not constant).
    assert not torch.allclose(logits[0], logits[1])


def test_parameter_count_matches_hand_computation():
    model = SimpleCNN(ModelConfig())
    # conv: (3*9+1)*32 + (32*9+1)*64 + (64*9+1)*128; fc: (128*4*4+1)*256 + (256+1)*10
    expected = 28 * 32 + 289 * 64 + 577 * 128 + 2049 * 256 + 257 * 10
    assert sum(p.numel() for p in model.parameters()) == expected


def test_every_parameter_receives_a_nonzero_gradient():
    torch.manual_seed(0)
    model = SimpleCNN(ModelConfig())
    images = torch.randn(16, 3, 32, 32)
    labels = torch.arange(16) % 10
    F.cross_entropy(model(images), labels).backward()
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == 10  # 3 conv + 2 linear layers, weight and bias each
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_gradcam_layer_exists_and_yields_8x8_maps():
    model = SimpleCNN(ModelConfig())
    modules = dict(model.named_modules())
    assert GRADCAM_LAYER in modules
    captured = []
    handle = modules[GRADCAM_LAYER].register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        model(torch.randn(3, 3, 32, 32))
    finally:
        handle.remove()
    assert len(captured) == 1
    activation = captured[0]
    assert activation.shape == (3, 128, 8, 8)
    assert (activation >= 0).all()  # after the ReLU, before pooling


def test_config_controls_widths_classes_and_image_size():
    model = SimpleCNN(ModelConfig(widths=(4, 8, 16), hidden=12, num_classes=5, image_size=16))
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    assert dict(model.named_modules())["features.conv3"].out_channels == 16


def test_create_model_builds_simple_cnn_and_rejects_unknown_names():
    assert isinstance(create_model(ModelConfig()), SimpleCNN)
    with pytest.raises(StressError, match="'resnet' is not simple_cnn, torchvision:NAME"):
        create_model(ModelConfig(name="resnet"))


def test_seeded_construction_is_reproducible():
    torch.manual_seed(3)
    first = SimpleCNN(ModelConfig()).state_dict()
    torch.manual_seed(3)
    second = SimpleCNN(ModelConfig()).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
