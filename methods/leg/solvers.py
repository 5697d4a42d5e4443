"""LEG's estimators from its sampled statistics: the closed form and the LEG-TV linear program.

numpy, scipy and cvxpy only, no torch: the pipeline's solve tasks import this module alone, so
their worker processes start in about a second and stay small (a worker that imports torch
spends ~5 s of CPU on it and holds ~0.4 GiB). The maths is stated in ``legx.methods.leg.explainer`` and
``legx.methods.leg.tv``; the explainers there run the forwards and call these functions.

Grid operators (g x g grid, p = g^2 cells, row-major):

    D          first differences between grid neighbours plus one row per border cell (zero
               padding): (2g(g-1) + 4g) x p, full column rank, D^T D = 4I - A_grid
    Sigma      s^2 (D^T D + (1/p) 1 1^T)

LEG is Sigma^{-1} g_hat per channel. The LEG-TV program, min ||D g||_1 subject to
||A g - b||_inf <= lam ||b||_inf with A = D+^T Sigma and b = D+^T g_hat, is kept sparse with the
identity

    A = s^2 (D + (1/p) w 1^T),   w = D+^T 1,

(D+^T D^T D = D since D D+ is the projection onto range(D)), so A g = s^2 (D g + (t/p) w) with
one extra scalar t = 1^T g. The problem is scaled to h = s^2 g / ||b||_inf so that the solver
sees unit-size data whatever the noise level and score. Its matrices are built once per grid
size and only b and lam change between solves: Clarabel's conic form directly (``_TVProgram``),
and for HiGHS or the dense formulation a DPP-compliant cvxpy problem whose Parameters are b and
lam, so that many images and lambdas reuse one canonicalisation. By default (BATCHED) every
program of a call is solved together by ``legx.methods.leg.interior_point``, an interior-point
method on the program's banded normal equations; a program it does not finish to its tolerance
goes to Clarabel (interior point), then HiGHS (simplex), one at a time, and is counted
(``TVSolution.fallbacks``). CLARABEL and HIGHS choose the one-at-a-time path directly; on LEG
statistics of real models Clarabel solved the 28 x 28 LP 3-10x faster than HiGHS's default
simplex (scripts/bench.py). A solve that does not end optimal, or whose solution violates the
constraint beyond tolerance, is reported as an error and never returned as a map.

The optimum's value is unique, its point often is not: on the demo model's statistics at
16 x 16 and 28 x 28 the optimal face has many points, and an interior-point solver ends at its
centre where a simplex solver ends at a vertex (HiGHS's and Clarabel's snapped solutions, at
the same objective to 1e-8, can rank the cells differently; docs/benchmarks/legtv-solver.md).
Maps are therefore an interior-point method's (the batched solver's, or Clarabel's, which agree
after snapping), and HiGHS is only the last fallback.

Ties. A TV-minimising solution is piecewise constant: at lambda 0.3 on the demo model most
cells of a channel are exactly 0 at the optimum and the rest take a few region values. An
interior-point solver returns them as values that differ by its own convergence noise (below
1e-9 of the largest here), and a cell ranking (Spearman, deletion order, the reliability) then
orders the cells of a region by that noise: two seeds' maps agreed 0.79 at 6,000 forwards, and
0.90 once the noise was removed (docs/benchmarks/index.md). Each channel's solution is therefore snapped to its
ties (``snap_ties``) on the unit scale, where solutions are of order 1 (their largest
magnitude was 0.15-0.92 on the demo model's statistics) and the solvers' noise is below 1e-8:
values within ``TIE_TOLERANCE`` of each other are one value, and 0 where one of them is that
close to 0 (for lambda >= 1, the whole solution).

A solved problem object is cached per process and is not thread-safe; the pipeline runs solves
in separate worker processes. The solver libraries (clarabel, cvxpy) are imported by the first
LEG-TV solve that needs them, not with the module: a model actor needs LEG's grid operators but
no LP, and importing cvxpy cost its start-up about a second here.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp


def difference_matrix(grid_size: int) -> sp.csr_matrix:
    """D for a g x g grid, row-major cells: horizontal and vertical neighbour differences, then
    one row per border side of each border cell (the difference with a zero outside)."""
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    g = grid_size
    cell = np.arange(g * g).reshape(g, g)
    left, right = cell[:, :-1].ravel(), cell[:, 1:].ravel()
    upper, lower = cell[:-1, :].ravel(), cell[1:, :].ravel()
    border = np.concatenate([cell[0, :], cell[-1, :], cell[:, 0], cell[:, -1]])
    n_pairs = left.size + upper.size
    rows = np.concatenate(
        [np.arange(n_pairs), np.arange(n_pairs), n_pairs + np.arange(border.size)]
    )
    cols = np.concatenate([left, upper, right, lower, border])
    values = np.concatenate([np.ones(n_pairs), -np.ones(n_pairs), np.ones(border.size)])
    return sp.csr_matrix((values, (rows, cols)), shape=(n_pairs + border.size, g * g))


@dataclass(frozen=True)
class GridOperators:
    """Noise-level-free operators of one grid size; Sigma = noise_level^2 * unit_covariance."""

    difference: sp.csr_matrix  # D
    unit_covariance: np.ndarray  # D^T D + (1/p) 1 1^T
    unit_cholesky: np.ndarray  # lower Cholesky factor of unit_covariance
    unit_inverse: np.ndarray  # unit_covariance^{-1}


@lru_cache(maxsize=8)
def grid_operators(grid_size: int) -> GridOperators:
    """D, Sigma / s^2, its Cholesky factor and inverse for a grid size (cached per process)."""
    difference = difference_matrix(grid_size)
    n_cells = grid_size * grid_size
    unit_covariance = (difference.T @ difference).toarray() + 1.0 / n_cells
    return GridOperators(
        difference=difference,
        unit_covariance=unit_covariance,
        unit_cholesky=np.linalg.cholesky(unit_covariance),
        unit_inverse=np.linalg.inv(unit_covariance),
    )


def covariance(grid_size: int, noise_level: float) -> np.ndarray:
    """Sigma = noise_level^2 (D^T D + (1/p) 1 1^T) for a g x g grid."""
    return noise_level**2 * grid_operators(grid_size).unit_covariance


@dataclass
class LegStatistics:
    """Sufficient statistics of LEG sampling, one entry per image (numpy, CPU).

    g_hat: (N, C, p) float64, (1/n) sum_i y_i z_i per perturbed channel (C = 3, or 1 for the
    ``shared`` channel mode); target: (N,) explained class; clean_score: (N,) f(x).
    The sampling's own uncertainty (``legx.methods.leg.uncertainty``), None where not recorded:
    leg_covariance: (N, C, C, p) float64, the estimated covariance of the LEG estimates of two
    channels in each cell; group_leg: (N, K, C, p) float64, LEG of each of K disjoint groups of
    independent draws (consecutive, sizes within one); n_units: independent draws per channel (antithetic
    pairs count once). Adaptive budgets (``legx.methods.leg.adaptive``) differ per image:
    image_forwards (N,) int64, the forwards each image cost (n_forwards is then the cap),
    capped (N,) bool, stopped at the cap before the target reliability, and discarded_forwards, the call's
    speculative forwards past an image's stop, in no map (``fill_batches``).
    """

    g_hat: np.ndarray
    target: np.ndarray
    clean_score: np.ndarray
    grid_size: int
    noise_level: float
    n_forwards: int
    leg_covariance: np.ndarray | None = None
    group_leg: np.ndarray | None = None
    n_units: int | None = None
    image_forwards: np.ndarray | None = None
    capped: np.ndarray | None = None
    discarded_forwards: int = 0

    _PER_IMAGE = ("g_hat", "target", "clean_score", "leg_covariance", "group_leg", "image_forwards",
                  "capped")
    _SHARED = ("grid_size", "noise_level", "n_forwards", "n_units")

    def __len__(self) -> int:
        return self.g_hat.shape[0]

    def forwards_per_image(self) -> np.ndarray:
        """The forwards each image cost, (N,) int64 (``legx.methods.sampled.SampledStatistics``)."""
        if self.image_forwards is not None:
            return np.asarray(self.image_forwards, dtype=np.int64)
        return np.full(len(self), self.n_forwards, dtype=np.int64)

    def __getitem__(self, index: int) -> LegStatistics:
        position = range(len(self))[index]
        part = slice(position, position + 1)
        per_image = {
            name: None if getattr(self, name) is None else getattr(self, name)[part]
            for name in self._PER_IMAGE
        }
        return LegStatistics(**per_image, **{name: getattr(self, name) for name in self._SHARED})

    @staticmethod
    def concat(parts: Sequence[LegStatistics]) -> LegStatistics:
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        shared = {name: getattr(first, name) for name in LegStatistics._SHARED}
        for part in parts[1:]:
            if {name: getattr(part, name) for name in LegStatistics._SHARED} != shared:
                raise ValueError("cannot concatenate statistics of different LEG settings")
        per_image = {}
        for name in LegStatistics._PER_IMAGE:
            values = [getattr(part, name) for part in parts]
            recorded = [value is not None for value in values]
            if any(recorded) and not all(recorded):
                raise ValueError(f"cannot concatenate statistics with and without {name}")
            per_image[name] = np.concatenate(values) if all(recorded) else None
        discarded = sum(part.discarded_forwards for part in parts)
        return LegStatistics(**per_image, **shared, discarded_forwards=discarded)


def combine_channels(per_channel: np.ndarray, absolute: bool) -> np.ndarray:
    """(..., C, p) channel estimates -> (..., p): the reference's mean_c |LEG_c|, or the signed
    mean when ``absolute`` is False."""
    return np.abs(per_channel).mean(axis=-2) if absolute else per_channel.mean(axis=-2)


def leg_maps(stats: LegStatistics, absolute: bool = True) -> np.ndarray:
    """LEG = Sigma^{-1} g_hat per channel, combined over channels: float32 (N, g, g)."""
    inverse = grid_operators(stats.grid_size).unit_inverse / stats.noise_level**2
    per_channel = stats.g_hat @ inverse  # inverse is symmetric
    combined = combine_channels(per_channel, absolute)
    return combined.reshape(len(stats), stats.grid_size, stats.grid_size).astype(np.float32)


# BATCHED: every program of a call at once (``legx.methods.leg.interior_point``), the exact
# solvers as its fallback; CLARABEL and HIGHS: one program at a time, each the other's fallback.
EXACT_SOLVERS = ("CLARABEL", "HIGHS")
SOLVERS = ("BATCHED", *EXACT_SOLVERS)
DEFAULT_SOLVER = "BATCHED"
FORMULATIONS = ("sparse", "dense")
# Constraint violation accepted on the unit-scaled problem (||b||_inf = 1): looser than the
# solvers' own feasibility tolerances (1e-7 to 1e-8), tight enough to reject a wrong answer.
FEASIBILITY_TOLERANCE = 1e-5
# Gap on the unit scale below which two values of a solution are one region's (module
# docstring, "Ties"): far above the solvers' convergence noise, far below a region's step.
TIE_TOLERANCE = 1e-6


class TVSolveError(RuntimeError):
    """A LEG-TV linear program had no trustworthy solution."""


@dataclass
class TVSolution:
    """One LEG-TV map (g, g) for one lambda, or the reason there is none."""

    lam: float
    map: np.ndarray | None
    status: str
    error: str | None
    solve_s: float
    # Programs of this map (one per channel) that the BATCHED solver left to the exact one.
    fallbacks: int = 0


@lru_cache(maxsize=8)
def _pseudo_inverse_transpose(grid_size: int) -> np.ndarray:
    """D+^T = D (D^T D)^{-1} as a dense (m, p) array (D has full column rank)."""
    difference = grid_operators(grid_size).difference
    laplacian = (difference.T @ difference).toarray()
    return np.asarray(difference @ np.linalg.inv(laplacian))


class _TVProgram:
    """The unit-scaled LEG-TV LP of one grid size, built once, solved for many (b, lam).

    Clarabel on the sparse formulation gets the program directly in its conic form, with one
    auxiliary variable per row of D (variables h, t = 1^T h, s >= |D h|):

        minimise 1^T s   subject to   t - 1^T h = 0,   D h - s <= 0,   -D h - s <= 0,
                                      D h + (t/p) w <= b + lam,   -D h - (t/p) w <= lam - b,

    p + 1 + m variables and 4m + 1 rows; cvxpy's canonical form of the same program carries m
    more variables and 2m more rows (one per |A h - b| entry), which cost Clarabel time for the
    same optimum (docs/benchmarks/legtv-solver.md). HiGHS and the dense formulation go through
    cvxpy, built on first use.
    """

    def __init__(self, grid_size: int, formulation: str) -> None:
        difference = grid_operators(grid_size).difference
        self.grid_size = grid_size
        self.formulation = formulation
        self.difference = difference
        self.weights = _pseudo_inverse_transpose(grid_size).sum(axis=1)
        self._cvxpy_problem = None
        self._conic_form = None
        self._clarabel_solver = None

    def _cvxpy(self):
        """(problem, b Parameter, lam Parameter, h Variable) of the cvxpy formulation."""
        import cvxpy as cp

        if self._cvxpy_problem is None:
            difference, weights = self.difference, self.weights
            n_rows, n_cells = difference.shape
            rhs = cp.Parameter(n_rows, name="b")
            lam = cp.Parameter(nonneg=True, name="lam")
            solution = cp.Variable(n_cells, name="h")
            if self.formulation == "sparse":
                total = cp.Variable(name="t")
                fitted = difference @ solution + (weights / n_cells) * total
                constraints = [cp.abs(fitted - rhs) <= lam, total == cp.sum(solution)]
            else:
                dense = difference.toarray() + np.outer(weights, np.ones(n_cells)) / n_cells
                constraints = [cp.abs(dense @ solution - rhs) <= lam]
            problem = cp.Problem(cp.Minimize(cp.norm1(difference @ solution)), constraints)
            self._cvxpy_problem = (problem, rhs, lam, solution)
        return self._cvxpy_problem

    def _conic(self):
        """(P, c, A, cones) of the direct Clarabel form (class docstring); b varies per solve."""
        import clarabel

        if self._conic_form is None:
            difference = self.difference.tocsc()
            n_rows, n_cells = difference.shape
            identity = sp.identity(n_rows, format="csc")
            no_total = sp.csc_matrix((n_rows, 1))
            weight = sp.csc_matrix(self.weights[:, None] / n_cells)
            no_slack = sp.csc_matrix((n_rows, n_rows))
            matrix = sp.vstack([
                sp.hstack([sp.csc_matrix(-np.ones((1, n_cells))), sp.csc_matrix([[1.0]]),
                           sp.csc_matrix((1, n_rows))]),
                sp.hstack([difference, no_total, -identity]),
                sp.hstack([-difference, no_total, -identity]),
                sp.hstack([difference, weight, no_slack]),
                sp.hstack([-difference, -weight, no_slack]),
            ]).tocsc()
            n_variables = n_cells + 1 + n_rows
            cost = np.concatenate([np.zeros(n_cells + 1), np.ones(n_rows)])
            cones = [clarabel.ZeroConeT(1), clarabel.NonnegativeConeT(4 * n_rows)]
            self._conic_form = (sp.csc_matrix((n_variables, n_variables)), cost, matrix, cones)
        return self._conic_form

    def rhs_of(self, g_hat: np.ndarray) -> np.ndarray:
        """b = D+^T g_hat, for g_hat (p,) or (p, k)."""
        return _pseudo_inverse_transpose(self.grid_size) @ g_hat

    def residual(self, solution: np.ndarray, rhs: np.ndarray) -> float:
        n_cells = solution.size
        fitted = self.difference @ solution + self.weights * solution.sum() / n_cells
        return float(np.abs(fitted - rhs).max())

    def _solve_clarabel(self, rhs: np.ndarray, lam: float) -> np.ndarray:
        """One Clarabel solver per program, whose bounds are updated between solves: the KKT
        system's pattern, ordering and symbolic factorisation are the same for every b and lam."""
        import clarabel

        n_rows, n_cells = self.difference.shape
        bounds = np.concatenate([[0.0], np.zeros(2 * n_rows), rhs + lam, lam - rhs])
        try:
            if self._clarabel_solver is None:
                quadratic, cost, matrix, cones = self._conic()
                settings = clarabel.DefaultSettings()
                settings.verbose = False
                self._clarabel_solver = clarabel.DefaultSolver(quadratic, cost, matrix, bounds, cones, settings)
            else:
                self._clarabel_solver.update(b=bounds)
            result = self._clarabel_solver.solve()
        except Exception as error:  # noqa: BLE001 - the solver's own failure, reported as such
            self._clarabel_solver = None
            raise TVSolveError(f"CLARABEL failed: {error}") from error
        if result.status != clarabel.SolverStatus.Solved:
            raise TVSolveError(f"CLARABEL ended with status {str(result.status)!r}")
        return np.asarray(result.x[:n_cells], dtype=np.float64)

    def _solve_cvxpy(self, rhs: np.ndarray, lam: float, solver: str) -> np.ndarray:
        import cvxpy as cp

        problem, rhs_parameter, lam_parameter, solution = self._cvxpy()
        rhs_parameter.value = rhs
        lam_parameter.value = lam
        try:
            with warnings.catch_warnings():
                # cvxpy's bound propagation warns on NaN bounds of Parameters; not our data.
                warnings.filterwarnings("ignore", category=RuntimeWarning, module="cvxpy")
                problem.solve(solver=solver)
        except cp.error.SolverError as error:
            raise TVSolveError(f"{solver} failed: {error}") from error
        if problem.status != cp.OPTIMAL or solution.value is None:
            raise TVSolveError(f"{solver} ended with status {problem.status!r}")
        return np.asarray(solution.value, dtype=np.float64)

    def solve(self, rhs: np.ndarray, lam: float, solver: str) -> np.ndarray:
        """Unit-scaled solution h for ||rhs||_inf = 1; raises TVSolveError."""
        if solver == "CLARABEL" and self.formulation == "sparse":
            solution = self._solve_clarabel(rhs, lam)
        else:
            solution = self._solve_cvxpy(rhs, lam, solver)
        if not np.all(np.isfinite(solution)):
            raise TVSolveError(f"{solver} returned a solution with NaN or infinite values")
        violation = self.residual(solution, rhs) - lam
        if violation > FEASIBILITY_TOLERANCE:
            raise TVSolveError(
                f"{solver} solution violates the constraint by {violation:.2e} "
                f"(tolerance {FEASIBILITY_TOLERANCE:.0e})"
            )
        return solution


@lru_cache(maxsize=16)
def _program(grid_size: int, formulation: str) -> _TVProgram:
    return _TVProgram(grid_size, formulation)


def snap_ties(solution: np.ndarray, tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """A unit-scaled ``solution`` with the values that the optimum shares made equal (module
    docstring, "Ties"): sorted values whose neighbours lie within ``tolerance`` form one run,
    which takes its median, or 0 where it holds a value within ``tolerance`` of 0. Moves no
    value by more than its run's width. Array operations on the sorted values: a run is a
    contiguous slice there, so its median is its middle element (or the mean of its two)."""
    order = np.argsort(solution, kind="stable")
    values = solution[order]
    starts = np.concatenate([[0], np.nonzero(np.diff(values) > tolerance)[0] + 1])
    lengths = np.diff(np.concatenate([starts, [values.size]]))
    medians = (values[starts + (lengths - 1) // 2] + values[starts + lengths // 2]) / 2
    at_zero = np.minimum.reduceat(np.abs(values), starts) <= tolerance
    snapped = np.empty_like(solution)
    snapped[order] = np.repeat(np.where(at_zero, 0.0, medians), lengths)
    return snapped


def _solve_with_fallback(
    program: _TVProgram, rhs: np.ndarray, lam: float, solver: str
) -> np.ndarray:
    fallbacks = [solver] + [other for other in EXACT_SOLVERS if other != solver]
    errors = []
    for name in fallbacks:
        try:
            return program.solve(rhs, lam, name)
        except TVSolveError as error:
            errors.append(str(error))
    raise TVSolveError("; ".join(errors))


def check_solver_arguments(solver: str, formulation: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
    if solver == "BATCHED" and formulation != "sparse":
        raise ValueError("the BATCHED solver solves the sparse formulation; formulation 'dense' "
                         "needs solver CLARABEL or HIGHS")


def _solve_programs(program: _TVProgram, rhs: np.ndarray, lams: np.ndarray,
                    solver: str) -> tuple[list[np.ndarray | TVSolveError], np.ndarray]:
    """Unit-scale solutions of programs (rhs (n, m), lams (n,)), or the error of each that had
    none, and whether the exact fallback solved it. BATCHED solves them all at once
    (``legx.methods.leg.interior_point``) and hands a program that did not converge, or whose
    solution violates the constraint, to Clarabel and then HiGHS; the exact solvers take the
    programs one by one."""
    fell_back = np.zeros(len(rhs), dtype=bool)
    if solver != "BATCHED":
        results = []
        for row, lam in zip(rhs, lams):
            try:
                results.append(_solve_with_fallback(program, row, float(lam), solver))
            except TVSolveError as error:
                results.append(error)
        return results, fell_back
    from legx.methods.leg.interior_point import solve_programs

    batch = solve_programs(program.grid_size, rhs, lams)
    results = []
    for index, (solution, row, lam) in enumerate(zip(batch.solutions, rhs, lams)):
        accepted = (batch.converged[index] and np.all(np.isfinite(solution))
                    and program.residual(solution, row) - lam <= FEASIBILITY_TOLERANCE)
        if accepted:
            results.append(solution)
            continue
        fell_back[index] = True
        try:
            results.append(_solve_with_fallback(program, row, float(lam), "CLARABEL"))
        except TVSolveError as error:
            results.append(error)
    return results, fell_back


def solve_tv_batch(
    g_hats: np.ndarray,
    grid_size: int,
    noise_level: float,
    lambdas: Sequence[float],
    solver: str = DEFAULT_SOLVER,
    formulation: str = "sparse",
    absolute: bool = True,
) -> list[list[TVSolution]]:
    """LEG-TV maps of many statistics g_hat (S, C, p) at once, one per statistic and lambda.

    Each channel is its own program and the channels are combined as for LEG (mean of absolute
    values, or the signed mean). Every program of the call (S x C x lambdas) goes to the solver
    together, so that BATCHED solves them as one batch. A lambda whose solve fails for any
    channel, with every solver, yields a TVSolution with status 'error' and no map. The call's
    solve time is shared equally by its solutions.
    """
    check_solver_arguments(solver, formulation)
    g_hats = np.asarray(g_hats, dtype=np.float64)
    n_cells = grid_size * grid_size
    if g_hats.ndim != 3 or g_hats.shape[2] != n_cells:
        raise ValueError(f"g_hat must have shape (statistics, channels, {n_cells}), got {g_hats.shape}")
    if not np.isfinite(g_hats).all():
        raise ValueError("g_hat contains NaN or infinite values")
    started = time.perf_counter()
    n_statistics, n_channels, _ = g_hats.shape
    lambdas = [float(lam) for lam in lambdas]
    program = _program(grid_size, formulation)
    # Every statistic and channel in one product: D+^T is read once.
    rhs = program.rhs_of(g_hats.reshape(-1, n_cells).T).T.reshape(n_statistics, n_channels, -1)
    scales = np.abs(rhs).max(axis=2)
    # b = 0 means a locally flat score: g = 0 is the only feasible point's optimum.
    keys = [(statistic, channel, position)
            for statistic in range(n_statistics) for channel in range(n_channels)
            if scales[statistic, channel] > 0 for position in range(len(lambdas))]
    statistic_of, channel_of, position_of = (np.array(part, dtype=np.int64).reshape(-1)
                                             for part in zip(*keys)) if keys else (np.zeros(0, np.int64),) * 3
    unit_rhs = rhs[statistic_of, channel_of] / scales[statistic_of, channel_of, None]
    lams = np.asarray(lambdas, dtype=np.float64)[position_of]
    results, fell_back = _solve_programs(program, unit_rhs, lams, solver) if keys else ([], [])
    per_channel = np.zeros((n_statistics, len(lambdas), n_channels, n_cells))
    errors: dict[tuple[int, int], str] = {}
    fallbacks = np.zeros((n_statistics, len(lambdas)), dtype=np.int64)
    for (statistic, channel, position), result, exact in zip(keys, results, fell_back):
        fallbacks[statistic, position] += exact
        if isinstance(result, TVSolveError):
            errors.setdefault((statistic, position), str(result))
            continue
        scale = scales[statistic, channel] / noise_level**2
        per_channel[statistic, position, channel] = snap_ties(result) * scale
    seconds = (time.perf_counter() - started) / max(1, n_statistics * len(lambdas))
    solutions = []
    for statistic in range(n_statistics):
        row = []
        for position, lam in enumerate(lambdas):
            error = errors.get((statistic, position))
            fallback_count = int(fallbacks[statistic, position])
            if error is not None:
                row.append(TVSolution(lam, None, "error", error, seconds, fallback_count))
                continue
            combined = combine_channels(per_channel[statistic, position], absolute)
            row.append(TVSolution(lam, combined.reshape(grid_size, grid_size).astype(np.float32),
                                  "ok", None, seconds, fallback_count))
        solutions.append(row)
    return solutions


def solve_tv(
    g_hat: np.ndarray,
    grid_size: int,
    noise_level: float,
    lambdas: Sequence[float],
    solver: str = DEFAULT_SOLVER,
    formulation: str = "sparse",
    absolute: bool = True,
) -> list[TVSolution]:
    """LEG-TV maps of one image from its LEG statistic g_hat (C, p), one per lambda
    (``solve_tv_batch`` of one statistic)."""
    g_hat = np.asarray(g_hat, dtype=np.float64)
    n_cells = grid_size * grid_size
    if g_hat.ndim != 2 or g_hat.shape[1] != n_cells:
        raise ValueError(f"g_hat must have shape (channels, {n_cells}), got {g_hat.shape}")
    return solve_tv_batch(g_hat[None], grid_size, noise_level, lambdas, solver, formulation, absolute)[0]


def legtv_solutions(
    stats: LegStatistics,
    lambdas: Sequence[float],
    solver: str = DEFAULT_SOLVER,
    formulation: str = "sparse",
    absolute: bool = True,
) -> list[list[TVSolution]]:
    """LEG-TV solutions per image of ``stats`` and per lambda, every program in one batch."""
    return solve_tv_batch(stats.g_hat, stats.grid_size, stats.noise_level, lambdas, solver,
                          formulation, absolute)
