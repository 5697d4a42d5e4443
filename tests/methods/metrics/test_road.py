"""Known-answer tests of ROAD (methods.metrics.road): the imputation against a direct sparse solve
of the same equations, a model that reads one region, a constant map, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch

from legx.methods.metrics.compute import compute_metrics
from legx.methods.metrics.road import linear_imputation, road_curves, road_scores
from legx.methods.metrics.road_options import road_fractions

SIDE = 24
REGION = (slice(8, 16), slice(12, 20))  # rows, cols: 64 of 576 pixels decide the class
ROAD_NAMES = ["road_morf", "road_lerf", "road_combined"]
# The imputation is solved in float64 and returned in the images' float32: its pixels agree with
# a direct sparse solve to well below one grey level (1/255).
IMPUTATION_ATOL = 1e-5


def _direct_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The neighbour-mean system written out pixel by pixel and solved by scipy's spsolve:
    d_i x_i - sum_{j removed} w_ij x_j = sum_{j kept} w_ij v_j over in-image 8-neighbours j,
    w = 1/6 (edge neighbours) or 1/12 (diagonal), d_i the sum of in-image weights."""
    channels, height, width = image.shape
    unknowns = {pixel: k for k, pixel in enumerate(zip(*np.nonzero(removed)))}
    matrix = scipy.sparse.lil_matrix((len(unknowns), len(unknowns)))
    rhs = np.zeros((len(unknowns), channels))
    for (row, col), k in unknowns.items():
        for d_row in (-1, 0, 1):
            for d_col in (-1, 0, 1):
                other = (row + d_row, col + d_col)
                if (d_row, d_col) == (0, 0) or not (0 <= other[0] < height and 0 <= other[1] < width):
                    continue
                weight = 1 / 12 if d_row and d_col else 1 / 6
                matrix[k, k] += weight
                if other in unknowns:
                    matrix[k, unknowns[other]] -= weight
                else:
                    rhs[k] += weight * image[:, other[0], other[1]]
    solution = scipy.sparse.linalg.spsolve(matrix.tocsc(), rhs).reshape(len(unknowns), channels)
    filled = image.astype(np.float64).copy()
    for (row, col), k in unknowns.items():
        filled[:, row, col] = solution[k]
    return filled


@pytest.mark.parametrize("solver", ["direct", "cg"])
@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.95])
def test_imputation_matches_a_direct_sparse_solve(fraction, solver):
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.random((3, 3, 13, 11)).astype(np.float32))
    removed = torch.from_numpy(rng.random((3, 13, 11)) < fraction)
    removed[0, 0, :] = True  # a removed border row, corners included
    removed[1, 2:11, 2:9] = True  # a large removed block: the slowest system to converge
    filled = linear_imputation(images, removed, solver=solver).numpy()
    for index in range(3):
        direct = _direct_imputation(images[index].numpy(), removed[index].numpy())
        np.testing.assert_allclose(filled[index], direct, atol=IMPUTATION_ATOL, rtol=0)
    kept = ~removed.numpy()[:, None].repeat(3, axis=1)
    assert np.array_equal(filled[kept], images.numpy()[kept])


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_a_removed_pixel_among_kept_pixels_of_one_value_takes_that_value(solver):
    image = torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    image[:, :, 3:6, 4:7] = torch.tensor([0.2, 0.5, 0.9]).reshape(1, 3, 1, 1)
    image[:, :, 0:2, 8:10] = 0.7  # a corner pixel has three in-image neighbours
    removed = torch.zeros(1, 10, 10, dtype=torch.bool)
    removed[0, 4, 5] = removed[0, 0, 9] = True
    filled = linear_imputation(image, removed, solver=solver)
    np.testing.assert_allclose(filled[0, :, 4, 5].numpy(), [0.2, 0.5, 0.9], atol=1e-6)
    np.testing.assert_allclose(filled[0, :, 0, 9].numpy(), [0.7, 0.7, 0.7], atol=1e-6)


class RegionReader(torch.nn.Module):
    """Class 0's logit reads only the brightness of ``REGION``: 30 (mean - 0.5); class 1: 0."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logit = 30.0 * (images[:, :, REGION[0], REGION[1]].mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def _region_images(count: int) -> torch.Tensor:
    """Dim noise (0 to 0.3) with a bright region (0.9): class 0 with probability ~1."""
    images = 0.3 * torch.rand(count, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    images[:, :, REGION[0], REGION[1]] = 0.9
    return images


def _maps() -> np.ndarray:
    """The region marked (1 over noise below 0.5), a random map, the region marked least."""
    rng = np.random.default_rng(2)
    marked = rng.uniform(0.0, 0.5, size=(SIDE, SIDE))
    marked[REGION] = 1.0
    return np.stack([marked, rng.uniform(0.0, 1.0, size=(SIDE, SIDE)), 1.0 - marked]).astype(np.float32)


def test_a_map_of_the_region_the_model_reads_ranks_best_in_both_orders():
    scores = compute_metrics(RegionReader(), _region_images(3), _maps(), [0, 0, 0], ROAD_NAMES)
    morf, lerf = scores["road_morf"], scores["road_lerf"]
    # MoRF: removing the region first destroys the evidence at once (lowest area, best);
    # marked least, the region goes last (highest area, worst).
    assert morf[0] < morf[1] < morf[2]
    assert morf[0] < 0.05 and morf[2] > 0.5
    # LeRF: the region marked first is kept to the end (highest, best); marked least, it goes first.
    assert lerf[0] > lerf[1] > lerf[2]
    assert lerf[0] > 0.95 and lerf[2] < 0.05
    np.testing.assert_allclose(scores["road_combined"], (lerf - morf) / 2)
    assert np.argmax(scores["road_combined"]) == 0 and np.argmin(scores["road_combined"]) == 2


def test_a_constant_map_scores_the_same_in_both_orders():
    images = _region_images(2)
    maps = np.full((2, SIDE, SIDE), 0.25, dtype=np.float32)
    morf, lerf = road_curves(RegionReader(), images, maps, [0, 0], noise=0.05)
    np.testing.assert_array_equal(morf, lerf)
    scores = road_scores(morf, lerf, road_fractions())
    assert scores["road_morf"] == pytest.approx(scores["road_lerf"]) and np.all(scores["road_combined"] == 0)


def test_curves_are_probabilities_at_the_fractions_and_areas_their_mean_height():
    fractions = [0.25, 0.5, 0.75]
    morf, lerf = road_curves(RegionReader(), _region_images(1), _maps()[:1], [0], fractions=fractions)
    assert morf.shape == lerf.shape == (1, 3)
    assert np.all((morf >= 0) & (morf <= 1))
    scores = road_scores(morf, lerf, np.array(fractions))
    expected = (morf[0, 0] / 2 + morf[0, 1] + morf[0, 2] / 2) / 2
    assert scores["road_morf"][0] == pytest.approx(expected)


def test_noise_is_seeded_and_only_on_removed_pixels():
    images, maps = _region_images(1), _maps()[1:2]
    first = road_curves(RegionReader(), images, maps, [0], noise=0.1, seed=4)
    again = road_curves(RegionReader(), images, maps, [0], noise=0.1, seed=4)
    other = road_curves(RegionReader(), images, maps, [0], noise=0.1, seed=5)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("fractions", [[0.0, 0.5], [0.5, 1.0], [0.2, 1.5], [0.5, 0.3], [float("nan")], []])
def test_a_fraction_outside_the_open_unit_interval_is_refused(fractions):
    with pytest.raises(ValueError, match="road_fractions"):
        compute_metrics(RegionReader(), _region_images(1), _maps()[:1], [0], ROAD_NAMES, road_fractions=fractions)


@pytest.mark.parametrize(("option", "value"), [("road_noise", -0.1), ("road_steps", 0), ("road_tolerance", 2.0)])
def test_bad_road_options_are_refused_by_name(option, value):
    with pytest.raises(ValueError, match=option):
        compute_metrics(RegionReader(), _region_images(1), _maps()[:1], [0], ROAD_NAMES, **{option: value})


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_a_removal_that_keeps_no_pixel_is_refused(solver):
    removed = torch.ones(2, 5, 5, dtype=torch.bool)
    removed[0, 2, 2] = False
    with pytest.raises(ValueError, match=r"no kept pixel to impute from in image\(s\) \[1\]"):
        linear_imputation(torch.rand(2, 3, 5, 5), removed, solver=solver)


def test_both_solvers_impute_the_same_pixels():
    generator = torch.Generator().manual_seed(5)
    images = torch.rand(4, 3, 20, 20, generator=generator)
    removed = torch.rand(4, 20, 20, generator=generator) < torch.tensor([0.1, 0.4, 0.7, 0.95]).reshape(4, 1, 1)
    direct = linear_imputation(images, removed, solver="direct")
    iterative = linear_imputation(images, removed, solver="cg")
    np.testing.assert_allclose(direct.numpy(), iterative.numpy(), atol=IMPUTATION_ATOL, rtol=0)


def test_a_map_with_non_finite_values_scores_nan_on_every_road_column():
    maps = _maps()
    maps[1, 0, 0] = np.inf
    scores = compute_metrics(RegionReader(), _region_images(3), maps, [0, 0, 0], ROAD_NAMES)
    for name, values in scores.items():
        assert np.isnan(values[1]).all(), name
        assert np.isfinite(values[[0, 2]]).all(), name
