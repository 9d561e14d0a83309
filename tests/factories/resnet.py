"""A CIFAR ResNet (He et al., 2016, section 4.2) as a user would write one: 6n+2 layers, 16/32/64 channels.

`resnet8` (n=1) and `resnet20` (n=3) are what the README's own-model example trains; the factory
signature is the one stress.models calls: factory(num_classes=, image_size=, **model.kwargs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, inputs = [], width
        for i, outputs in enumerate((width, 2 * width, 4 * width)):
            blocks = [Block(inputs if j == 0 else outputs, outputs, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            inputs = outputs
        self.stage1, self.stage2, self.stage3 = stages
        self.head = nn.Linear(inputs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def resnet(num_classes: int, image_size: int, depth: int = 8, width: int = 16) -> nn.Module:
    """CifarResNet of the given depth; image_size is accepted (the network is size-agnostic)."""
    return CifarResNet(depth, num_classes, width)


def resnet8(num_classes: int, image_size: int, width: int = 16) -> nn.Module:
    return CifarResNet(8, num_classes, width)


def resnet20(num_classes: int, image_size: int, width: int = 16) -> nn.Module:
    return CifarResNet(20, num_classes, width)


# -- planted bad factories --------------------------------------------------------
def raises(num_classes: int, image_size: int) -> nn.Module:
    raise RuntimeError("planted: this factory always fails")


def not_a_module(num_classes: int, image_size: int):
    return "a string"


def wrong_classes(num_classes: int, image_size: int) -> nn.Module:
    return CifarResNet(8, num_classes + 1, 4)


def flat(num_classes: int, image_size: int) -> nn.Module:
    """A model without any spatial layer: Grad-CAM has nothing to hook."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, 16), nn.ReLU(), nn.Linear(16, num_classes))
