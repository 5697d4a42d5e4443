"""Bilinear resize of saliency maps, in numpy (no torch).

Maps live on the explainer's grid (LEG's g x g cells, Grad-CAM's feature map) and are resized
to the image to be drawn over it or scored with pixel metrics. The analysis commands (report,
show, compare) do this too, and they should not load torch to do it.

The sampling is torch's ``F.interpolate(mode="bilinear", align_corners=False)``, so that a map
resized here equals the one the explainers' torch code would produce (to float32 rounding).
Output pixel i of n_out samples the input at

    s = (i + 1/2) * n_in / n_out - 1/2,  clamped below at 0

and blends input pixels floor(s) and min(floor(s) + 1, n_in - 1) with weights 1 - t and t,
t = s - floor(s); rows and columns are resized independently (the kernel is separable).
"""

from __future__ import annotations

import numpy as np


def _axis_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``target`` output positions: the two input indices and the weight of the
    second (float32, as torch computes it)."""
    scale = np.float32(source / target)
    position = np.maximum((np.arange(target, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5),
                          np.float32(0))
    first = position.astype(np.int64)
    second = np.minimum(first + 1, source - 1)
    return first, second, position - first.astype(np.float32)


def upsample_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of maps (..., h, w) to (..., height, width), float32."""
    array = np.asarray(maps, dtype=np.float32)
    rows, cols = array.shape[-2:]
    if (rows, cols) == (height, width):
        return array.copy()
    top, bottom, row_weight = _axis_weights(rows, height)
    row_weight = row_weight[:, None]
    resized = array[..., top, :] * (np.float32(1) - row_weight) + array[..., bottom, :] * row_weight
    left, right, col_weight = _axis_weights(cols, width)
    return resized[..., left] * (np.float32(1) - col_weight) + resized[..., right] * col_weight
