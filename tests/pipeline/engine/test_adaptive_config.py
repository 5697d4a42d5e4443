"""Adaptive LEG budgets in the job config: accepted as YAML gives them, every problem listed."""

from __future__ import annotations

import pytest

from legx.pipeline.engine.config import ConfigError, build_config, load_config


def test_auto_budget_from_yaml_overrides():
    config = load_config(None, ["input=./images", "leg.n_samples=auto", "leg.max_samples=1024",
                                "leg.target_reliability=0.8"])
    assert config.params["leg"] == {"n_samples": "auto", "max_samples": 1024, "target_reliability": 0.8}


def test_every_adaptive_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as raised:
        build_config({"input": "x", "batch_size": 0,
                      "leg": {"n_samples": "auto", "target_reliability": 1.2, "max_samples": 100}})
    text = str(raised.value)
    for expected in ("batch_size", "target_reliability must be", "max_samples must be a multiple"):
        assert expected in text


def test_budgets_of_one_obvious_meaning_are_rounded_to_whole_units_with_a_note(caplog):
    config = load_config(None, ["input=./images", "methods=[leg,leg-tv]", "leg.n_samples=auto",
                                "leg.max_samples=2000", "leg-tv.n_samples=501"])
    assert config.params["leg"]["max_samples"] == 1984  # 31 rounds of 64
    assert config.params["leg-tv"]["n_samples"] == 500  # 250 antithetic pairs
    notes = [record.getMessage() for record in caplog.records]
    assert "note: leg.max_samples 2000 rounded down to 1984, 31 whole rounds of round_samples 64" in notes
    assert "note: leg-tv.n_samples 501 rounded down to 500, whole antithetic pairs" in notes
    # Whole units, and values without antithetic pairs, are left as they are.
    config = load_config(None, ["input=./images", "leg.n_samples=auto", "leg.max_samples=2048",
                                "leg-tv.n_samples=501", "leg-tv.antithetic=false"])
    assert config.params["leg"]["max_samples"] == 2048 and config.params["leg-tv"]["n_samples"] == 501
