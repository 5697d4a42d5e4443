"""Faithfulness and localisation metrics of saliency maps (pure: tensors in, arrays out).

All perturbation metrics rank the pixels of the map upsampled to the image (bilinear,
``methods.upsample_maps``), replace the first ``n`` pixels of that ranking and run the model on
the result, in forward batches of ``batch_size`` on the model's device. Ties in a ranking are
broken by pixel index (row-major), so every result is deterministic.

Key size (Luo, Barut & Jin, ICCV 2021, the key-size table of the reference code): pixels are
taken in decreasing order of |saliency|; the first ``int(alpha * H * W)`` are replaced by a
background; the key size is the first alpha of the grid ``linspace(0, 1, 1000)`` at which the
top-1 class differs from the clean image's top-1 class, and 1 if it never does. Lower is better.
Backgrounds (pixel values on the [0, 1] scale):

* ``mean``: the image's mean colour; ``black``: 0; ``white``: 1;
* ``noise``: uniform random colours, one fixed draw (from ``seed``, the same for every image of
  a size), so that a pixel keeps its replacement value as the fraction grows and an image's
  score does not depend on the other images of its batch;
* ``dist50`` / ``dist100``: the pixel shifted by k/255 against the sign of its saliency
  (darker where the map is >= 0, brighter where it is < 0; clipped to [0, 1]), the reference's
  ``dist-k``: the first-order direction that lowers the explained score.

The search over the 1000-step grid assumes that once the class has changed it stays changed
for a while: a coarse scan of ``key_size_coarse_steps`` evenly spaced grid points (one batched
round) brackets the first coarse point that changes the class, then bisection inside that
bracket (about log2(1000 / coarse_steps) rounds) finds the first changing grid point, assuming
the change is monotone within the bracket. The answer equals the full scan unless the class
changes and changes back within one coarse interval before the first coarse change, or flips
back and forth within the bracket. With the default 16 coarse steps this costs about
16 + 6 forwards per image and background instead of 999; ``exhaustive=True`` scans the whole
grid.

Deletion and insertion (Petsiuk, Das & Saenko, "RISE", BMVC 2018): the softmax probability of
the target as the pixels, in decreasing order of saliency (signed: the strongest positive
evidence first), are set to 0 (deletion, starting from the image) or copied from the image
onto a baseline (insertion, starting from a Gaussian blur of the image, or from zeros), at
``auc_steps + 1`` evenly spaced fractions; the score is the trapezoidal area under that curve
over the fraction of pixels in [0, 1]. Deletion: lower is better; insertion: higher is better.

Sparseness: the Gini index of |map| on the map's own grid (Hurley & Rickard 2009, used for
saliency by Chalasani et al. 2020): with c_1 <= ... <= c_n the sorted values,
G = 1 - 2 sum_k (c_k / ||c||_1) (n - k + 1/2) / n; 0 for a constant map (also all-zero),
1 - 1/n for a single non-zero cell.

Localisation, where a ground-truth mask or box exists: the pointing game (tie-aware: the share
of the upsampled map's maximal pixels inside the region) and mask energy (the share of |map|
inside the region), defined in ``methods.localisation``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from methods.base import batches, check_images, model_device, predict_logits
from methods.localisation import ground_truth, region_scores
from methods.metric_names import BACKGROUNDS, METRIC_NAMES, SENSITIVITY_ALPHAS
from methods.resize import upsample_maps

KEY_SIZE_GRID: np.ndarray = np.linspace(0.0, 1.0, 1000)
INSERTION_BASELINES = ("blur", "zero")

_DIST_SHIFTS = {"dist50": 50 / 255, "dist100": 100 / 255}

# A model input built for a slice of the requests of one evaluation.
BatchBuilder = Callable[[slice], torch.Tensor]


class _Ranked:
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
def _evaluate(
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


def _prepare(
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


def _coarse_points(coarse_steps: int) -> np.ndarray:
    if coarse_steps < 1:
        raise ValueError(f"key_size_coarse_steps must be >= 1, got {coarse_steps}")
    last = len(KEY_SIZE_GRID) - 1
    return np.unique(np.linspace(0, last, coarse_steps + 1).round().astype(np.int64))[1:]


def _key_size_ranked(
    model: torch.nn.Module,
    ranked: _Ranked,
    backgrounds: Sequence[str],
    batch_size: int,
    coarse_steps: int,
    exhaustive: bool,
) -> np.ndarray:
    n_images = ranked.images.shape[0]
    device = ranked.images.device
    clean_top = predict_logits(model, ranked.images, batch_size).argmax(dim=1).cpu().numpy()
    pixel_counts = np.floor(KEY_SIZE_GRID * ranked.n_pixels).astype(np.int64)
    # One search per (image, background) pair; requests name a pair and a grid index.
    pair_image = np.repeat(np.arange(n_images), len(backgrounds))
    pair_background = np.tile(np.arange(len(backgrounds)), n_images)

    def changed(pairs: np.ndarray, grid_index: np.ndarray) -> np.ndarray:
        image_index = torch.as_tensor(pair_image[pairs], device=device)
        background_index = pair_background[pairs]
        counts = torch.as_tensor(pixel_counts[grid_index], device=device)

        def build(part: slice) -> torch.Tensor:
            out = ranked.images.new_empty((part.stop - part.start, *ranked.images.shape[1:]))
            part_backgrounds = background_index[part]
            for code in np.unique(part_backgrounds):
                rows = np.flatnonzero(part_backgrounds == code)
                rows_t = torch.as_tensor(rows, device=device)
                out[rows_t] = ranked.replaced(
                    backgrounds[code], image_index[part][rows_t], counts[part][rows_t]
                )
            return out

        top, _, _ = _evaluate(model, build, len(pairs), batch_size)
        return top != clean_top[pair_image[pairs]]

    n_pairs = len(pair_image)
    all_pairs = np.arange(n_pairs)
    if exhaustive:
        candidates = np.arange(1, len(KEY_SIZE_GRID))
    else:
        candidates = _coarse_points(coarse_steps)
    # Grid points replacing the same number of pixels give the same image: evaluate one each.
    unique_counts, first_of_count = np.unique(pixel_counts[candidates], return_index=True)
    probe = candidates[first_of_count]
    pairs = np.repeat(all_pairs, len(probe))
    grid = np.tile(probe, n_pairs)
    flips = changed(pairs, grid).reshape(n_pairs, len(probe))
    # Expand the verdict back to every candidate (same count -> same verdict).
    verdict = flips[:, np.searchsorted(unique_counts, pixel_counts[candidates])]
    found = verdict.any(axis=1)
    first = verdict.argmax(axis=1)
    high = np.where(found, candidates[first], len(KEY_SIZE_GRID))
    if exhaustive:
        low = high - 1
    else:
        previous = np.concatenate([[0], candidates])
        low = np.where(found, previous[first], len(KEY_SIZE_GRID))
    # Bisection: the class is unchanged at `low` and changed at `high` for every open pair.
    while True:
        open_pairs = np.flatnonzero(found & (high - low > 1))
        if open_pairs.size == 0:
            break
        middle = (low[open_pairs] + high[open_pairs]) // 2
        flipped = changed(open_pairs, middle)
        high[open_pairs] = np.where(flipped, middle, high[open_pairs])
        low[open_pairs] = np.where(flipped, low[open_pairs], middle)
    sizes = np.where(found, KEY_SIZE_GRID[np.minimum(high, len(KEY_SIZE_GRID) - 1)], 1.0)
    return sizes.reshape(n_images, len(backgrounds))


def key_size(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: np.ndarray,
    backgrounds: Sequence[str] = BACKGROUNDS,
    batch_size: int = 256,
    seed: int = 0,
    coarse_steps: int = 16,
    exhaustive: bool = False,
) -> np.ndarray:
    """Key size per image and background: float64 (N, len(backgrounds)), NaN for non-finite
    maps. See the module docstring for the definition and the search."""
    unknown = [name for name in backgrounds if name not in BACKGROUNDS]
    if unknown:
        raise ValueError(f"unknown backgrounds {unknown}; known: {', '.join(BACKGROUNDS)}")
    images, full_maps, finite = _prepare(model, images, maps)
    ranked = _Ranked(images, full_maps, by_magnitude=True, seed=seed)
    sizes = _key_size_ranked(model, ranked, list(backgrounds), batch_size, coarse_steps, exhaustive)
    sizes[~finite] = np.nan
    return sizes


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
    images, full_maps, finite = _prepare(model, images, maps)
    ranked = _Ranked(images, full_maps, by_magnitude=False, seed=0)
    return _deletion_insertion_ranked(
        model, ranked, _target_tensor(targets, images), steps, insertion_baseline, blur_sigma,
        batch_size, finite,
    )


def _target_tensor(targets: Sequence[int] | torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    target_tensor = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
    if target_tensor.shape[0] != images.shape[0]:
        raise ValueError(f"got {target_tensor.shape[0]} targets for {images.shape[0]} images")
    return target_tensor.to(images.device)


def _deletion_insertion_ranked(
    model: torch.nn.Module,
    ranked: _Ranked,
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
        _, log_probs, _ = _evaluate(model, build, len(image_index), batch_size, request_targets)
        curves = np.exp(log_probs).reshape(n_images, steps + 1)
        area = np.trapezoid(curves, dx=1.0 / steps, axis=1)
        area[~finite] = np.nan
        areas.append(area)
    return areas[0], areas[1]


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
    224 px within which a peak near the region still hits (``methods.localisation``; 0: off).
    Returns {name: float64 (N,)} with NaN where a metric does not apply (also every metric of a
    map with non-finite values). Forwards: about 22 per image and key-size background,
    2 (auc_steps + 1) for deletion and insertion.
    """
    unknown = [name for name in names if name not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {', '.join(METRIC_NAMES)}")
    images_on_device, full_maps, finite = _prepare(model, images, maps)
    n_images, _, height, width = images_on_device.shape
    regions = ground_truth(masks, boxes, n_images, height, width)
    results: dict[str, np.ndarray] = {}

    backgrounds = [name for name in BACKGROUNDS if f"key_size_{name}" in names]
    if backgrounds:
        ranked = _Ranked(images_on_device, full_maps, by_magnitude=True, seed=seed)
        sizes = _key_size_ranked(
            model, ranked, backgrounds, batch_size, key_size_coarse_steps, exhaustive=False
        )
        sizes[~finite] = np.nan
        for column, name in enumerate(backgrounds):
            results[f"key_size_{name}"] = sizes[:, column]

    if "deletion_auc" in names or "insertion_auc" in names:
        ranked = _Ranked(images_on_device, full_maps, by_magnitude=False, seed=seed)
        results["deletion_auc"], results["insertion_auc"] = _deletion_insertion_ranked(
            model, ranked, _target_tensor(targets, images_on_device), auc_steps,
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


def sensitivity_curve(
    model: torch.nn.Module,
    image: torch.Tensor,
    saliency_map: np.ndarray,
    target: int,
    background: str,
    alphas: np.ndarray = SENSITIVITY_ALPHAS,
    batch_size: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Log-odds of ``target`` relative to the clean image, log(p / (1 - p)) - log(p0 / (1 - p0)),
    as the first ``int(alpha * H * W)`` pixels by |saliency| are replaced by ``background``, for
    each alpha (the sensitivity analysis of Luo, Barut & Jin 2021). ``image``: (3, H, W) in
    [0, 1]; ``saliency_map``: (h, w). Returns float64 (len(alphas),), 0 where alpha * H * W < 1.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; known: {', '.join(BACKGROUNDS)}")
    images, full_maps, finite = _prepare(model, image.unsqueeze(0), np.asarray(saliency_map)[None])
    if not finite[0]:
        raise ValueError("saliency_map has non-finite values")
    ranked = _Ranked(images, full_maps, by_magnitude=True, seed=seed)
    alphas = np.asarray(alphas, dtype=np.float64)
    device = images.device
    counts = torch.as_tensor(
        np.concatenate([[0], np.floor(alphas * ranked.n_pixels)]).astype(np.int64), device=device
    )
    index = torch.zeros(len(counts), dtype=torch.long, device=device)
    targets = torch.full((len(counts),), int(target), dtype=torch.long, device=device)

    def build(part: slice) -> torch.Tensor:
        return ranked.replaced(background, index[part], counts[part])

    _, log_probs, log_complements = _evaluate(model, build, len(counts), batch_size, targets)
    log_odds = log_probs - log_complements
    return log_odds[1:] - log_odds[0]
