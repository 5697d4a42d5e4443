"""LEG's estimators from statistics: the grid operators, the closed form, and the LEG-TV LP
(its constraint, optimality against an independent linprog formulation, edge lambdas,
solver/formulation agreement and failure reporting); and that none of it needs torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import linprog

from legx.methods.leg.solvers import (
    LegStatistics,
    TIE_TOLERANCE,
    TVSolveError,
    _program,
    _TVProgram,
    covariance,
    difference_matrix,
    leg_maps,
    snap_ties,
    solve_tv,
)
from legx.methods.leg.uncertainty import spearman_rows

GRID = 5
NOISE = 0.02


def grid_adjacency(grid_size: int) -> np.ndarray:
    """A_grid built cell by cell, independently of difference_matrix."""
    n = grid_size * grid_size
    adjacency = np.zeros((n, n))
    for row in range(grid_size):
        for col in range(grid_size):
            for d_row, d_col in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                r, c = row + d_row, col + d_col
                if 0 <= r < grid_size and 0 <= c < grid_size:
                    adjacency[row * grid_size + col, r * grid_size + c] = 1
    return adjacency


@pytest.mark.parametrize("grid_size", [2, 5, 28])
def test_difference_matrix_structure(grid_size):
    difference = difference_matrix(grid_size).toarray()
    n_cells = grid_size**2
    assert difference.shape == (2 * grid_size * (grid_size - 1) + 4 * grid_size, n_cells)
    laplacian = 4 * np.eye(n_cells) - grid_adjacency(grid_size)
    np.testing.assert_array_equal(difference.T @ difference, laplacian)
    # full column rank <=> D^T D positive definite
    assert np.linalg.eigvalsh(difference.T @ difference).min() > 1e-6


def test_covariance_is_scaled_laplacian_plus_constant():
    sigma = covariance(5, 0.03)
    laplacian = 4 * np.eye(25) - grid_adjacency(5)
    np.testing.assert_allclose(sigma, 0.03**2 * (laplacian + np.ones((25, 25)) / 25))
    assert np.all(np.linalg.eigvalsh(sigma) > 0)


def test_statistics_index_and_concatenate():
    stats = LegStatistics(
        g_hat=np.arange(2 * 3 * 4.0).reshape(2, 3, 4), target=np.array([1, 2]),
        clean_score=np.array([0.5, 0.6]), grid_size=2, noise_level=0.1, n_forwards=10,
    )
    parts = [stats[0], stats[-1]]
    joined = LegStatistics.concat(parts)
    np.testing.assert_array_equal(joined.g_hat, stats.g_hat)
    np.testing.assert_array_equal(leg_maps(joined), leg_maps(stats))
    with pytest.raises(IndexError):
        stats[2]


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
        assert np.all(solution.map == 0)  # the optimum, exactly


@pytest.mark.parametrize(("solver", "formulation"), [
    ("BATCHED", "sparse"), ("CLARABEL", "sparse"), ("CLARABEL", "dense"), ("HIGHS", "sparse"), ("HIGHS", "dense"),
])
def test_solvers_and_formulations_reach_the_same_optimum(solver, formulation):
    g_hat = statistic(seed=3)
    (solution,) = solve_tv(g_hat, GRID, NOISE, [0.2], solver=solver, formulation=formulation,
                           absolute=False)
    assert solution.status == "ok", solution.error
    assert total_variation(solution.map) == pytest.approx(linprog_optimum(g_hat[0], 0.2), rel=1e-4)


@pytest.mark.parametrize("lam", [0.1, 0.3])
def test_the_two_solvers_rank_the_cells_of_a_map_identically(lam):
    # The optimum is piecewise constant; an interior-point solver returns a region's cells as
    # values apart by its convergence noise, a simplex solver as one value. Snapped to the ties,
    # both give the same regions, so a ranking does not depend on the solver's noise.
    g_hat = statistic(seed=0)
    interior, simplex = (solve_tv(g_hat, GRID, NOISE, [lam], solver=name, absolute=False)[0].map.ravel()
                         for name in ("CLARABEL", "HIGHS"))
    assert len(np.unique(interior)) == len(np.unique(simplex)) < GRID * GRID
    assert spearman_rows(interior, simplex) == pytest.approx(1.0, abs=1e-12)


def test_snap_ties_makes_a_runs_values_one_and_a_run_at_zero_zero():
    values = np.array([0.5 + 4e-7, -2e-7, 1.0, 0.5, 3e-7, 0.5 - 3e-7, 0.25])
    np.testing.assert_array_equal(snap_ties(values), [0.5, 0.0, 1.0, 0.5, 0.0, 0.5, 0.25])
    np.testing.assert_array_equal(snap_ties(np.array([0.1, 0.2, 0.3])), [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(snap_ties(np.zeros(3)), np.zeros(3))


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
    with pytest.raises(ValueError, match="solver"):
        solve_tv(np.zeros((1, GRID * GRID)), GRID, NOISE, [0.1], solver="MOSEK")
    with pytest.raises(ValueError, match="BATCHED solver solves the sparse formulation"):
        solve_tv(np.zeros((1, GRID * GRID)), GRID, NOISE, [0.1], solver="BATCHED", formulation="dense")


def test_the_solvers_and_the_pipelines_task_stages_import_no_torch():
    """The solve, decode and write workers load these modules only; torch would cost each
    worker process seconds of CPU and ~0.4 GiB."""
    code = (
        "import sys, legx.methods.leg.solvers, legx.pipeline.engine.decode, legx.pipeline.engine.finish, "
        "legx.pipeline.engine.sink\n"
        "print(sorted(name for name in ('torch', 'torchvision') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_leg_needs_no_solver_library_until_a_tv_program_is_solved():
    """A model actor imports LEG (for its grid operators) but never solves an LP; cvxpy would
    add about a second to its start-up. The default solver (BATCHED) needs neither library
    while its programs converge; a Clarabel solve imports Clarabel alone, a HiGHS solve goes
    through cvxpy."""
    code = (
        "import sys, legx.methods.leg.explainer, legx.methods.leg.tv\n"
        "from legx.methods.leg.solvers import grid_operators, solve_tv\n"
        "import numpy as np\n"
        "grid_operators(4)\n"
        "loaded = lambda: [name for name in ('clarabel', 'cvxpy') if name in sys.modules]\n"
        "before = loaded()\n"
        "solve_tv(np.ones((1, 16)), 4, 0.1, [0.1])\n"
        "after_batched = loaded()\n"
        "solve_tv(np.ones((1, 16)), 4, 0.1, [0.1], solver='CLARABEL')\n"
        "after_clarabel = loaded()\n"
        "solve_tv(np.ones((1, 16)), 4, 0.1, [0.1], solver='HIGHS')\n"
        "print(before, after_batched, after_clarabel, loaded())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[] [] ['clarabel'] ['clarabel', 'cvxpy']"


def test_clarabel_solves_each_programs_own_bounds_on_its_reused_solver():
    """One Clarabel solver per grid program takes each program's bounds: solving b1, b2, b1
    gives b1's solution twice and b2's its own, each equal to a new program's."""
    first, second = (_program(GRID, "sparse").rhs_of(statistic(seed)[0]) for seed in (5, 6))
    first, second = first / np.abs(first).max(), second / np.abs(second).max()
    reused = _program(GRID, "sparse")
    solutions = [reused.solve(rhs, lam, "CLARABEL") for rhs, lam in ((first, 0.1), (second, 0.3), (first, 0.1))]
    fresh = [_TVProgram(GRID, "sparse").solve(rhs, lam, "CLARABEL") for rhs, lam in ((first, 0.1), (second, 0.3))]
    np.testing.assert_allclose(solutions[0], fresh[0], atol=1e-7)
    np.testing.assert_allclose(solutions[1], fresh[1], atol=1e-7)
    np.testing.assert_allclose(solutions[2], fresh[0], atol=1e-7)
    assert np.abs(solutions[0] - solutions[1]).max() > 1e-2


def test_an_infeasible_clarabel_program_is_an_error_and_the_next_one_is_solved():
    program = _TVProgram(GRID, "sparse")
    rhs = np.zeros(difference_matrix(GRID).shape[0])
    rhs[0] = 1.0
    with pytest.raises(TVSolveError, match="CLARABEL"):
        program.solve(rhs, 0.01, "CLARABEL")
    feasible = program.rhs_of(statistic(seed=7)[0])
    feasible /= np.abs(feasible).max()
    solution = program.solve(feasible, 0.2, "CLARABEL")
    assert program.residual(solution, feasible) <= 0.2 + 1e-5


def test_snap_ties_equals_a_run_by_run_reference_on_planted_runs():
    """Against a plain loop over the sorted values: runs planted at random levels (one at 0),
    each spread by less than the tolerance, among values far apart."""
    rng = np.random.default_rng(8)
    levels = np.concatenate([[0.0], rng.uniform(-1, 1, size=40)])
    values = np.repeat(levels, rng.integers(1, 12, size=levels.size))
    values = values + rng.uniform(-1, 1, size=values.size) * 2e-7
    values = rng.permutation(np.concatenate([values, rng.uniform(-1, 1, size=30)]))
    order = np.argsort(values, kind="stable")
    expected = np.empty_like(values)
    run = [order[0]]
    for previous, current in zip(order[:-1], order[1:]):
        if values[current] - values[previous] > TIE_TOLERANCE:
            expected[run] = 0.0 if np.abs(values[run]).min() <= TIE_TOLERANCE else np.median(values[run])
            run = []
        run.append(current)
    expected[run] = 0.0 if np.abs(values[run]).min() <= TIE_TOLERANCE else np.median(values[run])
    np.testing.assert_array_equal(snap_ties(values), expected)
    assert len(np.unique(snap_ties(values))) < len(np.unique(values))
