"""The batched interior-point solver of LEG-TV's programs: its grid operators are D, D^T and
D^T F D exactly; on programs of LEG-like statistics it reaches Clarabel's optimum and, snapped,
its ranking; a program it cannot finish (an infeasible one, or one past its iteration cap) is
never returned as converged, and the finish step hands it to the exact solver and counts it."""

from __future__ import annotations

import numpy as np
import pytest

from legx.methods.leg import interior_point
from legx.methods.leg.interior_point import _grid, solve_programs
from legx.methods.leg.solvers import (
    FEASIBILITY_TOLERANCE,
    _program,
    covariance,
    difference_matrix,
    snap_ties,
    solve_tv_batch,
)
from legx.methods.leg.uncertainty import spearman_rows

NOISE = 0.02


@pytest.mark.parametrize("grid_size", [2, 5, 12])
def test_shift_operators_are_the_difference_matrix(grid_size):
    rng = np.random.default_rng(grid_size)
    grid = _grid(grid_size)
    difference = difference_matrix(grid_size).toarray()
    cells = rng.normal(size=(3, grid_size**2))
    rows = rng.normal(size=(3, difference.shape[0]))
    np.testing.assert_allclose(grid.apply(cells), cells @ difference.T, atol=1e-12)
    np.testing.assert_allclose(grid.apply_transpose(rows), rows @ difference, atol=1e-12)
    weights = rng.uniform(0.1, 2.0, size=(1, difference.shape[0]))
    band = grid.banded_laplacian(weights)[:, :, 0]  # lower band storage: band[j, k] = M[j + k, j]
    expected = difference.T @ np.diag(weights[0]) @ difference
    rebuilt = np.zeros_like(expected)
    for offset in range(grid_size + 1):
        for column in range(grid_size**2 - offset):
            rebuilt[column + offset, column] = rebuilt[column, column + offset] = band[column, offset]
    np.testing.assert_allclose(rebuilt, expected, atol=1e-12)


def test_banded_cholesky_and_solves_are_the_dense_ones():
    """Every program's factor is its own (L L^T = M), the forward substitution beside it is L^-1 r,
    the solves are M^-1 r, and a matrix that is not positive definite is reported as failed
    without spoiling the others' factors."""
    rng = np.random.default_rng(3)
    grid_size = 5
    grid = _grid(grid_size)
    difference = difference_matrix(grid_size).toarray()
    weights = rng.uniform(0.1, 2.0, size=(4, difference.shape[0]))
    band = grid.banded_laplacian(weights)
    band[:, 0, 2] -= 50.0  # program 2: an indefinite matrix
    right = rng.normal(size=(4, grid_size**2))
    forward = np.ascontiguousarray(right.T)[None].copy()  # (1, p, n): L^-1 r beside the factor
    failed = interior_point._band_cholesky(band, forward)
    assert failed.tolist() == [False, False, True, False]
    solved = interior_point._band_solve(band, right)
    for program in (0, 1, 3):
        matrix = difference.T @ np.diag(weights[program]) @ difference
        lower = np.zeros_like(matrix)
        for offset in range(grid_size + 1):
            for column in range(grid_size**2 - offset):
                lower[column + offset, column] = band[column, offset, program]
        np.testing.assert_allclose(lower @ lower.T, matrix, atol=1e-12)
        np.testing.assert_allclose(lower @ forward[0, :, program], right[program], atol=1e-12)
        np.testing.assert_allclose(solved[program], np.linalg.solve(matrix, right[program]), rtol=1e-9)


def test_a_failed_factorisation_is_retried_with_more_regularisation(monkeypatch):
    """A program whose normal matrix does not factor is factored again with the next
    regularisation, and only that program: the others keep their first factors."""
    rng = np.random.default_rng(4)
    grid = _grid(5)
    uniform = np.ones((4, grid.n_rows))  # smallest eigenvalue: 0.13 of the largest diagonal entry
    uneven = np.exp(4 * rng.normal(size=(4, grid.n_rows)))  # here 0.0003 of it
    theta = np.stack([uniform, uneven, 3 * uniform])
    # a first regularisation of -0.1 x the largest diagonal entry: indefinite for the uneven one only
    monkeypatch.setattr(interior_point, "REGULARISATIONS", (-0.1, 1e-13))
    first = interior_point._NormalEquations(grid, theta, None, -0.1)
    assert not first.failed.any()
    alone = interior_point._NormalEquations(grid, theta[1:2], None, 1e-13)
    shifted = interior_point._NormalEquations(grid, theta[[0, 2]], None, -0.1)
    monkeypatch.setattr(interior_point, "REGULARISATIONS", (-0.1,))
    assert interior_point._NormalEquations(grid, theta, None, -0.1).failed.tolist() == [False, True, False]
    np.testing.assert_array_equal(first.factor[:, :, 1], alone.factor[:, :, 0])
    np.testing.assert_array_equal(first.factor[:, :, [0, 2]], shifted.factor)
    np.testing.assert_array_equal(first.basis_forward[:, :, 1], alone.basis_forward[:, :, 0])


def unit_programs(grid_size: int, seeds: range, lambdas: list[float]):
    """Unit-scale (b, lam) of blob-gradient statistics with sampling noise, as LEG produces."""
    rows, cols = np.mgrid[:grid_size, :grid_size]
    gradient = np.exp(-((rows - grid_size / 3) ** 2 + (cols - grid_size / 2) ** 2) / grid_size).ravel()
    sigma = covariance(grid_size, NOISE)
    program = _program(grid_size, "sparse")
    rhs, lams = [], []
    for seed in seeds:
        noise = 0.2 * np.abs(sigma @ gradient).max() * np.random.default_rng(seed).normal(size=grid_size**2)
        b = program.rhs_of(sigma @ gradient + noise)
        for lam in lambdas:
            rhs.append(b / np.abs(b).max())
            lams.append(lam)
    return np.array(rhs), np.array(lams)


@pytest.mark.parametrize("grid_size", [6, 14])
def test_solutions_reach_clarabels_optimum_and_ranking(grid_size):
    rhs, lams = unit_programs(grid_size, range(6), [0.0, 0.05, 0.1, 0.3, 1.0])
    batch = solve_programs(grid_size, rhs, lams)
    assert batch.converged.all(), batch.iterations
    program = _program(grid_size, "sparse")
    difference = difference_matrix(grid_size)
    for solution, b, lam in zip(batch.solutions, rhs, lams):
        exact = program.solve(b, float(lam), "CLARABEL")
        assert program.residual(solution, b) - lam <= FEASIBILITY_TOLERANCE
        objective, optimum = (float(np.abs(difference @ x).sum()) for x in (solution, exact))
        assert objective == pytest.approx(optimum, rel=1e-6, abs=1e-8)
        if lam >= 1:
            assert np.all(snap_ties(solution) == 0)  # g = 0 is the optimum for lam >= 1
        else:
            assert spearman_rows(snap_ties(solution), snap_ties(exact)) >= 0.99


def test_programs_are_solved_independently_of_their_batch():
    rhs, lams = unit_programs(8, range(20), [0.1, 0.3])
    together = solve_programs(8, rhs, lams).solutions
    for index in (0, 17, 39):
        alone = solve_programs(8, rhs[index:index + 1], lams[index:index + 1]).solutions[0]
        np.testing.assert_allclose(alone, together[index], atol=1e-6)


def test_an_infeasible_program_is_not_converged():
    rhs = np.zeros((1, difference_matrix(5).shape[0]))
    rhs[0, 0] = 1.0  # outside range(D) by more than lam: no h satisfies the constraint
    assert not solve_programs(5, rhs, np.array([0.01])).converged[0]


def test_bad_programs_are_rejected():
    with pytest.raises(ValueError, match="rhs must be"):
        solve_programs(5, np.zeros((2, 7)), np.array([0.1, 0.1]))
    with pytest.raises(ValueError, match="lams >= 0"):
        solve_programs(5, np.zeros((1, difference_matrix(5).shape[0])), np.array([-0.1]))


def test_programs_past_the_iteration_cap_fall_back_to_clarabel_and_are_counted(monkeypatch):
    rng = np.random.default_rng(0)
    g_hats = rng.normal(size=(2, 3, 36))
    exact = solve_tv_batch(g_hats, 6, NOISE, [0.1, 0.3], solver="CLARABEL")
    batched = solve_tv_batch(g_hats, 6, NOISE, [0.1, 0.3])
    assert all(solution.fallbacks == 0 for per_statistic in batched for solution in per_statistic)
    monkeypatch.setattr(interior_point, "MAX_ITERATIONS", 2)
    capped = solve_tv_batch(g_hats, 6, NOISE, [0.1, 0.3])
    for per_exact, per_capped in zip(exact, capped):
        for reference, solution in zip(per_exact, per_capped):
            assert solution.fallbacks == 3  # one program per channel
            np.testing.assert_array_equal(solution.map, reference.map)


def test_the_grids_weights_are_the_solvers():
    from legx.methods.leg.solvers import _pseudo_inverse_transpose

    for grid_size in (2, 7, 28):
        np.testing.assert_allclose(_grid(grid_size).weights, _pseudo_inverse_transpose(grid_size).sum(axis=1),
                                   rtol=1e-10, atol=1e-12)


def test_compiled_passes_match_their_numpy_formulas():
    """The numba passes equal the formulas they fuse (module docstring), written here with the
    dense D and B = D + (1/p) w 1^T."""
    rng = np.random.default_rng(1)
    n, size = 3, 4
    grid = _grid(size)
    p, m = size * size, grid.n_rows
    difference = difference_matrix(size).toarray()
    fit = difference + np.outer(grid.weights, np.ones(p)) / p  # B
    cells, step_cells = rng.normal(size=(n, p)), rng.normal(size=(n, p))
    totals = rng.normal(size=(n, m))
    z, y, dz_affine, dy_affine = (rng.uniform(0.1, 2.0, (n, 4, m)) for _ in range(4))
    bounds = rng.normal(size=(n, 4, m))
    target = rng.uniform(0.0, 1.0, n)

    def constraints(h, s):  # G x, (n, 4, m)
        return np.stack([h @ difference.T - s, -h @ difference.T - s, h @ fit.T, -h @ fit.T], axis=1)

    def transpose(rows):  # G^T v as (cells part, totals part)
        return (rows[:, 0] - rows[:, 1]) @ difference + (rows[:, 2] - rows[:, 3]) @ fit, -rows[:, 0] - rows[:, 1]

    residual = constraints(cells, totals) + z - bounds
    theta, weighted, largest, dual, products, dual_cells, dual_totals, dual_largest = interior_point._check_pass(
        cells, totals, z, y, bounds, size, grid.weights, 1e-14, 1e14)
    expected_cells, expected_totals = transpose(y)
    np.testing.assert_allclose(theta, y / z)
    np.testing.assert_allclose(weighted, y / z * residual)
    np.testing.assert_allclose(largest, np.abs(residual).reshape(n, -1).max(axis=1))
    np.testing.assert_allclose(dual, -(bounds * y).sum(axis=(1, 2)))
    np.testing.assert_allclose(products, (z * y).sum(axis=(1, 2)))
    np.testing.assert_allclose(dual_cells, expected_cells, atol=1e-12)
    np.testing.assert_allclose(dual_totals, expected_totals + 1.0, atol=1e-12)
    np.testing.assert_allclose(dual_largest, np.maximum(np.abs(dual_cells).max(axis=1),
                                                        np.abs(dual_totals).max(axis=1)))

    band = np.empty((p, size + 1, n))
    row_weights, coupling, totals_inverse, correction, scalar, basis = interior_point._normal_setup(
        theta, size, grid.weights, 0.0, band)
    t1, t2, t3, t4 = theta.transpose(1, 0, 2)
    np.testing.assert_allclose(coupling, t2 - t1)
    np.testing.assert_allclose(totals_inverse, 1 / (t1 + t2))
    # H = D^T diag(4 theta_1 theta_2 / (theta_1 + theta_2)) D + B^T diag(theta_3 + theta_4) B: G^T diag(theta) G
    # with s eliminated, as _normal_apply applies it
    for program in range(n):
        matrix = (difference.T @ np.diag(4 * t1[program] * t2[program] / (t1[program] + t2[program])) @ difference
                  + fit.T @ np.diag(t3[program] + t4[program]) @ fit)
        np.testing.assert_allclose(interior_point._normal_apply(step_cells[program:program + 1], row_weights[program:program + 1],
                                                                correction[program:program + 1], scalar[program:program + 1],
                                                                size)[0],
                                   matrix @ step_cells[program], rtol=1e-10)
        np.testing.assert_allclose(basis[1, :, program], correction[program])

    for corrector in (False, True):
        complementarity = (target[:, None, None] - z * y - dz_affine * dy_affine) if corrector else -z * y
        v = weighted + complementarity / z
        # the right side -(G^T v + r_d), with s eliminated: R_h - D^T (coupling R_s / (theta_1 + theta_2))
        v_cells, v_totals = transpose(v)
        right_totals = -(v_totals + dual_totals)
        right_cells = -(v_cells + dual_cells) - (coupling * right_totals * totals_inverse) @ difference
        cells_right, totals_right = interior_point._newton_right(
            weighted, z, y, target, dz_affine, dy_affine, corrector, dual_cells, dual_totals, coupling,
            totals_inverse, size, grid.weights)
        np.testing.assert_allclose(totals_right, right_totals, atol=1e-12)
        np.testing.assert_allclose(cells_right, right_cells, atol=1e-10)

        step_totals = (right_totals - coupling * (step_cells @ difference.T)) * totals_inverse
        dy = theta * constraints(step_cells, step_totals) + weighted + complementarity / z
        dz = (complementarity - z * dy) / y
        got_totals, step_z, step_y, primal, dual_step = interior_point._newton_steps(
            step_cells, right_totals, coupling, totals_inverse, theta, weighted, z, y, target, dz_affine,
            dy_affine, corrector, size, grid.weights)
        np.testing.assert_allclose(got_totals, step_totals, atol=1e-12)
        np.testing.assert_allclose(step_y, dy, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(step_z, dz, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(primal, 1 / np.maximum(1, (-dz / z).reshape(n, -1).max(axis=1)))
        np.testing.assert_allclose(dual_step, 1 / np.maximum(1, (-dy / y).reshape(n, -1).max(axis=1)))
