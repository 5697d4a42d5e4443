"""Known-answer tests of the tie-aware pointing game and mask energy (methods.localisation)."""

from __future__ import annotations

import numpy as np
import pytest

from legx.methods.metrics.localisation import (
    TIE_TOLERANCE,
    boxes_to_masks,
    localisation,
    pointing_game,
    region_share,
)
from legx.methods.metrics.compute import compute_metrics
from test_metrics import PatchModel, _images

SIDE = 16
PATCH = (slice(2, 6), slice(3, 7))  # rows, cols


def _patch_masks(count: int) -> np.ndarray:
    masks = np.zeros((count, SIDE, SIDE), dtype=bool)
    masks[:, PATCH[0], PATCH[1]] = True
    return masks


def test_plateau_half_inside_the_region_scores_one_half():
    masks = _patch_masks(1)
    plateau = np.zeros((1, SIDE, SIDE))
    # Rows 4-7, cols 3-6: rows 4-5 inside the patch (8 pixels), rows 6-7 outside (8 pixels).
    plateau[0, 4:8, 3:7] = 1.0
    assert pointing_game(plateau, masks)[0] == 0.5
    # argmax alone would take the plateau's first pixel (row 4, inside) and score 1.


def test_plateau_whose_first_pixel_is_outside_is_not_scored_zero():
    masks = _patch_masks(1)
    plateau = np.zeros((1, SIDE, SIDE))
    plateau[0, 1:6, 3:7] = 1.0  # row 1 (4 pixels) outside, rows 2-5 (16 pixels) inside
    assert pointing_game(plateau, masks)[0] == pytest.approx(16 / 20)


def test_single_peak_scores_one_inside_and_zero_outside():
    masks = _patch_masks(2)
    maps = np.random.default_rng(0).uniform(0.0, 0.5, (2, SIDE, SIDE))
    maps[0, 3, 4] = 1.0  # inside
    maps[1, 10, 10] = 1.0  # outside
    np.testing.assert_array_equal(pointing_game(maps, masks), [1.0, 0.0])


def test_no_mass_or_no_region_is_nan_and_a_constant_map_scores_the_region_share():
    masks = _patch_masks(3)
    masks[2] = False
    maps = np.stack([np.zeros((SIDE, SIDE)), np.full((SIDE, SIDE), 0.3), np.ones((SIDE, SIDE))])
    scores = pointing_game(maps, masks)
    assert np.isnan(scores[0]) and np.isnan(scores[2])
    assert scores[1] == pytest.approx(16 / 256)
    np.testing.assert_allclose(region_share(masks)[:2], [16 / 256, 16 / 256])
    assert np.isnan(region_share(masks)[2])


def test_ties_are_within_the_stated_fraction_of_the_range():
    masks = _patch_masks(1)
    maps = np.zeros((1, SIDE, SIDE))
    maps[0, 3, 4] = 1.0
    maps[0, 10, 10] = 1.0 - TIE_TOLERANCE / 2  # a rounding away from the peak: tied
    assert pointing_game(maps, masks)[0] == 0.5
    maps[0, 10, 10] = 1.0 - 2 * TIE_TOLERANCE  # a real difference: not tied
    assert pointing_game(maps, masks)[0] == 1.0


def test_upsampled_cell_peak_is_a_two_by_two_tie():
    # An 8 x 8 map upsampled to 16 px: the peak cell's centre falls between four pixels
    # (bilinear, align_corners=False), and those four tie up to float32 rounding.
    coarse = np.zeros((1, 8, 8), dtype=np.float32)
    coarse[0, 2, 2] = 1.0  # pixels 4-5 (rows and cols) are the tied peak
    masks = np.zeros((1, SIDE, SIDE), dtype=bool)
    masks[0, 4:6, 4] = True  # covers two of the four
    pointing, _ = localisation(coarse, masks=masks)
    assert pointing[0] == 0.5


def test_pixel_tolerance_scales_with_the_image():
    side = 448
    masks = np.zeros((1, side, side), dtype=bool)
    masks[0, 100:200, 100:200] = True
    maps = np.zeros((1, side, side))
    maps[0, 150, 225] = 1.0  # 26 px right of the region: within 15 px at 224 = 30 px at 448
    assert pointing_game(maps, masks)[0] == 0.0
    assert pointing_game(maps, masks, pointing_tolerance=15)[0] == 1.0
    maps[0, 150, 225], maps[0, 150, 235] = 0.0, 1.0  # 36 px: beyond 30
    assert pointing_game(maps, masks, pointing_tolerance=15)[0] == 0.0
    with pytest.raises(ValueError, match="pointing_tolerance"):
        pointing_game(maps, masks, pointing_tolerance=-1)


def test_pointing_game_and_energy_of_ground_truth_map():
    masks = _patch_masks(3)
    masks[2] = False  # no ground truth for image 2
    pointing, energy = localisation(masks.astype(np.float32), masks=masks)
    np.testing.assert_array_equal(pointing[:2], [1.0, 1.0])
    np.testing.assert_allclose(energy[:2], [1.0, 1.0])
    assert np.isnan(pointing[2]) and np.isnan(energy[2])
    pointing, energy = localisation((~masks[:2]).astype(np.float32), masks=masks[:2])
    np.testing.assert_array_equal(pointing, [0.0, 0.0])
    np.testing.assert_allclose(energy, [0.0, 0.0])


def test_boxes_are_inclusive_and_nan_means_no_box():
    masks = boxes_to_masks(np.array([[3, 2, 6, 5], [np.nan] * 4]), SIDE, SIDE)
    np.testing.assert_array_equal(masks[0], _patch_masks(1)[0])
    assert not masks[1].any()


def test_compute_metrics_uses_the_tie_aware_game_and_its_tolerance():
    model, images = PatchModel(), _images(2)
    maps = np.zeros((2, SIDE, SIDE), dtype=np.float32)
    maps[:, 4:8, 3:7] = 1.0  # half inside the patch, as above
    boxes = np.array([[3, 2, 6, 5]] * 2, dtype=np.float64)
    results = compute_metrics(model, images, maps, [0, 0], ["pointing_game"], boxes=boxes)
    np.testing.assert_array_equal(results["pointing_game"], [0.5, 0.5])
    grown = compute_metrics(model, images, maps, [0, 0], ["pointing_game"], boxes=boxes,
                            pointing_tolerance=224 * 2 / SIDE)
    np.testing.assert_array_equal(grown["pointing_game"], [1.0, 1.0])
