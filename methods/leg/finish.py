"""The finish steps of LEG and LEG-TV (``legx.methods.leg.explainer``, ``legx.methods.leg.tv``): maps, standard
errors and reliabilities from sampled ``LegStatistics``, in numpy, scipy and cvxpy alone.

These are the ``finisher`` of the two explainers (the sampled-explainer contract of
``legx.methods.base``): the job runs them in CPU workers that never import torch, with the
explainer's parameters as JSON. The maths is stated in ``legx.methods.leg.explainer``, ``legx.methods.leg.tv`` and
``legx.methods.leg.uncertainty``; statistics sampled without their uncertainty (no ``group_leg``)
give maps without standard errors or reliability.
"""

from __future__ import annotations

import time

import numpy as np

from legx.methods.leg.solvers import LegStatistics, leg_maps, legtv_solutions
from legx.methods.leg.uncertainty import legtv_reliability_with_fallbacks, map_standard_errors, reliability
from legx.methods.sampled import FinishedMap


def finish_leg(stats: LegStatistics, params: dict) -> list[list[FinishedMap]]:
    """LEG's closed form per image, with each cell's standard error and the map's reliability."""
    absolute = params["absolute"]
    started = time.perf_counter()
    maps = leg_maps(stats, absolute=absolute)
    seconds = (time.perf_counter() - started) / len(stats)
    if stats.group_leg is None:
        return [[FinishedMap(None, saliency, seconds)] for saliency in maps]
    return [
        [FinishedMap(None, saliency, seconds, saliency_se=standard_error, reliability=float(predicted))]
        for saliency, standard_error, predicted in zip(
            maps, map_standard_errors(stats, absolute), reliability(stats, absolute)
        )
    ]


def finish_legtv(stats: LegStatistics, params: dict) -> list[list[FinishedMap]]:
    """LEG-TV's programs per image and lambda, with each map's reliability; a program without a
    trustworthy solution gives that lambda's error, not a map."""
    lambdas, solver, formulation, absolute = (
        params["lambdas"], params["solver"], params["formulation"], params["absolute"]
    )
    solutions = legtv_solutions(stats, lambdas, solver, formulation, absolute)
    if stats.group_leg is None:
        reliabilities = [[None] * len(lambdas) for _ in solutions]
        reliability_fallbacks = np.zeros((len(solutions), len(lambdas)), dtype=np.int64)
    else:
        predicted, reliability_fallbacks = legtv_reliability_with_fallbacks(
            stats, lambdas, solver, formulation, absolute)
        reliabilities = predicted.tolist()
    return [
        [
            FinishedMap(solution.lam, solution.map, solution.solve_s, error=solution.error,
                        reliability=predicted, fallbacks=solution.fallbacks + int(extra))
            for solution, predicted, extra in zip(per_image, per_lambda, per_lambda_fallbacks)
        ]
        for per_image, per_lambda, per_lambda_fallbacks in zip(solutions, reliabilities, reliability_fallbacks)
    ]
