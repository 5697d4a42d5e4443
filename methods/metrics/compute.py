"""Faithfulness and localisation metrics of saliency maps (pure: tensors in, arrays out).

``compute_metrics`` computes any subset of ``METRIC_NAMES`` (``legx.methods.metrics.catalogue``) in one
call, sharing each pixel ranking between the metrics that use it. The perturbation metrics
have one module each, with their definitions: key size (``legx.methods.metrics.key_size``), deletion and
insertion (``legx.methods.metrics.deletion_insertion``) and the sensitivity curves of the report
(``legx.methods.metrics.sensitivity``); the ranking, the backgrounds and the batched forwards they share
are in ``legx.methods.metrics.pixel_ranking``.

Sparseness: the Gini index of |map| on the map's own grid (Hurley & Rickard 2009, used for
saliency by Chalasani et al. 2020): with c_1 <= ... <= c_n the sorted values,
G = 1 - 2 sum_k (c_k / ||c||_1) (n - k + 1/2) / n; 0 for a constant map (also all-zero),
1 - 1/n for a single non-zero cell.

Localisation, where a ground-truth mask or box exists: the pointing game (tie-aware: the share
of the upsampled map's maximal pixels inside the region) and mask energy (the share of |map|
inside the region), defined in ``legx.methods.metrics.localisation``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from legx.methods.metrics.deletion_insertion import (
    INSERTION_BASELINES,
    deletion_insertion_auc,
    deletion_insertion_ranked,
)
from legx.methods.metrics.key_size import KEY_SIZE_GRID, key_size, key_size_ranked
from legx.methods.metrics.localisation import ground_truth, region_scores
from legx.methods.metrics.catalogue import BACKGROUNDS, METRIC_NAMES
from legx.methods.metrics.pixel_ranking import RankedPixels, prepare, target_tensor
from legx.methods.metrics.sensitivity import SENSITIVITY_ALPHAS, sensitivity_curve

__all__ = [
    "BACKGROUNDS", "INSERTION_BASELINES", "KEY_SIZE_GRID", "METRIC_NAMES", "SENSITIVITY_ALPHAS",
    "compute_metrics", "deletion_insertion_auc", "gini", "key_size", "sensitivity_curve",
]


def gini(maps: np.ndarray) -> np.ndarray:
    """Gini index of |map| per map (N,), on the map's own grid; 0 for a constant map, NaN for
    a map with non-finite values."""
    values = np.abs(np.asarray(maps, dtype=np.float64)).reshape(len(maps), -1)
    finite = np.isfinite(values).all(axis=1)
    values = np.sort(np.where(np.isfinite(values), values, 0.0), axis=1)
    n_cells = values.shape[1]
    totals = values.sum(axis=1)
    weights = (n_cells - np.arange(1, n_cells + 1) + 0.5) / n_cells
    safe_totals = np.where(totals > 0, totals, 1.0)
    index = 1.0 - 2.0 * (values / safe_totals[:, None]) @ weights
    index = np.where(totals > 0, index, 0.0)
    index[~finite] = np.nan
    return index


def compute_metrics(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: np.ndarray,
    targets: Sequence[int] | torch.Tensor,
    names: Sequence[str] = METRIC_NAMES,
    masks: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    batch_size: int = 256,
    seed: int = 0,
    *,
    auc_steps: int = 50,
    insertion_baseline: str = "blur",
    blur_sigma: float = 5.0,
    key_size_coarse_steps: int = 16,
    pointing_tolerance: float = 0.0,
) -> dict[str, np.ndarray]:
    """The metrics ``names`` (a subset of ``METRIC_NAMES``) of maps (N, h, w) of images
    (N, 3, H, W) in [0, 1]; ``targets`` (N,) are the explained classes (deletion/insertion;
    key size counts a change of the clean top-1 class).

    ``masks`` (N, H, W) bool or ``boxes`` (N, 4) (x_min, y_min, x_max, y_max inclusive, in
    image pixels) give the ground truth of pointing game and mask energy; without them, or for
    an image with an empty mask or a NaN box, those are NaN. ``pointing_tolerance``: pixels at
    224 px within which a peak near the region still hits (``legx.methods.metrics.localisation``; 0: off).
    Returns {name: float64 (N,)} with NaN where a metric does not apply (also every metric of a
    map with non-finite values). Forwards: about 22 per image and key-size background,
    2 (auc_steps + 1) for deletion and insertion.
    """
    unknown = [name for name in names if name not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {', '.join(METRIC_NAMES)}")
    images_on_device, full_maps, finite = prepare(model, images, maps)
    n_images, _, height, width = images_on_device.shape
    regions = ground_truth(masks, boxes, n_images, height, width)
    results: dict[str, np.ndarray] = {}

    backgrounds = [name for name in BACKGROUNDS if f"key_size_{name}" in names]
    if backgrounds:
        ranked = RankedPixels(images_on_device, full_maps, by_magnitude=True, seed=seed)
        sizes = key_size_ranked(
            model, ranked, backgrounds, batch_size, key_size_coarse_steps, exhaustive=False
        )
        sizes[~finite] = np.nan
        for column, name in enumerate(backgrounds):
            results[f"key_size_{name}"] = sizes[:, column]

    if "deletion_auc" in names or "insertion_auc" in names:
        ranked = RankedPixels(images_on_device, full_maps, by_magnitude=False, seed=seed)
        results["deletion_auc"], results["insertion_auc"] = deletion_insertion_ranked(
            model, ranked, target_tensor(targets, images_on_device), auc_steps,
            insertion_baseline, blur_sigma, batch_size, finite,
        )

    if "gini" in names:
        results["gini"] = gini(maps)

    if "pointing_game" in names or "mask_energy" in names:
        if regions is None:
            pointing, energy = np.full(n_images, np.nan), np.full(n_images, np.nan)
        else:
            pointing, energy = region_scores(full_maps.cpu().numpy(), regions, pointing_tolerance)
            pointing[~finite] = np.nan
            energy[~finite] = np.nan
        results["pointing_game"], results["mask_energy"] = pointing, energy

    return {name: np.asarray(results[name], dtype=np.float64) for name in names}
