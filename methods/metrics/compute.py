"""Faithfulness and localisation metrics of saliency maps (pure: tensors in, arrays out).

``compute_metrics`` computes any subset of the metrics the catalogue declares
(``legx.methods.metrics.catalogue.METRICS``) in one call: it scores each declared ``family`` of the
requested metrics once, so the metrics of a family share their pixel ranking or curves. The
perturbation metrics have one module each, with their definitions: key size
(``legx.methods.metrics.key_size``), deletion and insertion (``legx.methods.metrics.deletion_insertion``),
ROAD (``legx.methods.metrics.road``) and the sensitivity curves of the report
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from legx.methods.metrics.deletion_insertion import (
    INSERTION_BASELINES,
    deletion_insertion_auc,
    deletion_insertion_ranked,
)
from legx.methods.metrics.key_size import KEY_SIZE_GRID, key_size, key_size_ranked
from legx.methods.metrics.localisation import ground_truth, region_scores
from legx.methods.metrics.catalogue import BACKGROUNDS, METRICS_BY_NAME, metric_names
from legx.methods.metrics.pixel_ranking import RankedPixels, prepare, target_tensor
from legx.methods.metrics.road import road_curves_prepared, road_scores
from legx.methods.metrics.road_options import ROAD_NOISE, ROAD_STEPS, ROAD_TOLERANCE, check_road_options
from legx.methods.metrics.sensitivity import SENSITIVITY_ALPHAS, sensitivity_curve

__all__ = [
    "BACKGROUNDS", "INSERTION_BASELINES", "KEY_SIZE_GRID", "SENSITIVITY_ALPHAS",
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


@dataclass
class _Inputs:
    """What every family of metrics scores from: the call's data on the model's device and its
    options (``compute_metrics``' keyword arguments)."""

    model: torch.nn.Module
    images: torch.Tensor
    maps: np.ndarray
    full_maps: torch.Tensor
    finite: np.ndarray
    targets: Sequence[int] | torch.Tensor
    regions: np.ndarray | None
    options: dict[str, Any]


def _key_sizes(inputs: _Inputs, names: list[str]) -> dict[str, np.ndarray]:
    options = inputs.options
    backgrounds = [name for name in BACKGROUNDS if f"key_size_{name}" in names]
    ranked = RankedPixels(inputs.images, inputs.full_maps, by_magnitude=True, seed=options["seed"])
    sizes = key_size_ranked(inputs.model, ranked, backgrounds, options["batch_size"],
                            options["key_size_coarse_steps"], exhaustive=False)
    sizes[~inputs.finite] = np.nan
    return {f"key_size_{name}": sizes[:, column] for column, name in enumerate(backgrounds)}


def _deletion_insertion(inputs: _Inputs, names: list[str]) -> dict[str, np.ndarray]:
    options = inputs.options
    ranked = RankedPixels(inputs.images, inputs.full_maps, by_magnitude=False, seed=options["seed"])
    deletion, insertion = deletion_insertion_ranked(
        inputs.model, ranked, target_tensor(inputs.targets, inputs.images), options["auc_steps"],
        options["insertion_baseline"], options["blur_sigma"], options["batch_size"], inputs.finite,
    )
    return {"deletion_auc": deletion, "insertion_auc": insertion}


def _gini(inputs: _Inputs, names: list[str]) -> dict[str, np.ndarray]:
    return {"gini": gini(inputs.maps)}


def _localisation(inputs: _Inputs, names: list[str]) -> dict[str, np.ndarray]:
    n_images = len(inputs.finite)
    if inputs.regions is None:
        return {"pointing_game": np.full(n_images, np.nan), "mask_energy": np.full(n_images, np.nan)}
    pointing, energy = region_scores(inputs.full_maps.cpu().numpy(), inputs.regions,
                                     inputs.options["pointing_tolerance"])
    pointing[~inputs.finite] = np.nan
    energy[~inputs.finite] = np.nan
    return {"pointing_game": pointing, "mask_energy": energy}


def _road(inputs: _Inputs, names: list[str]) -> dict[str, np.ndarray]:
    options = inputs.options
    fractions = check_road_options(options["road_fractions"], options["road_steps"],
                                   options["road_noise"], options["road_tolerance"])
    morf, lerf = road_curves_prepared(
        inputs.model, inputs.images, inputs.full_maps, target_tensor(inputs.targets, inputs.images),
        fractions, options["road_noise"], options["road_tolerance"], options["batch_size"],
        options["seed"], inputs.finite,
    )
    return {**road_scores(morf, lerf, fractions), "road_morf_curve": morf, "road_lerf_curve": lerf}


# How each family the catalogue declares is scored: {column name: values} for the requested names.
_FAMILIES: dict[str, Callable[[_Inputs, list[str]], dict[str, np.ndarray]]] = {
    "key_size": _key_sizes,
    "deletion_insertion": _deletion_insertion,
    "gini": _gini,
    "localisation": _localisation,
    "road": _road,
}


def compute_metrics(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: np.ndarray,
    targets: Sequence[int] | torch.Tensor,
    names: Sequence[str] = metric_names(),
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
    road_fractions: Sequence[float] | None = None,
    road_steps: int = ROAD_STEPS,
    road_noise: float = ROAD_NOISE,
    road_tolerance: float = ROAD_TOLERANCE,
) -> dict[str, np.ndarray]:
    """The metrics ``names`` (declared in ``legx.methods.metrics.catalogue``) of maps (N, h, w)
    of images (N, 3, H, W) in [0, 1]; ``targets`` (N,) are the explained classes
    (deletion/insertion and ROAD; key size counts a change of the clean top-1 class).

    ``masks`` (N, H, W) bool or ``boxes`` (N, 4) (x_min, y_min, x_max, y_max inclusive, in
    image pixels) give the ground truth of pointing game and mask energy; without them, or for
    an image with an empty mask or a NaN box, those are NaN. ``pointing_tolerance``: pixels at
    224 px within which a peak near the region still hits (``legx.methods.metrics.localisation``; 0: off).
    ROAD (``legx.methods.metrics.road``): ``road_fractions`` (each in (0, 1), increasing) or, when
    None, ``road_steps`` evenly spaced fractions (9: the paper's 0.1..0.9); ``road_noise`` the
    imputation noise's standard deviation on the [0, 1] pixel scale; ``road_tolerance`` the
    imputation's relative residual.

    Returns {column: float64 values} for every output column of the requested metrics, in their
    order (``Metric.columns``): (N,) for a score, (N, F) for a stored curve; NaN where a metric
    does not apply (also every metric of a map with non-finite values). Forwards: about 22 per
    image and key-size background, 2 (auc_steps + 1) for deletion and insertion, 2 F for ROAD.
    """
    unknown = [name for name in names if name not in METRICS_BY_NAME]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {', '.join(metric_names())}")
    records = [METRICS_BY_NAME[name] for name in names]
    options = dict(
        batch_size=batch_size, seed=seed, auc_steps=auc_steps, insertion_baseline=insertion_baseline,
        blur_sigma=blur_sigma, key_size_coarse_steps=key_size_coarse_steps,
        pointing_tolerance=pointing_tolerance, road_fractions=road_fractions, road_steps=road_steps,
        road_noise=road_noise, road_tolerance=road_tolerance,
    )
    if any(record.family == "road" for record in records):
        check_road_options(road_fractions, road_steps, road_noise, road_tolerance)
    images_on_device, full_maps, finite = prepare(model, images, maps)
    n_images, _, height, width = images_on_device.shape
    inputs = _Inputs(model, images_on_device, maps, full_maps, finite, targets,
                     ground_truth(masks, boxes, n_images, height, width), options)
    results: dict[str, np.ndarray] = {}
    for family in dict.fromkeys(record.family for record in records):
        wanted = [record.name for record in records if record.family == family]
        results.update(_FAMILIES[family](inputs, wanted))
    return {
        column.name: np.asarray(results[column.name], dtype=np.float64)
        for record in records
        for column in record.columns
    }
