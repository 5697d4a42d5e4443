"""upsample_maps (numpy) against torch's bilinear F.interpolate, the resize the explainers'
torch code uses: the same sampling (align_corners=False), to float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from legx.methods.resize import upsample_maps

# (h, w) -> (height, width): integer and non-integer factors, up and down, one-cell maps.
SIZES = [((8, 8), (64, 64)), ((7, 5), (64, 33)), ((28, 28), (224, 224)), ((3, 4), (10, 7)),
         ((14, 14), (100, 150)), ((16, 16), (8, 8)), ((10, 3), (7, 11)), ((1, 1), (5, 5)),
         ((1, 4), (3, 9)), ((5, 5), (5, 9))]


@pytest.mark.parametrize(("grid", "size"), SIZES)
def test_matches_torch_bilinear_interpolate(grid, size):
    maps = np.random.default_rng(sum(grid + size)).standard_normal((2, 3, *grid)).astype(np.float32) * 10
    expected = F.interpolate(torch.from_numpy(maps.reshape(-1, 1, *grid)), size=size, mode="bilinear",
                             align_corners=False).reshape(2, 3, *size).numpy()
    resized = upsample_maps(maps, *size)
    assert resized.dtype == np.float32 and resized.shape == (2, 3, *size)
    np.testing.assert_allclose(resized, expected, rtol=0, atol=4e-6 * np.abs(maps).max())


def test_known_values_of_a_two_cell_row():
    # Output pixel i of 4 samples the 2-cell input at (i + 1/2) / 2 - 1/2 = -1/4 (clamped to 0),
    # 1/4, 3/4, 5/4 (past the last cell: its value).
    assert upsample_maps(np.array([[0.0, 4.0]]), 1, 4).tolist() == [[0.0, 1.0, 3.0, 4.0]]


def test_same_size_is_a_float32_copy():
    maps = np.arange(6, dtype=np.float64).reshape(1, 2, 3)
    resized = upsample_maps(maps, 2, 3)
    assert resized.dtype == np.float32 and np.array_equal(resized, maps)
    resized[0, 0, 0] = 99
    assert maps[0, 0, 0] == 0
