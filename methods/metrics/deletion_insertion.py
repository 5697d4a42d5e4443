"""Deletion and insertion AUC of saliency maps (pure: tensors in, arrays out).

Deletion and insertion (Petsiuk, Das & Saenko, "RISE", BMVC 2018): the softmax probability of
the target as the pixels, in decreasing order of saliency (signed: the strongest positive
evidence first), are set to 0 (deletion, starting from the image) or copied from the image
onto a baseline (insertion, starting from a Gaussian blur of the image, or from zeros), at
``auc_steps + 1`` evenly spaced fractions; the score is the trapezoidal area under that curve
over the fraction of pixels in [0, 1]. Deletion: lower is better; insertion: higher is better. The
ranking and the batched forwards: ``legx.methods.metrics.pixel_ranking``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from legx.methods.metrics.pixel_ranking import RankedPixels, evaluate, prepare, target_tensor

INSERTION_BASELINES = ("blur", "zero")


def _blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    height, width = images.shape[2:]
    # Reflection padding needs the kernel radius below the image side.
    radius = min(math.ceil(3 * sigma), min(height, width) - 1)
    if radius < 1:
        return images.clone()
    return gaussian_blur(images, [2 * radius + 1, 2 * radius + 1], [sigma, sigma])


def deletion_insertion_auc(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: np.ndarray,
    targets: Sequence[int] | torch.Tensor,
    steps: int = 50,
    insertion_baseline: str = "blur",
    blur_sigma: float = 5.0,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """(deletion AUC, insertion AUC), each float64 (N,), NaN for non-finite maps.

    ``steps``: number of equal pixel-fraction steps (``steps + 1`` forwards per curve);
    ``insertion_baseline``: 'blur' (Gaussian, ``blur_sigma`` pixels, as RISE) or 'zero'.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if insertion_baseline not in INSERTION_BASELINES:
        raise ValueError(
            f"insertion_baseline must be one of {INSERTION_BASELINES}, got {insertion_baseline!r}"
        )
    images, full_maps, finite = prepare(model, images, maps)
    ranked = RankedPixels(images, full_maps, by_magnitude=False, seed=0)
    return deletion_insertion_ranked(
        model, ranked, target_tensor(targets, images), steps, insertion_baseline, blur_sigma,
        batch_size, finite,
    )


def deletion_insertion_ranked(
    model: torch.nn.Module,
    ranked: RankedPixels,
    targets: torch.Tensor,
    steps: int,
    insertion_baseline: str,
    blur_sigma: float,
    batch_size: int,
    finite: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    images = ranked.images
    n_images = images.shape[0]
    device = images.device
    counts = torch.as_tensor(
        np.round(np.linspace(0, ranked.n_pixels, steps + 1)).astype(np.int64), device=device
    )
    image_index = torch.arange(n_images, device=device).repeat_interleave(steps + 1)
    step_counts = counts.repeat(n_images)
    request_targets = targets[image_index]
    if insertion_baseline == "blur":
        baseline = _blurred(images, blur_sigma)
    else:
        baseline = torch.zeros_like(images)

    def deleted(part: slice) -> torch.Tensor:
        index = image_index[part]
        return ranked.paste(images.new_zeros((1, 1, 1, 1)), images[index], index, step_counts[part])

    def inserted(part: slice) -> torch.Tensor:
        index = image_index[part]
        return ranked.paste(images[index], baseline[index], index, step_counts[part])

    areas = []
    for build in (deleted, inserted):
        _, log_probs, _ = evaluate(model, build, len(image_index), batch_size, request_targets)
        curves = np.exp(log_probs).reshape(n_images, steps + 1)
        area = np.trapezoid(curves, dx=1.0 / steps, axis=1)
        area[~finite] = np.nan
        areas.append(area)
    return areas[0], areas[1]
