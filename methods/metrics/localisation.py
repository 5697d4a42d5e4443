"""Localisation metrics of saliency maps against a ground-truth region (pure numpy).

Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016),
defined for ties. A map's maximum is often a plateau: a saturated perturbation mask, a grey
dilation, a piecewise-constant LP solution, or the 2 x 2 pixels that bilinear upsampling puts
around a cell centre. ``argmax`` would pick the plateau's first pixel in row-major order, its
top-left corner, so the score would depend on how numpy breaks ties. Here the peak is drawn
uniformly from the maximal set M = {q : m_q >= max(m) - ``TIE_TOLERANCE`` (max(m) - min(m))},
and the score is the expected hit, |M inside R| / |M|: 1 or 0 for a single peak, the region's
share of the image for a constant map. ``TIE_TOLERANCE`` (1e-5 of the map's range) only absorbs
float32 rounding of the upsampling, which is about 1e-7 of the map's magnitude; the maps scored
here have a magnitude at most about their range (a ReLU map, a mask, a signed map).

Zhang et al. count a hit within 15 pixels of the region at 224 px (they resize images to 224),
to forgive a small offset of a coarse map. ``pointing_tolerance`` (pixels at 224, 0 by default:
off) does the same, scaled with the image: a maximal pixel hits when its Euclidean distance to
the region is at most ``pointing_tolerance * min(H, W) / 224``.

An image may hold several boxes of its class (ImageNet's validation set often does): the region
is their union (``boxes_union``), so a peak in any of them hits.

Mask energy: the share of the map's absolute mass inside the region (the energy-based pointing
game of Score-CAM, Wang et al. 2020, on |map|).

Both are NaN where the region is empty (no ground truth) or the map has no mass (all zero). Their
chance level, the score of a map that knows nothing, is the region's share of the image
(``region_share``): the expected hit of a uniformly drawn peak and the mass inside the region of
a constant map.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from legx.methods.resize import upsample_maps

TIE_TOLERANCE = 1e-5
POINTING_TOLERANCE_SIDE = 224


def boxes_to_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean masks (N, height, width) of boxes (N, 4) = (x_min, y_min, x_max, y_max), inclusive
    pixel indices; a row with a NaN gives an empty mask (no ground truth)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    masks = np.zeros((len(boxes), height, width), dtype=bool)
    for mask, box in zip(masks, boxes):
        if not np.isfinite(box).all():
            continue
        x_min, y_min = max(int(box[0]), 0), max(int(box[1]), 0)
        x_max, y_max = min(int(box[2]), width - 1), min(int(box[3]), height - 1)
        mask[y_min : y_max + 1, x_min : x_max + 1] = True
    return masks


def boxes_union(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """The union of boxes (K, 4) (inclusive pixel indices, as ``boxes_to_masks``) as one boolean
    region (height, width): the ground truth of an image with several boxes of the explained
    class. K = 0 gives an empty region (no ground truth)."""
    return boxes_to_masks(boxes, height, width).any(axis=0)


def maximal_pixels(full_maps: np.ndarray) -> np.ndarray:
    """Boolean (N, H, W): the pixels within ``TIE_TOLERANCE`` of the map's range of its maximum."""
    values = np.asarray(full_maps, dtype=np.float64)
    flat = values.reshape(len(values), -1)
    top, bottom = flat.max(axis=1), flat.min(axis=1)
    threshold = top - TIE_TOLERANCE * (top - bottom)
    return values >= threshold[:, None, None]


def _hit_regions(regions: np.ndarray, pointing_tolerance: float) -> np.ndarray:
    """The pixels that count as a hit: the regions, grown by the scaled pixel tolerance."""
    if pointing_tolerance < 0:
        raise ValueError(f"pointing_tolerance must be >= 0 pixels, got {pointing_tolerance}")
    if pointing_tolerance == 0:
        return regions
    height, width = regions.shape[1:]
    radius = pointing_tolerance * min(height, width) / POINTING_TOLERANCE_SIDE
    grown = np.zeros_like(regions)
    for index, region in enumerate(regions):
        if region.any():
            grown[index] = distance_transform_edt(~region) <= radius
    return grown


def pointing_game(
    full_maps: np.ndarray, regions: np.ndarray, pointing_tolerance: float = 0.0
) -> np.ndarray:
    """Tie-aware pointing game per map, float64 (N,) in [0, 1]: the share of the maximal pixels
    of each image-resolution map (N, H, W) inside its boolean region (N, H, W), the region grown
    by ``pointing_tolerance`` pixels at 224 px; NaN where the region is empty or the map has no
    mass. Maps must be finite."""
    full_maps = np.asarray(full_maps)
    regions = np.asarray(regions, dtype=bool)
    if full_maps.shape != regions.shape or full_maps.ndim != 3:
        raise ValueError(
            f"maps and regions must both have shape (N, H, W), got {full_maps.shape} and {regions.shape}"
        )
    n_images = len(full_maps)
    peaks = maximal_pixels(full_maps).reshape(n_images, -1)
    hits = _hit_regions(regions, pointing_tolerance).reshape(n_images, -1)
    score = (peaks & hits).sum(axis=1) / peaks.sum(axis=1)
    no_mass = ~np.abs(full_maps.reshape(n_images, -1)).any(axis=1)
    score[no_mass | ~regions.reshape(n_images, -1).any(axis=1)] = np.nan
    return score.astype(np.float64)


def mask_energy(full_maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Share of |map| inside the region per map, float64 (N,); NaN where the region is empty or
    the map has no mass."""
    n_images = len(full_maps)
    magnitude = np.abs(np.asarray(full_maps, dtype=np.float64)).reshape(n_images, -1)
    flat_regions = np.asarray(regions, dtype=bool).reshape(n_images, -1)
    totals = magnitude.sum(axis=1)
    inside = (magnitude * flat_regions).sum(axis=1)
    energy = np.divide(inside, totals, out=np.full(n_images, np.nan), where=totals > 0)
    energy[~flat_regions.any(axis=1)] = np.nan
    return energy


def region_share(regions: np.ndarray) -> np.ndarray:
    """The region's share of the image per region (N,), the chance level of both scores; NaN for
    an empty region."""
    flat = np.asarray(regions, dtype=bool).reshape(len(regions), -1)
    share = flat.mean(axis=1)
    share[~flat.any(axis=1)] = np.nan
    return share


def region_scores(
    full_maps: np.ndarray, regions: np.ndarray, pointing_tolerance: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(pointing game, mask energy) of finite image-resolution maps against boolean regions."""
    return pointing_game(full_maps, regions, pointing_tolerance), mask_energy(full_maps, regions)


def ground_truth(
    masks: np.ndarray | None, boxes: np.ndarray | None, n_images: int, height: int, width: int
) -> np.ndarray | None:
    """Boolean regions (N, H, W) from masks or boxes, or None when neither is given."""
    if masks is not None and boxes is not None:
        raise ValueError("give masks or boxes, not both")
    if masks is None and boxes is None:
        return None
    regions = (
        np.asarray(masks, dtype=bool) if masks is not None else boxes_to_masks(boxes, height, width)
    )
    if regions.shape != (n_images, height, width):
        raise ValueError(f"masks must have shape {(n_images, height, width)}, got {regions.shape}")
    return regions


def localisation(
    maps: np.ndarray,
    masks: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    pointing_tolerance: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(pointing game, mask energy) per map, float64 (N,), against masks (N, H, W) bool (the maps
    are upsampled to (H, W), bilinear) or boxes (N, 4) in the maps' own pixels. NaN where an
    image has no ground truth (empty mask, NaN box) or the map has no mass or non-finite values."""
    maps = np.asarray(maps, dtype=np.float32)
    height, width = np.shape(masks)[1:] if masks is not None else maps.shape[1:]
    regions = ground_truth(masks, boxes, len(maps), height, width)
    if regions is None:
        raise ValueError("give masks or boxes")
    full = upsample_maps(maps, height, width)
    finite = np.isfinite(full).all(axis=(1, 2))
    pointing, energy = region_scores(np.where(np.isfinite(full), full, 0.0), regions, pointing_tolerance)
    pointing[~finite] = np.nan
    energy[~finite] = np.nan
    return pointing, energy
