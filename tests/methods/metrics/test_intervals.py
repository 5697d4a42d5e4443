"""Known-answer tests of methods.intervals: Wilson against Newcombe's published values, the
bootstrap's coverage, and which interval a metric's mean gets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from legx.methods.metrics.intervals import (
    Estimate,
    bootstrap_mean_interval,
    mean_estimate,
    metric_estimate,
    rate_estimate,
    wilson_interval,
)


@pytest.mark.parametrize(
    "successes, n, low, high",
    [  # Newcombe, Statistics in Medicine 17 (1998) 857-872, Table I, method 3 (Wilson score)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_the_textbook_values(successes, n, low, high):
    got_low, got_high = wilson_interval(successes, n)
    assert got_low == pytest.approx(low, abs=5e-5)
    assert got_high == pytest.approx(high, abs=5e-5)


def test_wilson_edges_and_errors():
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(20, 20)[0] == pytest.approx(1 - 0.1611, abs=5e-5)
    assert all(math.isnan(bound) for bound in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 4)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 4, confidence=1.5)


def test_bootstrap_interval_covers_the_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    trials, covered = 300, 0
    for trial in range(trials):
        sample = rng.exponential(1.0, 80)  # skewed, true mean 1
        low, high = bootstrap_mean_interval(sample, n_resamples=1000, seed=trial)
        covered += low <= 1.0 <= high
    # Binomial(300, 0.95) lies in [0.91, 0.98] with probability > 0.99; the percentile bootstrap
    # of a skewed mean at n = 80 under-covers slightly, so the band is centred a little lower.
    assert 0.90 <= covered / trials <= 0.98


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(0).uniform(size=50)
    first = bootstrap_mean_interval(values, seed=3)
    assert first == bootstrap_mean_interval(values, seed=3)
    assert first == bootstrap_mean_interval(values[::-1], seed=3)  # order does not matter
    assert first[0] < values.mean() < first[1]
    assert all(math.isnan(bound) for bound in bootstrap_mean_interval(np.array([])))


def test_fractional_hits_get_wilson_on_the_expected_count():
    hits = np.array([1.0, 0.5, 0.0, 0.25, np.nan, 1.0])
    estimate = rate_estimate(hits, chance=0.1)
    assert estimate.n == 5 and estimate.mean == pytest.approx(2.75 / 5)
    assert (estimate.low, estimate.high) == pytest.approx(wilson_interval(2.75, 5))
    assert estimate.chance == 0.1
    all_hits = rate_estimate(np.ones(30))
    assert all_hits.high == 1.0 and all_hits.low < 0.9  # a bootstrap would give [1, 1]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rate_estimate(np.array([0.5, 1.5]))


def test_metric_estimate_picks_the_interval_by_metric_and_text_formats_it():
    values = np.linspace(0.0, 1.0, 21)
    assert metric_estimate("pointing_game", values) == rate_estimate(values)
    assert metric_estimate("mask_energy", values, seed=1) == mean_estimate(values, seed=1)
    assert Estimate(0.5, 0.25, 0.75, 4).text(2) == "0.50 [0.25, 0.75]"
    assert mean_estimate(np.array([np.nan])).text() == "n/a"
