"""Sensitivity curves of saliency maps (Luo, Barut & Jin, ICCV 2021, the sensitivity analysis;
pure: tensors in, arrays out).

For one image and map: the log-odds of the explained class, log(p / (1 - p)), relative to the
clean image's, as the first ``int(alpha * H * W)`` pixels by |saliency| are replaced by a
background (``legx.methods.metrics.pixel_ranking``), for each alpha of ``SENSITIVITY_ALPHAS``; a steeper
fall is a more faithful map.
"""

from __future__ import annotations

import numpy as np
import torch

from legx.methods.metrics.catalogue import BACKGROUNDS, SENSITIVITY_ALPHAS
from legx.methods.metrics.pixel_ranking import RankedPixels, evaluate, prepare


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
    images, full_maps, finite = prepare(model, image.unsqueeze(0), np.asarray(saliency_map)[None])
    if not finite[0]:
        raise ValueError("saliency_map has non-finite values")
    ranked = RankedPixels(images, full_maps, by_magnitude=True, seed=seed)
    alphas = np.asarray(alphas, dtype=np.float64)
    device = images.device
    counts = torch.as_tensor(
        np.concatenate([[0], np.floor(alphas * ranked.n_pixels)]).astype(np.int64), device=device
    )
    index = torch.zeros(len(counts), dtype=torch.long, device=device)
    targets = torch.full((len(counts),), int(target), dtype=torch.long, device=device)

    def build(part: slice) -> torch.Tensor:
        return ranked.replaced(background, index[part], counts[part])

    _, log_probs, log_complements = evaluate(model, build, len(counts), batch_size, targets)
    log_odds = log_probs - log_complements
    return log_odds[1:] - log_odds[0]
