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
