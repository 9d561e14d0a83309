"""SimpleCNN, the seed experiment's network."""

from __future__ import annotations

import torch
from torch import nn

from stress.config import ModelConfig

# Name of SimpleCNN's Grad-CAM layer in `model.named_modules()`: the ReLU output of the third
# conv block (after the non-linearity, before pooling), where maps are 8x8 for 32x32 input.
# stress.models.layers.find_cam_layer picks the same layer on its own.
GRADCAM_LAYER = "features.relu3"


class SimpleCNN(nn.Module):
    """Three 3x3 conv blocks (conv -> ReLU -> 2x2 max-pool), then an MLP classifier.

    Input is a normalised float batch (B, in_channels, S, S) with S = config.image_size, a multiple
    of 8; output is logits (B, num_classes).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.features = nn.Sequential()
        in_channels = config.in_channels
        for i, width in enumerate(config.widths, start=1):
            self.features.add_module(f"conv{i}", nn.Conv2d(in_channels, width, 3, padding=1))
            self.features.add_module(f"relu{i}", nn.ReLU())
            self.features.add_module(f"pool{i}", nn.MaxPool2d(2))
            in_channels = width
        side = config.image_size // 8  # three 2x2 poolings
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(config.widths[-1] * side * side, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
