"""ROAD's options, their defaults and their checks, torch-free (config validation reads them
before any worker loads torch); the metric itself is ``legx.methods.metrics.road``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# The paper's fractions: 10% to 90% of the pixels in steps of 10% (``road_steps`` = 9).
ROAD_STEPS = 9
ROAD_NOISE = 0.01
# Relative residual at which a conjugate-gradient system stops.
ROAD_TOLERANCE = 1e-6
# The weights of the 8 neighbours (rows: dy = -1, 0, 1; columns: dx = -1, 0, 1).
NEIGHBOUR_WEIGHTS = np.array([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def road_fractions(fractions: Sequence[float] | None = None, steps: int = ROAD_STEPS) -> np.ndarray:
    """The removed fractions: ``fractions`` as given (strictly increasing, each in (0, 1)) or,
    when None, ``steps`` evenly spaced ones, k / (steps + 1) for k = 1..steps."""
    if fractions is None:
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"road_steps must be an integer >= 1, got {steps!r}")
        return np.arange(1, steps + 1) / (steps + 1)
    values = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("road_fractions must list at least one fraction in (0, 1)")
    outside = [float(value) for value in values if not (math.isfinite(value) and 0 < value < 1)]
    if outside:
        raise ValueError(
            f"road_fractions must lie strictly inside (0, 1) (a fraction of 1 leaves no kept pixel"
            f" to impute from, 0 removes nothing), got {outside}"
        )
    if np.any(np.diff(values) <= 0):
        raise ValueError(f"road_fractions must be strictly increasing, got {values.tolist()}")
    return values


def check_road_options(
    fractions: Sequence[float] | None, steps: int, noise: float, tolerance: float
) -> np.ndarray:
    """The fractions (``road_fractions``) after checking every ROAD option; ValueError naming
    the option otherwise."""
    values = road_fractions(fractions, steps)
    if isinstance(noise, bool) or not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"road_noise must be a finite number >= 0, got {noise!r}")
    if isinstance(tolerance, bool) or not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise ValueError(f"road_tolerance must be a number in (0, 1), got {tolerance!r}")
    return values
