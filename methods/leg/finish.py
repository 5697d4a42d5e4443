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

from legx.methods.leg.solvers import LegStatistics, leg_maps, solve_tv_batch
from legx.methods.leg.uncertainty import (
    legtv_bootstrap_statistics,
    legtv_reliability_of,
    map_standard_errors,
    reliability,
)
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
    trustworthy solution gives that lambda's error, not a map. The maps' programs and their
    reliability's bootstrap go to the solver in one call (the batched solver keeps its arrays
    full until a call's last programs), and each map's seconds are its image's share of it."""
    lambdas, solver, formulation, absolute = (
        params["lambdas"], params["solver"], params["formulation"], params["absolute"]
    )
    n_images = len(stats)
    bootstrap = None if stats.group_leg is None else legtv_bootstrap_statistics(stats, absolute)
    g_hats = stats.g_hat if bootstrap is None else np.concatenate([stats.g_hat, bootstrap])
    started = time.perf_counter()
    solved = solve_tv_batch(g_hats, stats.grid_size, stats.noise_level, lambdas, solver, formulation, absolute)
    seconds = (time.perf_counter() - started) / (n_images * len(lambdas))
    solutions = solved[:n_images]
    if stats.group_leg is None:
        reliabilities = [[None] * len(lambdas) for _ in solutions]
        reliability_fallbacks = np.zeros((n_images, len(lambdas)), dtype=np.int64)
    elif bootstrap is None:  # too few groups of draws for the bootstrap
        reliabilities = np.full((n_images, len(lambdas)), np.nan).tolist()
        reliability_fallbacks = np.zeros((n_images, len(lambdas)), dtype=np.int64)
    else:
        predicted, reliability_fallbacks = legtv_reliability_of(solved[n_images:], n_images)
        reliabilities = predicted.tolist()
    return [
        [
            FinishedMap(solution.lam, solution.map, seconds, error=solution.error,
                        reliability=predicted, fallbacks=solution.fallbacks + int(extra))
            for solution, predicted, extra in zip(per_image, per_lambda, per_lambda_fallbacks)
        ]
        for per_image, per_lambda, per_lambda_fallbacks in zip(solutions, reliabilities, reliability_fallbacks)
    ]
