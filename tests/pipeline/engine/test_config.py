"""Job config: YAML + --set overrides, and the errors a user sees before anything runs."""

from __future__ import annotations

import pytest

from legx.pipeline.engine.config import ConfigError, apply_overrides, load_config


def _problems(overrides, tmp_path=None):
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    return "\n".join(error.value.problems)


def test_yaml_file_and_dotted_overrides(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(
        "input: s3://bucket/images\n"
        "output: s3://bucket/out\n"
        "methods: [leg, leg-tv]\n"
        "leg: {n_samples: 64, grid_size: 8}\n"
        "leg-tv: {n_samples: 64, grid_size: 8, lambdas: [0.1, 0.3]}\n"
        "storage: {endpoint_url: 'http://user:pw@127.0.0.1:9000', region: eu-west-1}\n"
    )
    config = load_config(str(path), ["leg.n_samples=500", "methods=[leg]", "limit=10", "run_id=r1"])
    assert config.methods == ["leg"]
    assert config.params["leg"] == {"n_samples": 500, "grid_size": 8}
    assert config.params["leg-tv"]["lambdas"] == [0.1, 0.3]
    assert config.limit == 10 and config.run_id == "r1"
    assert config.storage.region == "eu-west-1"
    # The manifest copy never carries the endpoint's user:password.
    assert config.public_dict()["storage"]["endpoint_url"] == "http://127.0.0.1:9000"


def test_comma_separated_methods_and_generated_run_id():
    config = load_config(None, ["input=./images", "methods=leg,leg-tv"])
    assert config.methods == ["leg", "leg-tv"]
    assert config.run_id and config.run_id != load_config(None, ["input=./other"]).run_id


def test_overrides_create_nested_mappings():
    merged = apply_overrides({"a": 1}, ["b.c.d=[1, 2]", "a=x"])
    assert merged == {"a": "x", "b": {"c": {"d": [1, 2]}}}


def test_every_problem_is_reported_at_once():
    text = _problems([
        "input=ftp://host/images",
        "methods=[leg, no-such-method]",
        "batch_size=0",
        "resize=squash",
        "colour=blue",
        "run_id=has spaces",
    ])
    for expected in ("unsupported URI scheme 'ftp'", "unknown method 'no-such-method'",
                     "batch_size: must be >= 1", "resize: must be one of crop, stretch",
                     "unknown key 'colour'", "run_id:"):
        assert expected in text


@pytest.mark.parametrize("lambdas", ["[1.5]", "[0]", "[]", "[0.1, 0.1]", "[abc]"])
def test_bad_lambdas(lambdas):
    assert "leg-tv.lambdas" in _problems(["input=./x", "methods=[leg-tv]", f"leg-tv.lambdas={lambdas}"])


def test_bad_method_parameters_name_the_accepted_ones():
    text = _problems(["input=./x", "leg.n_sample=10"])
    assert "leg:" in text and "n_samples" in text


def test_credentials_are_refused():
    text = _problems(["input=s3://b/x", "aws_secret_access_key=abc", "storage.access_key=abc"])
    assert text.count("credentials are never read from the config") == 2


def test_missing_input_and_bucket():
    assert "input: required" in _problems([])
    assert "names no bucket" in _problems(["input=s3:///path"])


def test_unknown_metric():
    assert "unknown metric 'nope'" in _problems(["input=./x", "metrics=[nope]"])


def test_bad_road_fractions_are_listed_with_the_other_problems():
    problems = _problems(["input=./x", "metrics=[road_morf, nope]", "metric_options={road_fractions: [0.5, 1.0]}"])
    assert "unknown metric 'nope'" in problems
    assert "road_fractions must lie strictly inside (0, 1)" in problems


def test_forward_options_are_checked_and_reach_the_plan():
    from legx.pipeline.engine.run import make_plan

    text = _problems(["input=./images", "precision=fp8", "channels_last=yes please", "actor_threads=0"])
    for expected in ("precision: must be one of fp32, bf16, fp16, got 'fp8'",
                     "channels_last: expected true or false", "actor_threads: must be >= 1"):
        assert expected in text
    config = load_config(None, ["input=./images", "precision=bf16", "channels_last=true", "actor_threads=2"])
    plan = make_plan(config, use_gpu=False, actor_cpus=1.0)
    assert (plan.precision, plan.channels_last, plan.compile, plan.torch_threads) == ("bf16", True, False, 2)
    # Without actor_threads, torch gets the CPUs Ray reserves for the actor.
    assert make_plan(load_config(None, ["input=./images", "actor_cpus=3"]), use_gpu=False).torch_threads == 3


def test_image_size_defaults_to_the_size_the_model_declares():
    assert load_config(None, ["input=./images"]).image_size == 64  # the demo model
    assert load_config(None, ["input=./images", "model=torchvision:resnet50"]).image_size == 224
    assert load_config(None, ["input=./images", "image_size=96"]).image_size == 96
    assert load_config(None, ["input=./images", "model=./m.pt", "image_size=128"]).image_size == 128
    text = _problems(["input=./images", "model=./m.pt"])
    assert "image_size: the model './m.pt' declares no input size" in text
