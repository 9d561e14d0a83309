"""SimpleCNN, the network under test, and a small factory."""

from __future__ import annotations

import torch
from torch import nn

from stress.config import ModelConfig

# Name of the last convolutional layer, as given by `model.named_modules()`.
# Grad-CAM hooks this layer; it is the ReLU output of the third conv block
# (after the non-linearity, before pooling), where maps are 8x8 for 32x32 input.
GRADCAM_LAYER = "features.relu3"


class SimpleCNN(nn.Module):
    """Three 3x3 conv blocks (conv -> ReLU -> 2x2 max-pool), then an MLP classifier.

    Input is a normalised float batch (B, 3, 32, 32); output is logits (B, num_classes).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        c1, c2, c3 = config.widths
        self.features = nn.Sequential()
        in_channels = config.in_channels
        for i, width in enumerate((c1, c2, c3), start=1):
            self.features.add_module(f"conv{i}", nn.Conv2d(in_channels, width, 3, padding=1))
            self.features.add_module(f"relu{i}", nn.ReLU())
            self.features.add_module(f"pool{i}", nn.MaxPool2d(2))
            in_channels = width
        side = config.image_size // 8  # three 2x2 poolings
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3 * side * side, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def create_model(config: ModelConfig) -> nn.Module:
    """Build the model named by `config.name` (only `simple_cnn` for now)."""
    if config.name != "simple_cnn":
        raise ValueError(f"unknown model {config.name!r}; valid: simple_cnn")
    return SimpleCNN(config)
