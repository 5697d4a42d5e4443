"""A tiny model whose right saliency answer is known, shared by the tests of the baselines.

``RegionModel``: class 0's logit reads only the pixels of one rectangle (``REGION``) through a
3 x 3 brightness conv, a ReLU and a masked average; class 1 is a constant. ``region_images``
puts a bright square inside the region and an equally bright distractor outside it, so a map
that follows brightness alone fails, and one that follows the model's evidence passes.
``region_case`` explains three of them with a method at the settings of its tests
(``REGION_SETTINGS``), once per test session.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

SIZE = 32
REGION = (4, 16, 18, 30)  # rows 4:16, cols 18:30
DISTRACTOR = (18, 28, 3, 13)


class RegionModel(nn.Module):
    def __init__(self, size: int = SIZE, region: tuple[int, int, int, int] = REGION) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / 27)
            self.conv.bias.fill_(-0.45)
            self.head.weight.zero_()
            self.head.weight[0] = 4.0
            self.head.bias.copy_(torch.tensor([0.0, 2.0]))
        mask = torch.zeros(1, 1, size, size)
        top, bottom, left, right = region
        mask[..., top:bottom, left:right] = size * size / ((bottom - top) * (right - left))
        self.register_buffer("region_mask", mask)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.relu(self.conv(images)) * self.region_mask
        return self.head(features.mean(dim=(2, 3)))


def region_images(count: int, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """Dim noise (0 to 0.6) with a bright square in the region and a bright distractor."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.6 * torch.rand(count, 3, size, size, generator=generator)
    for top, bottom, left, right in (REGION, DISTRACTOR):
        patch = images[:, :, top + 2 : bottom - 2, left + 2 : right - 2]
        images[:, :, top + 2 : bottom - 2, left + 2 : right - 2] = 0.8 + patch / 3
    return images


def region_mask(region: tuple[int, int, int, int] = REGION, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    top, bottom, left, right = region
    mask[top:bottom, left:right] = True
    return mask


def mass_in_region(maps: np.ndarray, region=REGION, size: int = SIZE) -> np.ndarray:
    """Share of each map's positive mass inside the region, after resizing to the image."""
    from legx.methods import upsample_maps

    positive = np.clip(upsample_maps(maps, size, size), 0, None)
    inside = positive[:, region_mask(region, size)].sum(axis=1)
    return inside / np.maximum(positive.reshape(len(maps), -1).sum(axis=1), 1e-12)


def argmax_in_region(maps: np.ndarray, region=REGION, size: int = SIZE) -> np.ndarray:
    """Whether each map's maximum, after resizing to the image, lies in the region."""
    from legx.methods import upsample_maps

    upsampled = upsample_maps(maps, size, size).reshape(len(maps), -1)
    return region_mask(region, size).reshape(-1)[upsampled.argmax(axis=1)]


# Each method's settings in the region tests: small budgets that still find the region.
REGION_SETTINGS: dict[str, dict] = {
    "lime": dict(n_samples=120, n_segments=30, batch_size=32),
    "kernel-shap": dict(n_samples=120, n_segments=30, batch_size=32),
    "partition-shap": dict(max_evals=300, batch_size=50),
    "meaningful-perturbation": dict(mask_size=16, n_iterations=60, batch_size=2),
}


@functools.cache
def region_case(method: str) -> tuple[RegionModel, torch.Tensor, np.ndarray]:
    """(model, images, maps): ``RegionModel``, three ``region_images`` and the maps of
    ``method`` at ``REGION_SETTINGS[method]``; computed once, shared by the tests that read them."""
    from legx.methods import get_explainer

    model, images = RegionModel().eval(), region_images(3)
    return model, images, get_explainer(method, **REGION_SETTINGS[method]).explain(model, images)


def score_change(model: nn.Module, images: torch.Tensor, baseline: str) -> torch.Tensor:
    """f(x) - f(baseline image) per image, f the softmax probability of class 0: what the
    attributions of a method that is efficient (Shapley, Owen) add up to."""
    from legx.methods.superpixels import baseline_images

    with torch.no_grad():
        clean = torch.softmax(model(images), 1)[:, 0]
        removed = torch.softmax(model(baseline_images(images, baseline)), 1)[:, 0]
    return clean - removed


RED_SQUARE = (4, 12, 20, 28)
GREEN_SQUARE = (20, 28, 4, 12)


class ColorModel(nn.Module):
    """Class 0 counts red pixels, class 1 green pixels (a 3 x 3 conv, ReLU, global average).

    Evidence of each class sits in its own conv channel, which is what Grad-CAM's channel
    weights assume; on ``color_images`` class 0 is top-1 and lives in ``RED_SQUARE``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, :, 1, 1] = torch.tensor([1.0, -1.0, -1.0])
            self.conv.weight[1, :, 1, 1] = torch.tensor([-1.0, 1.0, -1.0])
            self.conv.bias.zero_()
            self.head.weight.copy_(torch.tensor([[60.0, 0.0], [0.0, 40.0]]))
            self.head.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.relu(self.conv(images))).flatten(1))


def color_images(count: int, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """Grey noise with a red square (``RED_SQUARE``) and a green square (``GREEN_SQUARE``)."""
    generator = torch.Generator().manual_seed(seed)
    grey = 0.3 + 0.3 * torch.rand(count, 1, size, size, generator=generator)
    images = grey.expand(count, 3, size, size).clone()
    images += 0.05 * torch.rand(count, 3, size, size, generator=generator)
    for (top, bottom, left, right), colour in ((RED_SQUARE, 0), (GREEN_SQUARE, 1)):
        images[:, :, top:bottom, left:right] = 0.1
        images[:, colour, top:bottom, left:right] = 0.9
    return images.clamp(0, 1)


TEXTURE_SQUARE = (10, 22, 14, 26)


class TextureModel(nn.Module):
    """Class 0 measures fine texture (|Laplacian| of the luminance, averaged); class 1 is a
    constant. On ``texture_images`` the only texture is a checkerboard in ``TEXTURE_SQUARE``."""

    def __init__(self) -> None:
        super().__init__()
        laplacian = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]]) / 3
        self.conv = nn.Conv2d(3, 2, 3, padding=1, padding_mode="replicate")
        self.relu = nn.ReLU()
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.stack([laplacian, -laplacian])[:, None].expand(2, 3, 3, 3))
            self.conv.bias.zero_()
            self.head.weight.copy_(torch.tensor([[3.0, 3.0], [0.0, 0.0]]))
            self.head.bias.copy_(torch.tensor([0.0, 0.5]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(images)).mean(dim=(2, 3)))


def texture_images(count: int, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """A smooth colour ramp (no texture) with a checkerboard in ``TEXTURE_SQUARE``."""
    generator = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.3, 0.6, size)
    images = torch.empty(count, 3, size, size)
    for index in range(count):
        tint = 0.1 * torch.rand(3, 1, 1, generator=generator)
        images[index] = ramp[None, None, :] + tint
    top, bottom, left, right = TEXTURE_SQUARE
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    checker = ((rows + cols) % 2).float()[top:bottom, left:right]
    images[:, :, top:bottom, left:right] = 0.25 + 0.5 * checker
    return images
