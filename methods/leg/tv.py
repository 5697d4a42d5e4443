"""LEG-TV: the total-variation-sparse LEG estimator (Luo, Barut & Jin, ICCV 2021, section 4).

From the LEG statistic g_hat of one colour channel, LEG-TV solves the linear program

    minimise ||D g||_1   subject to   ||A g - b||_inf <= lam * ||b||_inf,
    A = D+^T Sigma,  b = D+^T g_hat,  D+ the pseudo-inverse of D,

whose feasible set always holds plain LEG (A Sigma^{-1} g_hat = b) and, for lam >= 1, g = 0
(the optimum then, since D has full column rank). The reference builds A densely (~97% dense,
~25 s per solve at 28 x 28 with MOSEK, a commercial solver); ``legx.methods.leg.solvers`` solves a
sparse, unit-scaled form of the same program with open-source solvers (Clarabel, HiGHS as
fallback) and reports a solve that is not optimal or not feasible as an error, never as a map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from legx.methods.lazy_imports import torch
from legx.methods.leg.explainer import LEG
from legx.methods.leg.solvers import (
    DEFAULT_SOLVER,
    LegStatistics,
    TVSolution,
    TVSolveError,
    check_solver_arguments,
    legtv_solutions,
)


class LEGTV(LEG):
    """LEG-TV maps: (N, L, grid_size, grid_size) float32, one map per lambda in ``lambdas``.

    Sampling parameters, by keyword, as for ``LEG``; lambdas: constraint levels, each >= 0 (0
    returns LEG, >= 1 returns 0; the reference uses 0.05 to 0.3); solver: 'BATCHED' (default:
    every program of a call at once, with Clarabel, then HiGHS, as its fallback), 'CLARABEL' or
    'HIGHS' (one program at a time, each the other's fallback); formulation: 'sparse' (default)
    or 'dense' (the reference's, for benchmarks, with CLARABEL or HIGHS). These three, like
    ``absolute``, are the finish step's (``finish_params``).
    """

    name = "leg-tv"
    finisher = "legx.methods.leg.finish:finish_legtv"
    finish_params = ("absolute", "lambdas", "solver", "formulation")

    def __init__(
        self,
        lambdas: Sequence[float] = (0.1,),
        solver: str = DEFAULT_SOLVER,
        formulation: str = "sparse",
        **leg_params,
    ) -> None:
        super().__init__(**leg_params)
        lambdas = tuple(float(lam) for lam in np.atleast_1d(lambdas))
        if not lambdas or any(not np.isfinite(lam) or lam < 0 for lam in lambdas):
            raise ValueError(f"lambdas must be a non-empty list of finite values >= 0, got {lambdas}")
        check_solver_arguments(solver, formulation)
        self.lambdas = lambdas
        self.solver = solver
        self.formulation = formulation

    def outputs(self) -> list[float | None]:
        return list(self.lambdas)

    def solve(self, stats: LegStatistics) -> list[list[TVSolution]]:
        """LEG-TV solutions per image and lambda from sampled statistics."""
        return legtv_solutions(stats, self.lambdas, self.solver, self.formulation, self.absolute)

    def explain(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        targets: Sequence[int] | torch.Tensor | None = None,
    ) -> np.ndarray:
        """(N, L, g, g) maps; raises TVSolveError if any solve failed."""
        solutions = self.solve(self.sample(model, images, targets))
        failed = [s for per_image in solutions for s in per_image if s.status != "ok"]
        if failed:
            raise TVSolveError(f"{len(failed)} LEG-TV solve(s) failed: {failed[0].error}")
        return np.stack([np.stack([s.map for s in per_image]) for per_image in solutions])
