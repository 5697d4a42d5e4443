"""Pixel rankings and replacements shared by the perturbation metrics (pure: tensors in, arrays
out).

All perturbation metrics rank the pixels of the map upsampled to the image (bilinear,
``legx.methods.upsample_maps``), replace the first ``n`` pixels of that ranking and run the model on
the result, in forward batches of ``batch_size`` on the model's device. Ties in a ranking are
broken by pixel index (row-major), so every result is deterministic.

Backgrounds (pixel values on the [0, 1] scale):

* ``mean``: the image's mean colour; ``black``: 0; ``white``: 1;
* ``noise``: uniform random colours, one fixed draw (from ``seed``, the same for every image of
  a size), so that a pixel keeps its replacement value as the fraction grows and an image's
  score does not depend on the other images of its batch;
* ``dist50`` / ``dist100``: the pixel shifted by k/255 against the sign of its saliency
  (darker where the map is >= 0, brighter where it is < 0; clipped to [0, 1]), the reference's
  ``dist-k``: the first-order direction that lowers the explained score.

``RankedPixels`` holds the images of one call with their rankings and background fills;
``evaluate`` runs the model over requests built a slice at a time and returns, per request,
the top-1 class and the log-probability of a target and of its complement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from legx.methods.base import batches, check_images, model_device
from legx.methods.resize import upsample_maps
from legx.methods.metrics.catalogue import BACKGROUNDS

_DIST_SHIFTS = {"dist50": 50 / 255, "dist100": 100 / 255}

# A model input built for a slice of the requests of one evaluation.
BatchBuilder = Callable[[slice], torch.Tensor]


class RankedPixels:
    """Images of one call with their pixel rankings and background fills, on the model's device.

    ``ranks[i, q]`` is the position of pixel q (row-major) in image i's ranking, so the first
    ``n`` pixels of the ranking are ``ranks < n``: any number of replaced pixels is one compare.
    """

    def __init__(self, images: torch.Tensor, maps: torch.Tensor, by_magnitude: bool, seed: int):
        self.images = images
        n_images, _, height, width = images.shape
        keys = (maps.abs() if by_magnitude else maps).reshape(n_images, -1)
        order = torch.argsort(-keys, dim=1, stable=True)
        positions = torch.arange(height * width, device=images.device).expand(n_images, -1)
        self.ranks = torch.empty_like(order).scatter_(1, order, positions)
        # dist-k moves each pixel against its saliency sign (down where the map is >= 0).
        self.direction = torch.where(maps < 0, 1.0, -1.0).unsqueeze(1).to(images.dtype)
        self.seed = seed
        self._noise: torch.Tensor | None = None

    @property
    def n_pixels(self) -> int:
        return self.ranks.shape[1]

    def noise(self) -> torch.Tensor:
        if self._noise is None:
            # One draw shared by all images, on the CPU: an image's score depends on neither the
            # device nor the other images of its batch.
            generator = torch.Generator().manual_seed(self.seed)
            draw = torch.rand((1, *self.images.shape[1:]), generator=generator)
            self._noise = draw.to(device=self.images.device, dtype=self.images.dtype)
        return self._noise

    def fill(self, background: str, index: torch.Tensor) -> torch.Tensor:
        """The replacement values of ``background`` for the images ``index``, broadcastable to
        (M, 3, H, W) (flat backgrounds stay small: they are only read by ``torch.where``)."""
        if background == "mean":
            return self.images[index].mean(dim=(2, 3), keepdim=True)
        if background in ("black", "white"):
            value = 0.0 if background == "black" else 1.0
            return torch.full((1, 1, 1, 1), value, dtype=self.images.dtype, device=self.images.device)
        if background == "noise":
            return self.noise()
        if background in _DIST_SHIFTS:
            shifted = self.images[index] + _DIST_SHIFTS[background] * self.direction[index]
            return shifted.clamp_(0.0, 1.0)
        raise ValueError(f"unknown background {background!r}; known: {', '.join(BACKGROUNDS)}")

    def paste(
        self, top: torch.Tensor, rest: torch.Tensor, index: torch.Tensor, counts: torch.Tensor
    ) -> torch.Tensor:
        """``top`` on the first ``counts`` pixels of each ranking, ``rest`` (M, 3, H, W) elsewhere;
        ``top`` broadcasts to ``rest``."""
        n_images, _, height, width = rest.shape
        chosen = self.ranks[index] < counts.unsqueeze(1)
        return torch.where(chosen.reshape(n_images, 1, height, width), top, rest)

    def replaced(self, background: str, index: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The images ``index`` with their first ``counts`` pixels replaced by ``background``."""
        return self.paste(self.fill(background, index), self.images[index], index, counts)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    build: BatchBuilder,
    n_requests: int,
    batch_size: int,
    targets: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each request r, batched: the top-1 class, log p and log(1 - p), p the softmax
    probability of ``targets[r]`` (both empty when ``targets`` is None)."""
    top_classes, log_probs, log_complements = [], [], []
    for part in batches(n_requests, batch_size):
        log_softmax = torch.log_softmax(model(build(part)).float(), dim=1)
        top_classes.append(log_softmax.argmax(dim=1))
        if targets is not None:
            target = targets[part].unsqueeze(1)
            log_probs.append(log_softmax.gather(1, target).squeeze(1))
            # log(1 - p) as the log-sum of the other classes: exact where p is close to 1.
            others = log_softmax.scatter(1, target, -math.inf)
            log_complements.append(torch.logsumexp(others, dim=1))

    def joined(parts: list[torch.Tensor]) -> np.ndarray:
        return torch.cat(parts).double().cpu().numpy() if parts else np.zeros(0)

    return joined(top_classes).astype(np.int64), joined(log_probs), joined(log_complements)


def prepare(
    model: torch.nn.Module, images: torch.Tensor, maps: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Images and image-resolution maps on the model's device, and which maps are finite."""
    check_images(images)
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3 or maps.shape[0] != images.shape[0]:
        raise ValueError(
            f"maps must have shape (N, h, w) with N = {images.shape[0]}, got {maps.shape}"
        )
    finite = np.isfinite(maps).all(axis=(1, 2))
    maps = np.where(np.isfinite(maps), maps, 0.0).astype(np.float32)
    height, width = images.shape[2:]
    device = model_device(model)
    full = torch.from_numpy(upsample_maps(maps, height, width)).to(device)
    return images.to(device=device, dtype=torch.float32), full, finite


def target_tensor(targets: Sequence[int] | torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    target_tensor = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
    if target_tensor.shape[0] != images.shape[0]:
        raise ValueError(f"got {target_tensor.shape[0]} targets for {images.shape[0]} images")
    return target_tensor.to(images.device)
