"""Checks of a job config's method and metric parameters, before Ray starts.

Each method's parameters are checked by building the method (its constructor is the
validation), which loads no torch: the explainer modules import torch on first use. Metric
names and options are checked against ``legx.methods.metrics.catalogue``, the torch-free catalogue.
Every check returns the problems it found (the config lists them all at once). A value with
one obvious meaning is not a problem: a sampling budget that is not a whole number of its units
(rounds of an adaptive budget, antithetic pairs) is rounded down to whole units, with a note.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from legx import methods
from legx.methods.metrics.catalogue import METRIC_OPTIONS, METRICS_BY_NAME, metric_names
from legx.methods.metrics.road_options import ROAD_NOISE, ROAD_STEPS, ROAD_TOLERANCE, check_road_options

logger = logging.getLogger(__name__)


def method_problems(selected: list[str], params: dict[str, dict[str, Any]]) -> list[str]:
    """Problems of the ``params`` of every method (selected or not) and of building each
    ``selected`` method with its parameters. Normalises a single lambda to a list in place."""
    problems: list[str] = []
    for name, method_params in params.items():
        # Parameters of methods not selected are kept (a file may set them all) and unused.
        problems.extend(_check_lambdas(name, method_params))
    known_methods = methods.available()
    for name in selected:
        if name in known_methods:
            for note in round_budgets(name, params.get(name, {})):
                logger.warning("note: %s", note)
        if name in known_methods and not any(p.startswith(f"{name}.lambdas") for p in problems):
            try:
                methods.get_explainer(name, **params.get(name, {}))
            except (ValueError, TypeError) as error:
                problems.append(f"{name}: {error}")
    return problems


def round_budgets(name: str, method_params: dict[str, Any]) -> list[str]:
    """Round, in place, a sampling budget of ``name`` that is not a whole number of its units
    down to whole units: an adaptive budget's ``max_samples`` to whole rounds of
    ``round_samples``, a fixed ``n_samples`` with antithetic pairs to an even number. Returns a
    note per value changed. Values too small for one unit are left to the method's own check."""
    n_samples = method_params.get("n_samples")
    if n_samples != "auto" and (isinstance(n_samples, bool) or not isinstance(n_samples, int)):
        return []
    try:
        defaults = methods.get_explainer(name, n_samples="auto").params()
    except (ValueError, TypeError):
        return []  # no adaptive budget: not a sampler of whole rounds and pairs
    settings = {**defaults, **method_params}
    notes = []
    if n_samples == "auto":
        max_samples, unit = settings.get("max_samples"), settings.get("round_samples")
        from legx.methods.leg.adaptive import MIN_ROUNDS

        if _positive_int(max_samples) and _positive_int(unit) and max_samples % unit \
                and max_samples >= MIN_ROUNDS * unit:
            rounded = max_samples // unit * unit
            method_params["max_samples"] = rounded
            notes.append(f"{name}.max_samples {max_samples} rounded down to {rounded}, {rounded // unit}"
                         f" whole rounds of round_samples {unit}")
    elif settings.get("antithetic") is True and n_samples > 2 and n_samples % 2:
        method_params["n_samples"] = n_samples - 1
        notes.append(f"{name}.n_samples {n_samples} rounded down to {n_samples - 1}, whole antithetic pairs")
    return notes


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_lambdas(name: str, method_params: dict[str, Any]) -> list[str]:
    if "lambdas" not in method_params:
        return []
    lambdas = method_params["lambdas"]
    if isinstance(lambdas, (int, float)) and not isinstance(lambdas, bool):
        lambdas = [lambdas]
        method_params["lambdas"] = lambdas
    if not isinstance(lambdas, list) or not lambdas:
        return [f"{name}.lambdas: expected a non-empty list of numbers in (0, 1), got {lambdas!r}"]
    bad = [
        value
        for value in lambdas
        if isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value < 1
    ]
    if bad:
        return [
            f"{name}.lambdas: every lambda must be a number in (0, 1) (lambda >= 1 admits the"
            f" zero map), got {bad}"
        ]
    if len(set(lambdas)) != len(lambdas):
        return [f"{name}.lambdas: listed twice: {lambdas}"]
    return []


def metric_problems(names: list[str], options: dict[str, Any]) -> list[str]:
    """Unknown metric names, unknown ``metric_options`` keys and bad ROAD option values."""
    problems = [
        f"metrics: unknown metric {name!r}; available: {', '.join(metric_names())}"
        for name in names
        if name not in METRICS_BY_NAME
    ]
    if not isinstance(options, dict):
        return problems + [f"metric_options: expected a mapping, got {options!r}"]
    problems += [
        f"metric_options: unknown option {key!r}; accepted: {', '.join(METRIC_OPTIONS)}"
        for key in options
        if key not in METRIC_OPTIONS
    ]
    if any(key.startswith("road_") for key in options):
        try:
            check_road_options(options.get("road_fractions"), options.get("road_steps", ROAD_STEPS),
                               options.get("road_noise", ROAD_NOISE), options.get("road_tolerance", ROAD_TOLERANCE))
        except (ValueError, TypeError) as error:
            problems.append(f"metric_options: {error}")
    return problems
