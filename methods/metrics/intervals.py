"""95% intervals of per-image aggregates (pure numpy and the standard library, no torch).

A table that shows one method's mean over a few dozen images shows an estimate: 32 images give
about +/-0.17 on a rate near 0.5, 96 about +/-0.1. Every aggregate that the report, ``legx
compare`` and ``scripts/compare_methods.py`` show carries its interval over images:

* rates (a fraction of images, or the mean of per-image scores in [0, 1] whose variance is
  bounded like a rate's): the Wilson score interval (Wilson 1927; Newcombe, Statistics in
  Medicine 1998, method 3), for s successes out of n, p = s / n and z the normal quantile,
      (p + z^2 / 2n  -/+  z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n).
  It stays inside [0, 1] and is not empty at p = 0 or 1, where the normal interval collapses.
* The tie-aware pointing game is a fractional hit h_i in [0, 1] per image, not a 0/1. Its mean
  gets Wilson's interval with the expected count s = sum h_i: a variable in [0, 1] with mean p
  has variance at most p (1 - p) (equality for 0/1 values), so this interval is at least as wide
  as the fractional hits need (conservative, exact for plain hits), and it keeps Wilson's
  behaviour at 0 and 1, where a bootstrap of many equal hits returns a zero-width interval.
* other means (mask energy, key size, AUCs, Gini, correlations, shifts): the percentile
  bootstrap (Efron & Tibshirani 1993, ch. 13) of the mean over images, ``n_resamples``
  resamples from a seeded generator, so a table is reproducible.

Only finite values count: NaN (no ground truth, no mass) is not an image of the estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from legx.methods.metrics.catalogue import METRICS_BY_NAME

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 4000


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a rate of ``successes`` (a count, or an expected count) out of
    ``n``; (NaN, NaN) for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n] = [0, {n}], got {successes}")
    z = _z(confidence)
    rate = successes / n
    denominator = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_mean_interval(
    values: np.ndarray,
    confidence: float = CONFIDENCE,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (1-D); (NaN, NaN) when empty."""
    # Sorted: the interval is a function of the values alone, not of the order a query returns.
    values = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if values.size == 0:
        return math.nan, math.nan
    _z(confidence)
    generator = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    # Resample in chunks: n_resamples x n indices at once can be large for big outputs.
    chunk = max(1, 2_000_000 // values.size)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        means[start:stop] = values[generator.integers(0, values.size, (stop - start, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` images with its interval [low, high] and, where one exists, the
    chance level beside it."""

    mean: float
    low: float
    high: float
    n: int
    chance: float = math.nan

    def text(self, digits: int = 3) -> str:
        """'0.688 [0.510, 0.824]' (chance not included); 'n/a' without images."""
        if self.n == 0 or not math.isfinite(self.mean):
            return "n/a"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n,
                "chance": self.chance}


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return values[np.isfinite(values)]


def rate_estimate(values: np.ndarray, chance: float = math.nan, confidence: float = CONFIDENCE) -> Estimate:
    """Mean of per-image scores in [0, 1] (hits, fractional hits) with Wilson's interval on the
    expected count."""
    finite = _finite(values)
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError("a rate needs per-image scores in [0, 1]")
    if finite.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, chance)
    low, high = wilson_interval(float(finite.sum()), finite.size, confidence)
    return Estimate(float(finite.mean()), low, high, int(finite.size), chance)


def mean_estimate(
    values: np.ndarray, chance: float = math.nan, confidence: float = CONFIDENCE, seed: int = 0
) -> Estimate:
    """Mean of per-image values with the percentile bootstrap interval."""
    finite = _finite(values)
    if finite.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, chance)
    low, high = bootstrap_mean_interval(finite, confidence, seed=seed)
    return Estimate(float(finite.mean()), low, high, int(finite.size), chance)


def metric_estimate(name: str, values: np.ndarray, chance: float = math.nan, seed: int = 0) -> Estimate:
    """The estimate a metric column's mean gets: Wilson for a metric the catalogue declares a
    rate (per-image hits in [0, 1]), else bootstrap."""
    if name in METRICS_BY_NAME and METRICS_BY_NAME[name].rate:
        return rate_estimate(values, chance)
    return mean_estimate(values, chance, seed=seed)
