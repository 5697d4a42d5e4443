"""LEG-TV: the LP's constraint, optimality against an independent linprog formulation, edge
lambdas, solver/formulation agreement and failure reporting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

import methods
from methods.leg import LegStatistics, covariance, difference_matrix, leg_maps
from methods.legtv import LEGTV, TVSolveError, _program, solve_tv

GRID = 5
NOISE = 0.02


def statistic(seed: int = 0, channels: int = 1) -> np.ndarray:
    """g_hat = Sigma grad + noise for a blob-shaped gradient: what LEG sampling produces."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:GRID, :GRID]
    gradient = np.exp(-((rows - 1.5) ** 2 + (cols - 3) ** 2) / 2.0).ravel()
    sigma = covariance(GRID, NOISE)
    noise_scale = 0.1 * np.abs(sigma @ gradient).max()
    return np.stack(
        [sigma @ gradient + noise_scale * rng.normal(size=GRID * GRID) for _ in range(channels)]
    )


def reference_operators():
    """A = D+^T Sigma and D+ from numpy's pinv: the reference's dense construction."""
    difference = difference_matrix(GRID).toarray()
    pseudo_inverse_t = np.linalg.pinv(difference).T
    return difference, pseudo_inverse_t @ covariance(GRID, NOISE), pseudo_inverse_t


def total_variation(values: np.ndarray) -> float:
    return float(np.abs(difference_matrix(GRID) @ values.ravel()).sum())


def linprog_optimum(g_hat: np.ndarray, lam: float) -> float:
    """The LEG-TV optimum from scipy's HiGHS on the dense LP in standard form:
    variables (g, v), minimise 1^T v s.t. -v <= D g <= v, |A g - b| <= lam ||b||_inf."""
    difference, dense_a, pseudo_inverse_t = reference_operators()
    rhs = pseudo_inverse_t @ g_hat
    bound = lam * np.abs(rhs).max()
    n_rows, n_cells = difference.shape
    identity = np.eye(n_rows)
    zeros = np.zeros((n_rows, n_rows))
    inequality = np.block(
        [[difference, -identity], [-difference, -identity], [dense_a, zeros], [-dense_a, zeros]]
    )
    upper = np.concatenate([np.zeros(2 * n_rows), bound + rhs, bound - rhs])
    cost = np.concatenate([np.zeros(n_cells), np.ones(n_rows)])
    result = linprog(cost, A_ub=inequality, b_ub=upper, bounds=(None, None), method="highs")
    assert result.status == 0, result.message
    return result.fun


@pytest.mark.parametrize("lam", [0.05, 0.1, 0.3, 0.7])
def test_solution_is_feasible_and_optimal_against_linprog(lam):
    g_hat = statistic()
    (solution,) = solve_tv(g_hat, GRID, NOISE, [lam], absolute=False)
    assert solution.status == "ok", solution.error
    _, dense_a, pseudo_inverse_t = reference_operators()
    rhs = pseudo_inverse_t @ g_hat[0]
    residual = np.abs(dense_a @ solution.map.ravel().astype(np.float64) - rhs).max()
    assert residual <= lam * np.abs(rhs).max() * (1 + 1e-4)
    optimum = linprog_optimum(g_hat[0], lam)
    assert total_variation(solution.map) == pytest.approx(optimum, rel=1e-4)


@pytest.mark.parametrize("lam", [0.05, 0.3])
def test_tv_is_no_larger_than_plain_leg(lam):
    g_hat = statistic(seed=1)
    stats = LegStatistics(g_hat[None], np.array([0]), np.array([0.5]), GRID, NOISE, 100)
    plain = leg_maps(stats, absolute=False)[0]
    (solution,) = solve_tv(g_hat, GRID, NOISE, [lam], absolute=False)
    assert total_variation(solution.map) < total_variation(plain)


def test_lambda_zero_returns_leg_and_lambda_one_or_more_returns_zero():
    g_hat = statistic(seed=2)
    stats = LegStatistics(g_hat[None], np.array([0]), np.array([0.5]), GRID, NOISE, 100)
    plain = leg_maps(stats, absolute=False)[0]
    zero, one, two = solve_tv(g_hat, GRID, NOISE, [0.0, 1.0, 2.0], absolute=False)
    np.testing.assert_allclose(zero.map, plain, rtol=1e-4, atol=1e-6 * np.abs(plain).max())
    for solution in (one, two):
        assert solution.status == "ok"
        assert np.abs(solution.map).max() < 1e-6 * np.abs(plain).max()


@pytest.mark.parametrize("solver", ["HIGHS", "CLARABEL"])
@pytest.mark.parametrize("formulation", ["sparse", "dense"])
def test_solvers_and_formulations_reach_the_same_optimum(solver, formulation):
    g_hat = statistic(seed=3)
    (solution,) = solve_tv(g_hat, GRID, NOISE, [0.2], solver=solver, formulation=formulation,
                           absolute=False)
    assert solution.status == "ok", solution.error
    assert total_variation(solution.map) == pytest.approx(linprog_optimum(g_hat[0], 0.2), rel=1e-4)


def test_channels_are_solved_separately_and_combined_like_leg():
    g_hat = statistic(seed=4, channels=3)
    (combined,) = solve_tv(g_hat, GRID, NOISE, [0.1])
    singles = [solve_tv(g_hat[c : c + 1], GRID, NOISE, [0.1], absolute=False)[0].map for c in range(3)]
    np.testing.assert_allclose(combined.map, np.mean(np.abs(singles), axis=0), rtol=1e-5, atol=1e-7)


def test_infeasible_program_is_an_error_not_a_map():
    program = _program(GRID, "sparse")
    # The constraint needs b in range(D) up to lam; a b outside it with lam small is infeasible.
    rhs = np.zeros(difference_matrix(GRID).shape[0])
    rhs[0] = 1.0
    with pytest.raises(TVSolveError, match="infeasible"):
        program.solve(rhs, 0.01, "HIGHS")


def test_flat_score_gives_a_zero_map():
    (solution,) = solve_tv(np.zeros((1, GRID * GRID)), GRID, NOISE, [0.1])
    assert solution.status == "ok" and not solution.map.any()


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        solve_tv(np.zeros((1, 7)), GRID, NOISE, [0.1])
    with pytest.raises(ValueError, match="NaN"):
        solve_tv(np.full((1, GRID * GRID), np.nan), GRID, NOISE, [0.1])
    with pytest.raises(ValueError, match="lambdas"):
        methods.get_explainer("leg-tv", lambdas=[-0.1])
    with pytest.raises(ValueError, match="solver"):
        methods.get_explainer("leg-tv", solver="MOSEK")


class RegionModel(torch.nn.Module):
    """Logit 0 = mean brightness of the top-left quarter, logit 1 = 0."""

    def forward(self, images):
        height, width = images.shape[-2:]
        score = 20 * images[:, :, : height // 2, : width // 2].mean(dim=(1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_explain_returns_one_map_per_lambda_concentrated_on_the_region():
    images = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    explainer = LEGTV(n_samples=3000, grid_size=GRID + 1, lambdas=[0.05, 0.2], batch_size=1000)
    maps = explainer.explain(RegionModel(), images)
    assert maps.shape == (2, 2, GRID + 1, GRID + 1) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    half = (GRID + 1) // 2
    inside = maps[..., :half, :half].sum(axis=(-1, -2)) / maps.sum(axis=(-1, -2))
    assert (inside > 0.8).all(), inside


def test_leg_and_legtv_point_at_the_object_on_the_demo_model():
    """The must-show of the LEG issue at test scale: on the bundled demo model and unseen demo
    images, LEG's and LEG-TV's maps (the embedded default's 8 x 8 grid and budget) peak inside
    the object mask for a clear majority of images (chance is the object's area, about 11%)."""
    from methods import load_model
    from methods.metrics import localisation
    from pipeline.demo_data import make_demo_sample

    model = load_model("demo", device="cpu")
    samples = [make_demo_sample(4242, index) for index in range(24)]
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255
    masks = np.stack([s.mask.astype(bool) for s in samples])
    legtv = LEGTV(n_samples=342, grid_size=8, batch_size=512, lambdas=[0.3])
    stats = legtv.sample(model, images)
    leg_pointing, _ = localisation(leg_maps(stats), masks=masks)
    tv_pointing, _ = localisation(np.stack([per_image[0].map for per_image in legtv.solve(stats)]), masks=masks)
    assert leg_pointing.mean() >= 0.6
    assert tv_pointing.mean() >= 0.6
