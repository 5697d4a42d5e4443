"""A batched interior-point method for LEG-TV's linear programs: every program of a finish step
(all images, channels, lambdas and bootstrap draws of a call) solved together.

The program is ``legx.methods.leg.solvers``'s, on the unit scale (||b||_inf = 1), with one
variable per cell (h, p of them) and one per row of D (s, m of them):

    minimise 1^T s   subject to   D h - s <= 0,   -D h - s <= 0,   B h <= b + lam,   -B h <= lam - b,
    B = D + (1/p) w 1^T   (B h = D h + (t/p) w with t = 1^T h, as in the solvers module).

Written G x + z = g with slacks z >= 0 and duals y >= 0 (G^T y + c = 0 at the optimum),
Mehrotra's predictor-corrector method (Nocedal & Wright, "Numerical Optimization", 2006,
section 14.2) takes Newton steps on the perturbed optimality conditions z_k y_k = sigma mu. With
theta = y / z on the four row blocks (theta_1 .. theta_4) the Newton system reduces, after s is
eliminated (its block is diagonal), to normal equations in h alone:

    (D^T F D + U C U^T) dh = q,    F = 4 theta_1 theta_2 / (theta_1 + theta_2) + E,
    E = theta_3 + theta_4,   U = [1, a],   a = D^T (E w) / p,   C = [[e, 1], [1, 0]],   e = w^T E w / p^2.

D^T F D is a weighted Laplacian of the g x g grid with a Dirichlet border: in row-major order a
band matrix with g sub-diagonals, whose banded Cholesky factor costs O(p g^2).
The rank-two term is a Woodbury correction. As the barrier tightens, t and h's mean become
nearly dependent in the box rows (w lies in the range of D), the correction loses digits, and
the corrector's solve is refined against the operator itself where its residual is not small.

``CHUNK_PROGRAMS`` programs take each step together, and a program that finishes hands its
place to the next of the call. A step is a few passes compiled by numba, each over every
program's rows at once where numpy would make a pass and a temporary per operation: the
residuals and theta; the normal matrix's weights and band; the Newton system's right side with
s eliminated; dz, dy and the step lengths. D and D^T are first differences on the grid inside
those passes. The banded factorisation and its solves keep the programs innermost, so that
every loop of LAPACK's column-by-column algorithm runs over the programs and the compiler
vectorises it (LAPACK's ``dpbtrf`` takes one program, and one Python call, at a time); the
forward substitution of U runs beside the factorisation. A program stops when its duality gap is below ``TOLERANCE`` relative to its objective and
its primal and dual residuals below ``TOLERANCE`` (Clarabel's defaults): the dual point is then a
certificate that the objective is within that gap of the optimum. A program that does not get
there within its iteration cap is returned as not converged, for the caller to solve exactly.

Like Clarabel, the method ends near the centre of the optimal face, which is not a single point
on these programs (``legx.methods.leg.solvers``, module docstring): its snapped solutions agree
with Clarabel's (docs/benchmarks/legtv-solver.md).

Why by hand: the generic solvers (Clarabel, HiGHS, through cvxpy or directly) take one program
at a time and factor a KKT system of all 4m + 1 rows, where this structure allows a banded
factorisation of p rows; no maintained library batches same-structure LPs on the CPU with a
user-supplied normal-equations solve.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
from numba import njit

# Relative duality gap and residuals at which a program is solved (Clarabel's defaults).
TOLERANCE = 1e-8
MAX_ITERATIONS = 30
# Refinements of a normal-equations solve against the operator (module docstring), for the
# programs whose residual is above the threshold, relative to the right-hand side.
REFINEMENTS = 3
REFINEMENT_THRESHOLD = 1e-10
# Diagonal regularisations tried in turn, relative to the largest diagonal entry.
REGULARISATIONS = (1e-13, 1e-10, 1e-7)
# Programs iterated together: enough for the compiled loops over the programs to run long
# vectors and to spread numpy's per-call cost, few enough that a step's arrays stay in cache.
CHUNK_PROGRAMS = 32
# Fraction of the step to the boundary of z, y >= 0 that each iteration takes.
STEP_FRACTION = 0.99
# Bounds on y / z: beyond them the normal equations carry no more information, only overflow.
THETA_RANGE = (1e-14, 1e14)


@dataclass(frozen=True)
class _Grid:
    """D, D^T and D^T F D of one grid for n programs at once, in ``difference_matrix``'s row
    order: horizontal pairs (g, g-1), vertical pairs (g-1, g), then the border cells of the top
    row, bottom row, left column and right column (g each)."""

    size: int
    weights: np.ndarray  # w = D+^T 1, (m,)

    @property
    def n_cells(self) -> int:
        return self.size * self.size

    @property
    def n_rows(self) -> int:
        return 2 * self.size * (self.size - 1) + 4 * self.size

    def apply(self, cells: np.ndarray) -> np.ndarray:
        """D h for h (n, p) -> (n, m)."""
        return _differences(cells, self.size)

    def apply_transpose(self, rows: np.ndarray) -> np.ndarray:
        """D^T v for v (n, m) -> (n, p)."""
        return _differences_transpose(rows, self.size)

    def banded_laplacian(self, row_weights: np.ndarray, regularisation: float = 0.0,
                         out: np.ndarray | None = None) -> np.ndarray:
        """D^T diag(F) D + regularisation max(diag) I for each row of ``row_weights`` (n, m), in
        LAPACK's lower band storage with the programs innermost: band[j, k, i] = M_i[j + k, j],
        shape (p, g + 1, n), written to ``out`` when given. Only the diagonal and sub-diagonals 1
        and g are nonzero; the others hold the factor's fill-in."""
        if out is None:
            out = np.empty((self.n_cells, self.size + 1, len(row_weights)))
        return _laplacian_band(np.ascontiguousarray(row_weights.T), self.size, regularisation, out)


@lru_cache(maxsize=8)
def _grid(grid_size: int) -> _Grid:
    """The operators of one grid size, with w = D+^T 1 = D (D^T D)^{-1} 1 (D has full column
    rank) from one banded solve of the grid's Laplacian."""
    if grid_size < 2:
        raise ValueError(f"the batched solver needs grid_size >= 2, got {grid_size}")
    unweighted = _Grid(grid_size, np.zeros(0))
    factor = unweighted.banded_laplacian(np.ones((1, unweighted.n_rows)))
    _band_cholesky(factor, np.zeros((0, unweighted.n_cells, 1)))
    potential = _band_solve(factor, np.ones((1, unweighted.n_cells)))
    return _Grid(grid_size, unweighted.apply(potential)[0])


@dataclass
class BatchSolution:
    """Unit-scale solutions (n, p), whether each program met the tolerance, its iterations."""

    solutions: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray


class _NormalEquations:
    """The factorised normal equations of one iteration for a set of programs: H = L L^T + U C U^T
    (module docstring), solved as H^-1 r = L^-T (I + V C V^T)^-1 L^-1 r with V = L^-1 U, and
    (I + V C V^T)^-1 = I - V (C^-1 + V^T V)^-1 V^T (Woodbury). V comes out of the factorisation
    itself (its forward substitution runs beside it), so a solve is one forward and one backward
    substitution and a 2 x 2 system per program."""

    def __init__(self, grid: _Grid, theta: np.ndarray, out: np.ndarray | None = None,
                 regularisation: float | None = None) -> None:
        """``out``: where to write the factor, (p, g + 1, n); ``regularisation``: the first
        diagonal regularisation tried, relative to the largest diagonal entry (then the larger
        ``REGULARISATIONS``; by default from the first)."""
        self.grid = grid
        regularisation = REGULARISATIONS[0] if regularisation is None else regularisation
        if out is None:
            out = np.empty((grid.n_cells, grid.size + 1, len(theta)))
        (self.row_weights, self.coupling, self.totals_inverse, self.correction, self.scalar,
         basis) = _normal_setup(theta, grid.size, grid.weights, regularisation, out)
        self.failed = _band_cholesky(out, basis)
        larger = [value for value in REGULARISATIONS if value > regularisation]
        if self.failed.any() and larger:  # the failed programs again, from the next regularisation on
            retried = _NormalEquations(grid, theta[self.failed], None, larger[0])
            out[:, :, self.failed] = retried.factor
            basis[:, :, self.failed] = retried.basis_forward
            self.failed[self.failed] = retried.failed
        self.factor, self.basis_forward = out, basis  # L, V (2, p, n)
        self.capacitance = _capacitance(basis, self.scalar, self.failed)

    def apply(self, cells: np.ndarray) -> np.ndarray:
        """H x for x (n, p)."""
        return _normal_apply(cells, self.row_weights, self.correction, self.scalar, self.grid.size)

    def _solve_once(self, right: np.ndarray) -> np.ndarray:
        return _normal_solve_once(self.factor, self.basis_forward, self.capacitance, right)

    def solve(self, right: np.ndarray, refinements: int) -> np.ndarray:
        """H^-1 right, refined against H where the Woodbury solve left a residual above
        ``REFINEMENT_THRESHOLD`` (relative), at most ``refinements`` times. Every solve runs on
        all programs; one that needs no refinement gets a zero right side, whose correction is
        exactly zero, so that a program's solution does not depend on the others'."""
        solution = self._solve_once(right)
        size = np.abs(right).max(axis=1)
        for _ in range(refinements):
            residual = right - self.apply(solution)
            exact = np.abs(residual).max(axis=1) <= REFINEMENT_THRESHOLD * size
            if exact.all():
                break
            residual[exact] = 0.0
            solution += self._solve_once(residual)
        return solution


class _Rows:
    """A dataclass of arrays with one row per program."""

    def __len__(self) -> int:
        return len(getattr(self, fields(self)[0].name))

    def take(self, rows: np.ndarray | slice):
        return type(self)(*(getattr(self, item.name)[rows] for item in fields(self)))

    def put(self, rows: np.ndarray, other) -> None:
        for item in fields(self):
            getattr(self, item.name)[rows] = getattr(other, item.name)

    def join(self, other):
        return type(self)(*(np.concatenate([getattr(self, item.name), getattr(other, item.name)])
                            for item in fields(self)))


@dataclass
class _Iterates(_Rows):
    """The iterates of a set of programs, in the module docstring's notation."""

    index: np.ndarray  # the program's position in the call
    cells: np.ndarray  # h (n, p)
    totals: np.ndarray  # s (n, m)
    slacks: np.ndarray  # z (n, 4, m)
    duals: np.ndarray  # y (n, 4, m)
    bounds: np.ndarray  # g (n, 4, m)
    scale: np.ndarray  # 1 + ||g||_inf (n,)
    iterations: np.ndarray  # Newton steps taken (n,)

    @staticmethod
    def none(grid: _Grid) -> _Iterates:
        rows = np.zeros((0, 4, grid.n_rows))
        return _Iterates(np.zeros(0, dtype=np.int64), np.zeros((0, grid.n_cells)), np.zeros((0, grid.n_rows)),
                         rows, rows, rows, np.zeros(0), np.zeros(0, dtype=np.int64))


@dataclass
class _Check(_Rows):
    """Whether each program has met the tolerance, and what its Newton step reuses."""

    converged: np.ndarray  # (n,)
    theta: np.ndarray  # y / z (n, 4, m)
    weighted: np.ndarray  # theta r_p (n, 4, m)
    products: np.ndarray  # z^T y (n,)
    dual_cells: np.ndarray  # r_d's cells part (n, p)
    dual_totals: np.ndarray  # r_d's totals part (n, m)


class _Queue:
    """The call's programs that are not iterating yet, started ``CHUNK_PROGRAMS`` at a time."""

    def __init__(self, grid: _Grid, rhs: np.ndarray, lams: np.ndarray) -> None:
        self.grid, self.rhs, self.lams = grid, rhs, lams
        self.started = 0
        self.ready = _Iterates.none(grid)

    def take(self, count: int) -> _Iterates:
        """Up to ``count`` programs, fewer when the call has no more."""
        while len(self.ready) < count and self.started < len(self.rhs):
            upcoming = slice(self.started, self.started + CHUNK_PROGRAMS)
            self.ready = self.ready.join(_start(self.grid, self.rhs[upcoming], self.lams[upcoming],
                                                np.arange(len(self.rhs))[upcoming]))
            self.started = min(self.started + CHUNK_PROGRAMS, len(self.rhs))
        taken, self.ready = self.ready.take(slice(0, count)), self.ready.take(slice(count, None))
        return taken


def _constraints(grid: _Grid, cells: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """G x: (n, 4, m)."""
    differences = grid.apply(cells)
    fitted = differences + cells.sum(axis=1, keepdims=True) / grid.n_cells * grid.weights
    return np.stack([differences - totals, -differences - totals, fitted, -fitted], axis=1)


def _transpose(grid: _Grid, duals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """G^T y as (cells part (n, p), totals part (n, m))."""
    box = duals[:, 2] - duals[:, 3]
    cells = grid.apply_transpose(duals[:, 0] - duals[:, 1] + box)
    cells += (box @ grid.weights)[:, None] / grid.n_cells
    return cells, -duals[:, 0] - duals[:, 1]


def _normal_solve(equations: _NormalEquations, cells_right: np.ndarray, totals_right: np.ndarray,
                  refine: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """dx with G^T diag(theta) G dx = (cells_right, totals_right): s eliminated, then the normal
    equations in h (module docstring)."""
    grid = equations.grid
    eliminated = equations.coupling * totals_right * equations.totals_inverse
    step_cells = equations.solve(cells_right - grid.apply_transpose(eliminated), REFINEMENTS if refine else 0)
    return step_cells, (totals_right - equations.coupling * grid.apply(step_cells)) * equations.totals_inverse


@lru_cache(maxsize=8)
def _least_squares_equations(grid_size: int) -> _NormalEquations:
    """The normal equations with theta = 1 (G^T G), the same for every program: factored once per
    grid, for ``CHUNK_PROGRAMS`` right sides at a time."""
    return _NormalEquations(_grid(grid_size), np.ones((CHUNK_PROGRAMS, 4, _grid(grid_size).n_rows)))


def _start(grid: _Grid, rhs: np.ndarray, lams: np.ndarray, index: np.ndarray) -> _Iterates:
    """Starting points of up to ``CHUNK_PROGRAMS`` programs, as CVXOPT's LP solver starts
    (Vandenberghe, "The CVXOPT linear and quadratic cone program solvers", 2010, section 10.3):
    the least-squares x of G x = g and the least-norm y of G^T y = -c, each shifted into the
    positive orthant."""
    n_programs, n_rows = len(rhs), grid.n_rows
    bounds = np.zeros((CHUNK_PROGRAMS, 4, n_rows))  # rows past n_programs: zero right sides
    bounds[:n_programs, 2] = rhs + lams[:, None]
    bounds[:n_programs, 3] = lams[:, None] - rhs
    equations = _least_squares_equations(grid.size)
    cells, totals = _normal_solve(equations, *_transpose(grid, bounds))
    objective = np.zeros((CHUNK_PROGRAMS, n_rows))
    objective[:n_programs] = -1.0
    least_norm = _normal_solve(equations, np.zeros((CHUNK_PROGRAMS, grid.n_cells)), objective)
    kept = slice(0, n_programs)
    slacks = _shifted((bounds - _constraints(grid, cells, totals))[kept])
    duals = _shifted(-_constraints(grid, *least_norm)[kept])
    return _Iterates(index, cells[kept], totals[kept], slacks, duals, bounds[kept],
                     1.0 + np.abs(bounds[kept]).reshape(n_programs, -1).max(axis=1),
                     np.zeros(n_programs, dtype=np.int64))


def solve_programs(grid_size: int, rhs: np.ndarray, lams: np.ndarray,
                   max_iterations: int | None = None) -> BatchSolution:
    """Solve min ||D h||_1 s.t. ||B h - b||_inf <= lam for every row b of ``rhs`` (n, m) and
    its lam (n,); unit scale expected (||b||_inf = 1). ``CHUNK_PROGRAMS`` programs iterate
    together, each for at most ``max_iterations`` (``MAX_ITERATIONS``) Newton steps; a program
    that finishes hands its place to the next one, so that the compiled loops keep running on
    full-width arrays until the call's last programs."""
    grid = _grid(grid_size)
    max_iterations = MAX_ITERATIONS if max_iterations is None else max_iterations
    rhs = np.asarray(rhs, dtype=np.float64)
    lams = np.asarray(lams, dtype=np.float64)
    if rhs.ndim != 2 or rhs.shape[1] != grid.n_rows or lams.shape != (len(rhs),):
        raise ValueError(f"rhs must be (n, {grid.n_rows}) and lams (n,), got {rhs.shape} and {lams.shape}")
    if not (np.isfinite(rhs).all() and np.isfinite(lams).all() and (lams >= 0).all()):
        raise ValueError("rhs and lams must be finite, and lams >= 0")
    n_programs = len(rhs)
    result = BatchSolution(np.zeros((n_programs, grid.n_cells)), np.zeros(n_programs, dtype=bool),
                           np.zeros(n_programs, dtype=np.int64))
    queue = _Queue(grid, rhs, lams)
    programs = queue.take(CHUNK_PROGRAMS)
    workspace = np.empty(grid.n_cells * (grid.size + 1) * CHUNK_PROGRAMS)  # each step's factor
    while len(programs):
        check = _check(grid, programs)
        programs, check = _retire(grid, programs, check, _finished(programs, check, max_iterations), queue, result,
                                  max_iterations)
        if not len(programs):
            break
        failed = _step(grid, programs, check, _factor_space(workspace, grid, len(programs)))
        if failed.any():  # not even the largest regularisation made their normal matrix definite
            check.converged[:] = False
            programs, _ = _retire(grid, programs, check, failed, queue, result, max_iterations)
    return result


def _retire(grid: _Grid, programs: _Iterates, check: _Check, done: np.ndarray, queue: _Queue,
            result: BatchSolution, max_iterations: int) -> tuple[_Iterates, _Check]:
    """Write the ``done`` programs to ``result`` and give their places to the queue's next
    programs; places the queue cannot fill are dropped."""
    while done.any():
        rows = np.flatnonzero(done)
        finished = programs.index[rows]
        result.solutions[finished] = programs.cells[rows]
        result.converged[finished] = check.converged[rows]
        result.iterations[finished] = programs.iterations[rows]
        fresh = queue.take(len(rows))
        if len(fresh):
            programs.put(rows[:len(fresh)], fresh)
            check.put(rows[:len(fresh)], _check(grid, fresh))
        if len(fresh) < len(rows):
            keep = np.ones(len(programs), dtype=bool)
            keep[rows[len(fresh):]] = False
            programs, check = programs.take(keep), check.take(keep)
        done = _finished(programs, check, max_iterations)  # a fresh program at the cap
    return programs, check


def _finished(programs: _Iterates, check: _Check, max_iterations: int) -> np.ndarray:
    """The programs that leave: converged, or at the iteration cap."""
    return check.converged | (programs.iterations >= max_iterations)


def _check(grid: _Grid, programs: _Iterates) -> _Check:
    """The residuals, duality gap and theta of every program (one pass over its rows)."""
    theta, weighted, largest, dual, products, dual_cells, dual_totals, dual_infeasibility = _check_pass(
        programs.cells, programs.totals, programs.slacks, programs.duals, programs.bounds, grid.size,
        grid.weights, *THETA_RANGE)
    primal = programs.totals.sum(axis=1)
    gap = np.abs(primal - dual) / np.maximum(1.0, np.minimum(np.abs(primal), np.abs(dual)))
    converged = ((gap <= TOLERANCE) & (largest / programs.scale <= TOLERANCE)
                 & (dual_infeasibility <= TOLERANCE))
    return _Check(converged, theta, weighted, products, dual_cells, dual_totals)


def _step(grid: _Grid, programs: _Iterates, check: _Check, factor_space: np.ndarray) -> np.ndarray:
    """One Newton step of Mehrotra's method for every program, in place; the factor is written to
    ``factor_space``. Returns the programs whose normal equations could not be factored: when
    there are any, no program steps."""
    theta, weighted = check.theta, check.weighted
    z, y = programs.slacks, programs.duals
    equations = _NormalEquations(grid, theta, factor_space)
    if equations.failed.any():
        return equations.failed

    def newton(target: np.ndarray, affine_slacks: np.ndarray, affine_duals: np.ndarray, corrector: bool):
        """Solve G^T dy = -r_d, G dx + dz = -r_p, y dz + z dy = c, with c = -z y (the predictor)
        or target - z y - dz_affine dy_affine (the corrector): returns (dh, ds, dz, dy, the primal
        and dual step to the boundary). s is eliminated, then the normal equations give dh."""
        cells_right, totals_right = _newton_right(
            weighted, z, y, target, affine_slacks, affine_duals, corrector, check.dual_cells, check.dual_totals,
            equations.coupling, equations.totals_inverse, grid.size, grid.weights)
        # The predictor only sets the centring and the corrector's second-order term: its solve
        # goes unrefined.
        step_cells = equations.solve(cells_right, REFINEMENTS if corrector else 0)
        return (step_cells, *_newton_steps(step_cells, totals_right, equations.coupling, equations.totals_inverse,
                                           theta, weighted, z, y, target, affine_slacks, affine_duals, corrector,
                                           grid.size, grid.weights))

    mu = check.products / (4 * grid.n_rows)
    _, _, affine_slacks, affine_duals, primal_step, dual_step = newton(mu, z, y, corrector=False)
    affine_mu = _stepped_mean_product(z, y, affine_slacks, affine_duals, primal_step, dual_step)
    target = (affine_mu / mu) ** 3 * mu
    step_cells, step_totals, step_slacks, step_duals, primal_step, dual_step = newton(
        target, affine_slacks, affine_duals, corrector=True)
    primal_step *= STEP_FRACTION
    dual_step *= STEP_FRACTION
    _take_step(programs.cells, programs.totals, z, y, step_cells, step_totals, step_slacks, step_duals,
               primal_step, dual_step)
    programs.iterations += 1
    return equations.failed


def _factor_space(workspace: np.ndarray, grid: _Grid, n_programs: int) -> np.ndarray:
    """A contiguous (p, g + 1, n) view of the workspace's start."""
    shape = (grid.n_cells, grid.size + 1, n_programs)
    return workspace[:np.prod(shape)].reshape(shape)


def _shifted(values: np.ndarray) -> np.ndarray:
    """values + (1 + max(0, -min)) per program: strictly positive, as CVXOPT shifts its start."""
    lowest = values.reshape(len(values), -1).min(axis=1)
    return values + (1.0 + np.maximum(0.0, -lowest))[:, None, None]


# Kernels: each one pass over a chunk's arrays, program by program, where numpy would make one
# pass per operation and a temporary for each. Per program: D h (``_apply_d``) and D^T v
# (``_add_d_transpose``) on the grid in ``_Grid``'s row order; the four row blocks of G x are
# D h - s, -D h - s, B h and -B h, with B h = D h + (1^T h / p) w.


@njit(cache=True, fastmath=True)
def _apply_d(cells, size, out):
    """out = D h for one program's h (p,)."""
    pairs = size * (size - 1)
    border = 2 * pairs
    for r in range(size):
        for c in range(size - 1):
            out[r * (size - 1) + c] = cells[r * size + c] - cells[r * size + c + 1]
    for cell in range(pairs):
        out[pairs + cell] = cells[cell] - cells[cell + size]
    for c in range(size):
        out[border + c] = cells[c]
        out[border + size + c] = cells[(size - 1) * size + c]
        out[border + 2 * size + c] = cells[c * size]
        out[border + 3 * size + c] = cells[c * size + size - 1]


@njit(cache=True, fastmath=True)
def _add_d_transpose(rows, size, out):
    """out += D^T v for one program's v (m,)."""
    pairs = size * (size - 1)
    border = 2 * pairs
    for r in range(size):
        for c in range(size - 1):
            value = rows[r * (size - 1) + c]
            out[r * size + c] += value
            out[r * size + c + 1] -= value
    for cell in range(pairs):
        value = rows[pairs + cell]
        out[cell] += value
        out[cell + size] -= value
    for c in range(size):
        out[c] += rows[border + c]
        out[(size - 1) * size + c] += rows[border + size + c]
        out[c * size] += rows[border + 2 * size + c]
        out[c * size + size - 1] += rows[border + 3 * size + c]


@njit(cache=True, fastmath=True)
def _differences(cells, size):
    """D h for h (n, p) -> (n, m)."""
    out = np.empty((cells.shape[0], 2 * size * (size - 1) + 4 * size))
    for i in range(cells.shape[0]):
        _apply_d(cells[i], size, out[i])
    return out


@njit(cache=True, fastmath=True)
def _differences_transpose(rows, size):
    """D^T v for v (n, m) -> (n, p)."""
    out = np.zeros((rows.shape[0], size * size))
    for i in range(rows.shape[0]):
        _add_d_transpose(rows[i], size, out[i])
    return out


@njit(cache=True, fastmath=True)
def _block(differences, totals, fitted, k, out):
    """Block k of G x (m,): D h - s, -D h - s, B h or -B h."""
    for j in range(out.size):
        if k == 0:
            out[j] = differences[j] - totals[j]
        elif k == 1:
            out[j] = -differences[j] - totals[j]
        elif k == 2:
            out[j] = fitted[j]
        else:
            out[j] = -fitted[j]


@njit(cache=True, fastmath=True)
def _check_pass(cells, totals, slacks, duals, bounds, size, weights, theta_low, theta_high):
    """Per program: theta = y / z (clipped), weighted = theta r_p with r_p = G x + z - g, the
    dual residual r_d = G^T y + c as (cells part (p,), totals part (m,)), and max |r_p|,
    -g^T y, z^T y and max |r_d|."""
    n, four, m = slacks.shape
    p = size * size
    theta = np.empty_like(slacks)
    weighted = np.empty_like(slacks)
    infeasibility = np.zeros(n)
    dual = np.zeros(n)
    products = np.zeros(n)
    dual_cells = np.zeros((n, p))
    dual_totals = np.ones((n, m))
    dual_infeasibility = np.zeros(n)
    differences = np.empty(m)
    fitted = np.empty(m)
    combined = np.empty(m)
    block = np.empty(m)
    for i in range(n):
        _apply_d(cells[i], size, differences)
        mean = cells[i].sum() / p
        for j in range(m):
            fitted[j] = differences[j] + mean * weights[j]
        combined[:] = 0.0
        box_dot = 0.0
        for k in range(four):
            largest = 0.0
            dual_sum = 0.0
            product_sum = 0.0
            sign = 1.0 if k % 2 == 0 else -1.0
            _block(differences, totals[i], fitted, k, block)
            for j in range(m):
                z = slacks[i, k, j]
                y = duals[i, k, j]
                bound = bounds[i, k, j]
                residual = block[j] + z - bound
                largest = max(largest, abs(residual))
                dual_sum -= bound * y
                product_sum += z * y
                ratio = min(max(y / z, theta_low), theta_high)
                theta[i, k, j] = ratio
                weighted[i, k, j] = ratio * residual
                combined[j] += sign * y
            if k < 2:
                for j in range(m):
                    dual_totals[i, j] -= duals[i, k, j]
            else:
                for j in range(m):
                    box_dot += sign * duals[i, k, j] * weights[j]
            infeasibility[i] = max(infeasibility[i], largest)
            dual[i] += dual_sum
            products[i] += product_sum
        _add_d_transpose(combined, size, dual_cells[i])
        largest = 0.0
        for cell in range(p):
            dual_cells[i, cell] += box_dot / p
            largest = max(largest, abs(dual_cells[i, cell]))
        for j in range(m):
            largest = max(largest, abs(dual_totals[i, j]))
        dual_infeasibility[i] = largest
    return theta, weighted, infeasibility, dual, products, dual_cells, dual_totals, dual_infeasibility


@njit(cache=True, fastmath=True)
def _normal_setup(theta, size, weights, regularisation, band):
    """From theta (n, 4, m): the normal matrix's row weights F = 4 theta_1 theta_2 / (theta_1 +
    theta_2) + E with E = theta_3 + theta_4, the coupling theta_2 - theta_1 and 1 / (theta_1 +
    theta_2) with which s is eliminated, a = D^T (E w) / p, e = w^T E w / p^2, U = [1, a] as
    (2, p, n), and D^T F D + regularisation max(diag) I written to ``band`` (p, g + 1, n)."""
    n, _, m = theta.shape
    p = size * size
    row_weights = np.empty((n, m))
    coupling = np.empty((n, m))
    totals_inverse = np.empty((n, m))
    correction = np.zeros((n, p))
    scalar = np.zeros(n)
    basis = np.ones((2, p, n))
    box_weights = np.empty(m)
    for i in range(n):
        for j in range(m):
            lower, upper = theta[i, 0, j], theta[i, 1, j]
            inverse = 1.0 / (lower + upper)
            box = theta[i, 2, j] + theta[i, 3, j]
            row_weights[i, j] = 4.0 * lower * upper * inverse + box
            coupling[i, j] = upper - lower
            totals_inverse[i, j] = inverse
            box_weights[j] = box * weights[j] / p
            scalar[i] += box * weights[j] * weights[j]
        scalar[i] /= p * p
        _add_d_transpose(box_weights, size, correction[i])
        for cell in range(p):
            basis[1, cell, i] = correction[i, cell]
    _laplacian_band(np.ascontiguousarray(row_weights.T), size, regularisation, band)
    return row_weights, coupling, totals_inverse, correction, scalar, basis


@njit(cache=True, fastmath=True)
def _capacitance(basis_forward, scalar, failed):
    """C^-1 + V^T V per program (n, 2, 2), C^-1 = [[0, 1], [1, -e]]; the identity for a program
    whose factorisation failed, which keeps its small solves defined (the caller drops it)."""
    _, p, n = basis_forward.shape
    out = np.zeros((n, 2, 2))
    for j in range(p):
        for i in range(n):
            first, second = basis_forward[0, j, i], basis_forward[1, j, i]
            out[i, 0, 0] += first * first
            out[i, 0, 1] += first * second
            out[i, 1, 1] += second * second
    for i in range(n):
        if failed[i]:
            out[i, 0, 0], out[i, 0, 1], out[i, 1, 1] = 1.0, 0.0, 1.0
        else:
            out[i, 0, 1] += 1.0
            out[i, 1, 1] -= scalar[i]
        out[i, 1, 0] = out[i, 0, 1]
    return out


@njit(cache=True, fastmath=True)
def _normal_apply(cells, row_weights, correction, scalar, size):
    """H x = D^T F D x + a t + (a^T x + e t) 1 with t = 1^T x, for x (n, p)."""
    n, p = cells.shape
    out = np.zeros((n, p))
    differences = np.empty(row_weights.shape[1])
    for i in range(n):
        _apply_d(cells[i], size, differences)
        for j in range(differences.size):
            differences[j] *= row_weights[i, j]
        _add_d_transpose(differences, size, out[i])
        total = cells[i].sum()
        projection = scalar[i] * total
        for cell in range(p):
            projection += correction[i, cell] * cells[i, cell]
        for cell in range(p):
            out[i, cell] += correction[i, cell] * total + projection
    return out


@njit(cache=True, fastmath=True)
def _complementarity(z, y, target, affine_slack, affine_dual, corrector):
    """The Newton system's y dz + z dy right side for one row: -z y for the predictor,
    target - z y - dz_affine dy_affine for the corrector."""
    if corrector:
        return target - z * y - affine_slack * affine_dual
    return -z * y


@njit(cache=True, fastmath=True)
def _newton_right(weighted, slacks, duals, target, affine_slacks, affine_duals, corrector, dual_cells,
                  dual_totals, coupling, totals_inverse, size, weights):
    """The right side of the Newton system with s eliminated. With v = theta r_p + c / z (c the
    predictor's -z y or the corrector's complementarity), the system's right side is
    -(G^T v + r_d) = (R_h, R_s); returns R_h - D^T (coupling R_s / (theta_1 + theta_2)), the
    normal equations' right side, and R_s."""
    n, four, m = slacks.shape
    p = size * size
    cells_right = np.zeros((n, p))
    totals_right = np.empty((n, m))
    rows = np.empty(m)
    values = np.empty(m)
    for i in range(n):
        rows[:] = 0.0
        for j in range(m):
            totals_right[i, j] = -dual_totals[i, j]
        box_dot = 0.0
        for k in range(four):
            sign = 1.0 if k % 2 == 0 else -1.0
            for j in range(m):
                z = slacks[i, k, j]
                c = _complementarity(z, duals[i, k, j], target[i], affine_slacks[i, k, j],
                                     affine_duals[i, k, j], corrector)
                values[j] = weighted[i, k, j] + c / z
                rows[j] += sign * values[j]
            if k < 2:
                for j in range(m):
                    totals_right[i, j] += values[j]
            else:
                for j in range(m):
                    box_dot += sign * values[j] * weights[j]
        # -(D^T rows + (box . w) / p + r_d cells) - D^T (coupling R_s / (theta_1 + theta_2))
        for j in range(m):
            rows[j] = -rows[j] - coupling[i, j] * totals_right[i, j] * totals_inverse[i, j]
        _add_d_transpose(rows, size, cells_right[i])
        for cell in range(p):
            cells_right[i, cell] -= box_dot / p + dual_cells[i, cell]
    return cells_right, totals_right


@njit(cache=True, fastmath=True)
def _newton_steps(step_cells, totals_right, coupling, totals_inverse, theta, weighted, slacks, duals, target,
                  affine_slacks, affine_duals, corrector, size, weights):
    """ds = (R_s - coupling D dh) / (theta_1 + theta_2), then dy = theta G dx + theta r_p + c / z,
    dz = (c - z dy) / y, and per program the largest steps <= 1 that keep z and y >= 0."""
    n, four, m = slacks.shape
    p = size * size
    step_totals = np.empty((n, m))
    step_slacks = np.empty_like(slacks)
    step_duals = np.empty_like(slacks)
    primal_step = np.empty(n)
    dual_step = np.empty(n)
    differences = np.empty(m)
    fitted = np.empty(m)
    moved = np.empty(m)
    for i in range(n):
        _apply_d(step_cells[i], size, differences)
        mean = step_cells[i].sum() / p
        for j in range(m):
            fitted[j] = differences[j] + mean * weights[j]
            step_totals[i, j] = (totals_right[i, j] - coupling[i, j] * differences[j]) * totals_inverse[i, j]
        primal_shrink = 1.0
        dual_shrink = 1.0
        for k in range(four):
            _block(differences, step_totals[i], fitted, k, moved)
            for j in range(m):
                z = slacks[i, k, j]
                y = duals[i, k, j]
                inverse_z = 1.0 / z
                inverse_y = 1.0 / y
                complementarity = _complementarity(z, y, target[i], affine_slacks[i, k, j],
                                                   affine_duals[i, k, j], corrector)
                dy = theta[i, k, j] * moved[j] + weighted[i, k, j] + complementarity * inverse_z
                dz = (complementarity - z * dy) * inverse_y
                step_duals[i, k, j] = dy
                step_slacks[i, k, j] = dz
                primal_shrink = max(primal_shrink, -dz * inverse_z)
                dual_shrink = max(dual_shrink, -dy * inverse_y)
        primal_step[i] = 1.0 / primal_shrink
        dual_step[i] = 1.0 / dual_shrink
    return step_totals, step_slacks, step_duals, primal_step, dual_step


@njit(cache=True, fastmath=True)
def _stepped_mean_product(slacks, duals, step_slacks, step_duals, primal_step, dual_step):
    """Per program, the mean of (z + alpha_p dz)(y + alpha_d dy)."""
    n, four, m = slacks.shape
    out = np.zeros(n)
    for i in range(n):
        total = 0.0
        for k in range(four):
            for j in range(m):
                total += ((slacks[i, k, j] + primal_step[i] * step_slacks[i, k, j])
                          * (duals[i, k, j] + dual_step[i] * step_duals[i, k, j]))
        out[i] = total / (four * m)
    return out


@njit(cache=True, fastmath=True)
def _take_step(cells, totals, slacks, duals, step_cells, step_totals, step_slacks, step_duals, primal_step,
               dual_step):
    """h += alpha_p dh, s += alpha_p ds, z += alpha_p dz, y += alpha_d dy, in place."""
    n, four, m = slacks.shape
    for i in range(n):
        for cell in range(cells.shape[1]):
            cells[i, cell] += primal_step[i] * step_cells[i, cell]
        for j in range(m):
            totals[i, j] += primal_step[i] * step_totals[i, j]
        for k in range(four):
            for j in range(m):
                slacks[i, k, j] += primal_step[i] * step_slacks[i, k, j]
                duals[i, k, j] += dual_step[i] * step_duals[i, k, j]


# The banded Laplacian, its Cholesky factor and solves, with the programs innermost (module
# docstring).


@njit(cache=True, fastmath=True)
def _laplacian_band(row_weights, size, regularisation, band):
    """D^T diag(F) D + regularisation max(diag) I for every column of ``row_weights`` (m, n),
    written to ``band`` (p, g + 1, n), lower band storage."""
    n = row_weights.shape[1]
    pairs = size * (size - 1)
    border = 2 * pairs
    band[:] = 0.0
    for r in range(size):
        for c in range(size):
            cell = r * size + c
            if c < size - 1:
                row = r * (size - 1) + c
                for i in range(n):
                    weight = row_weights[row, i]
                    band[cell, 0, i] += weight
                    band[cell + 1, 0, i] += weight
                    band[cell, 1, i] = -weight
            if r < size - 1:
                for i in range(n):
                    weight = row_weights[pairs + cell, i]
                    band[cell, 0, i] += weight
                    band[cell + size, 0, i] += weight
                    band[cell, size, i] = -weight
        for i in range(n):
            band[r, 0, i] += row_weights[border + r, i]  # top row
            band[(size - 1) * size + r, 0, i] += row_weights[border + size + r, i]  # bottom row
            band[r * size, 0, i] += row_weights[border + 2 * size + r, i]  # left column
            band[r * size + size - 1, 0, i] += row_weights[border + 3 * size + r, i]  # right column
    largest = np.zeros(n)
    for j in range(size * size):
        for i in range(n):
            largest[i] = max(largest[i], band[j, 0, i])
    for j in range(size * size):
        for i in range(n):
            band[j, 0, i] += regularisation * largest[i]
    return band


@njit(cache=True, fastmath=True)
def _band_cholesky(band, right):
    """L with L L^T = M for every program's band (p, g + 1, n), in place (right-looking, column
    by column), and L^-1 applied to the right sides ``right`` (r, p, n) in place as each column
    of L is finished. Returns the programs with a pivot <= 0: their factor is not used."""
    p, width, n = band.shape
    g = width - 1
    failed = np.zeros(n, dtype=np.bool_)
    inverse = np.empty(n)
    for j in range(p):
        for i in range(n):
            pivot = band[j, 0, i]
            if not pivot > 0.0:
                failed[i] = True
                pivot = 1.0
            root = np.sqrt(pivot)
            band[j, 0, i] = root
            inverse[i] = 1.0 / root
        last = min(g, p - 1 - j)
        for k in range(1, last + 1):
            for i in range(n):
                band[j, k, i] *= inverse[i]
        for r in range(right.shape[0]):
            for i in range(n):
                right[r, j, i] *= inverse[i]
            for k in range(1, last + 1):
                for i in range(n):
                    right[r, j + k, i] -= band[j, k, i] * right[r, j, i]
        for k in range(1, last + 1):
            for offset in range(k, last + 1):
                for i in range(n):
                    band[j + k, offset - k, i] -= band[j, offset, i] * band[j, k, i]
    return failed


@njit(cache=True, fastmath=True)
def _band_forward(factor, right):
    """L^-1 r for every program's factor (p, g + 1, n) and right side r (n, p): (p, n)."""
    p, width, n = factor.shape
    g = width - 1
    x = np.empty((p, n))
    for i in range(n):
        for j in range(p):
            x[j, i] = right[i, j]
    for j in range(p):
        for i in range(n):
            x[j, i] /= factor[j, 0, i]
        for k in range(1, min(g, p - 1 - j) + 1):
            for i in range(n):
                x[j + k, i] -= factor[j, k, i] * x[j, i]
    return x


@njit(cache=True, fastmath=True)
def _band_backward(factor, x):
    """L^-T x for every program's factor (p, g + 1, n) and x (p, n), overwritten: (n, p)."""
    p, width, n = factor.shape
    g = width - 1
    for j in range(p - 1, -1, -1):
        for k in range(1, min(g, p - 1 - j) + 1):
            for i in range(n):
                x[j, i] -= factor[j, k, i] * x[j + k, i]
        for i in range(n):
            x[j, i] /= factor[j, 0, i]
    return np.ascontiguousarray(x.T)


@njit(cache=True, fastmath=True)
def _woodbury(basis_forward, capacitance, forward):
    """x - V S^-1 V^T x for every program's V (2, p, n), S (n, 2, 2) and x (p, n), in place; the
    2 x 2 solve by elimination with partial pivoting."""
    p, n = forward.shape
    first = np.zeros(n)
    second = np.zeros(n)
    for j in range(p):
        for i in range(n):
            first[i] += basis_forward[0, j, i] * forward[j, i]
            second[i] += basis_forward[1, j, i] * forward[j, i]
    for i in range(n):
        a, b, c, d = capacitance[i, 0, 0], capacitance[i, 0, 1], capacitance[i, 1, 0], capacitance[i, 1, 1]
        top, bottom = first[i], second[i]
        if abs(c) > abs(a):
            a, b, c, d, top, bottom = c, d, a, b, bottom, top
        multiplier = c / a
        second[i] = (bottom - multiplier * top) / (d - multiplier * b)
        first[i] = (top - b * second[i]) / a
    for j in range(p):
        for i in range(n):
            forward[j, i] -= basis_forward[0, j, i] * first[i] + basis_forward[1, j, i] * second[i]


@njit(cache=True, fastmath=True)
def _normal_solve_once(factor, basis_forward, capacitance, right):
    """H^-1 r = L^-T (I - V S^-1 V^T) L^-1 r for every program (``_NormalEquations``), r (n, p)."""
    forward = _band_forward(factor, right)
    _woodbury(basis_forward, capacitance, forward)
    return _band_backward(factor, forward)


def _band_solve(factor: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(L L^T)^-1 r for every program's factor (p, g + 1, n) and right side r (n, p)."""
    return _band_backward(factor, _band_forward(factor, right))
