"""The bundled demo classifier: a small CNN for the synthetic shapes of ``legx.pipeline.demo.data``.

It takes [0, 1] RGB images of any size (attention pooling before the head) and returns
logits over the six shape classes; the normalisation is inside the module. Grad-CAM's default
layer is the one the model declares as ``last_conv``: ``model.features[11]``, the last
convolution of the feature map the head pools (the last Conv2d in module order is the
one-channel attention convolution beside it).
Trained by ``scripts/train_demo_model.py``; weights in ``methods/assets/demo_cnn.pt``.

The head pools the last feature map with a spatial softmax attention (a 1x1 convolution gives
one logit per cell) instead of a plain average: with the object a small part of a cluttered
image, an average would dilute its features with the background's.

The features see a receptive field of 18 px (three 3x3 convolutions, two 2x2 pools, a 1x1
convolution), about the size of a demo object, in the manner of BagNet (Brendel & Bethge, ICLR
2019): the class is read from a bag of local shape parts. A deeper stack reached the same accuracy
but its input gradient spread over a ~40 px square around the object, so that even the exact
gradient pointed inside the object for only half of the images; with the small field the model's
sensitivity, and so what LEG measures, lies on and around the object.
"""

from __future__ import annotations

import torch
from torch import nn

from legx.methods.models.input_size import DEMO_INPUT_SIZE

DEMO_CLASS_NAMES = ["circle", "square", "triangle", "star", "cross", "ring"]


class DemoCNN(nn.Module):
    """Three 3x3 conv blocks (16-32-64 channels, BatchNorm, ReLU, 2x max-pool after the first
    two) and a 1x1 conv block (64), softmax attention pooling over the cells of the last feature
    map and a linear head. At 64 px the last feature map is 16 x 16. ``input_size``: the side
    of the images it was trained on (``scripts/train_demo_model.py``); its 18 px field sees a
    whole object only at that scale."""

    input_size = DEMO_INPUT_SIZE

    def __init__(self, n_classes: int = len(DEMO_CLASS_NAMES)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))
        layers: list[nn.Module] = []
        widths = [3, 16, 32, 64, 64]
        kernels = [3, 3, 3, 1]
        for index, (inputs, outputs) in enumerate(zip(widths[:-1], widths[1:])):
            kernel = kernels[index]
            layers += [nn.Conv2d(inputs, outputs, kernel, padding=kernel // 2), nn.BatchNorm2d(outputs), nn.ReLU()]
            if index < 2:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.attention = nn.Conv2d(widths[-1], 1, kernel_size=1)
        self.classifier = nn.Linear(widths[-1], n_classes)

    @property
    def last_conv(self) -> nn.Conv2d:
        return self.features[11]

    def forward_with_attention(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, K) and the attention logits (N, 1, h, w) of the last feature map's cells."""
        features = self.features((images - self.mean) / self.std)
        attention_logits = self.attention(features)
        weights = attention_logits.flatten(1).softmax(dim=1).view_as(attention_logits)
        return self.classifier((features * weights).sum(dim=(2, 3))), attention_logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_with_attention(images)[0]
