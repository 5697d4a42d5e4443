"""Key size of saliency maps (pure: tensors in, arrays out).

Key size (Luo, Barut & Jin, ICCV 2021, the key-size table of the reference code): pixels are
taken in decreasing order of |saliency|; the first ``int(alpha * H * W)`` are replaced by a
background; the key size is the first alpha of the grid ``linspace(0, 1, 1000)`` at which the
top-1 class differs from the clean image's top-1 class, and 1 if it never does. Lower is better.
The backgrounds and the ranking: ``legx.methods.metrics.pixel_ranking``.

The search over the 1000-step grid assumes that once the class has changed it stays changed
for a while: a coarse scan of ``key_size_coarse_steps`` evenly spaced grid points (one batched
round) brackets the first coarse point that changes the class, then bisection inside that
bracket (about log2(1000 / coarse_steps) rounds) finds the first changing grid point, assuming
the change is monotone within the bracket. The answer equals the full scan unless the class
changes and changes back within one coarse interval before the first coarse change, or flips
back and forth within the bracket. With the default 16 coarse steps this costs about
16 + 6 forwards per image and background instead of 999; ``exhaustive=True`` scans the whole
grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from legx.methods.base import predict_logits
from legx.methods.metrics.catalogue import BACKGROUNDS
from legx.methods.metrics.pixel_ranking import RankedPixels, evaluate, prepare

KEY_SIZE_GRID: np.ndarray = np.linspace(0.0, 1.0, 1000)


def _coarse_points(coarse_steps: int) -> np.ndarray:
    if coarse_steps < 1:
        raise ValueError(f"key_size_coarse_steps must be >= 1, got {coarse_steps}")
    last = len(KEY_SIZE_GRID) - 1
    return np.unique(np.linspace(0, last, coarse_steps + 1).round().astype(np.int64))[1:]


def key_size_ranked(
    model: torch.nn.Module,
    ranked: RankedPixels,
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

        top, _, _ = evaluate(model, build, len(pairs), batch_size)
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
    images, full_maps, finite = prepare(model, images, maps)
    ranked = RankedPixels(images, full_maps, by_magnitude=True, seed=seed)
    sizes = key_size_ranked(model, ranked, list(backgrounds), batch_size, coarse_steps, exhaustive)
    sizes[~finite] = np.nan
    return sizes
