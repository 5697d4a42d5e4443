"""The bundled demo classifier: a small CNN for the synthetic shapes of ``pipeline.demo_data``.

It takes [0, 1] RGB images of any size (global average pooling before the head) and returns
logits over the six shape classes; the normalisation is inside the module. Grad-CAM's default
layer, the last Conv2d, is ``model.features[12]`` (also reachable as ``model.last_conv``).
Trained by ``scripts/train_demo_model.py``; weights in ``methods/assets/demo_cnn.pt``.
"""

from __future__ import annotations

import torch
from torch import nn

DEMO_CLASS_NAMES = ["circle", "square", "triangle", "star", "cross", "ring"]


class DemoCNN(nn.Module):
    """Four 3x3 conv blocks (16-32-64-64 channels, BatchNorm, ReLU, 2x max-pool after the first
    three), global average pooling and a linear head. At 64 px the last feature map is 8 x 8."""

    def __init__(self, n_classes: int = len(DEMO_CLASS_NAMES)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))
        layers: list[nn.Module] = []
        widths = [3, 16, 32, 64, 64]
        for index, (inputs, outputs) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU()]
            if index < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], n_classes)

    @property
    def last_conv(self) -> nn.Conv2d:
        return self.features[12]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        normalised = (images - self.mean) / self.std
        return self.classifier(self.pool(self.features(normalised)).flatten(1))
