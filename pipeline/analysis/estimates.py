"""Per-method means of an output's metric columns with their 95% intervals over images and the
chance level of the localisation metrics, for the report and ``legx compare``.

The intervals are ``legx.methods.metrics.intervals``'s (Wilson for the pointing game's rate, a seeded
bootstrap for the other means). The chance level of ``pointing_game`` and ``mask_energy`` is the
mean of the ``region_share`` column (the ground-truth region's share of the image) over the rows
the metric scored; outputs written before that column existed show no chance level.
"""

from __future__ import annotations

import math

import numpy as np

from legx.methods.metrics.intervals import Estimate, metric_estimate
from legx.methods.metrics.catalogue import METRICS_BY_NAME
from legx.pipeline.engine.schema import REGION_SHARE


def finite_mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def column_estimate(name: str, values: np.ndarray, shares: np.ndarray | None, seed: int = 0) -> Estimate:
    """The estimate of metric ``name``'s mean over ``values`` (NaN: not scored), with the mean
    region share of the scored rows as the chance level of a localisation metric."""
    values = np.asarray(values, dtype=np.float64)
    chance = math.nan
    if name in METRICS_BY_NAME and METRICS_BY_NAME[name].needs_region and shares is not None:
        chance = finite_mean(np.asarray(shares, dtype=np.float64)[np.isfinite(values)])
    return metric_estimate(name, values, chance, seed=seed)


def variant_estimates(
    connection, condition: str, parameters: list, metrics: list[str], columns: list[str], seed: int = 0
) -> dict[str, Estimate]:
    """{metric: Estimate} over the 'ok' rows of ``saliency`` matching ``condition``."""
    with_shares = REGION_SHARE in columns
    estimates = {}
    for metric in metrics:
        extra = f", {REGION_SHARE}" if with_shares else ""
        rows = connection.execute(
            f"select {metric}{extra} from saliency where {condition} and status = 'ok'"
            f" and {metric} is not null and not isnan({metric})",
            parameters,
        ).fetchall()
        values = np.array([row[0] for row in rows], dtype=np.float64)
        shares = (
            np.array([np.nan if row[1] is None else row[1] for row in rows], dtype=np.float64)
            if with_shares else None
        )
        estimates[metric] = column_estimate(metric, values, shares, seed)
    return estimates
