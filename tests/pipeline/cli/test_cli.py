"""The legx command line: argument handling and messages (no Ray started)."""

from __future__ import annotations

import argparse

import pytest

from legx.pipeline.cli.main import build_parser, main
from legx.pipeline.cli.run import DEMO_CONFIG, resolve_config


def _run_args(*argv: str) -> argparse.Namespace:
    return build_parser("run").parse_args(["run", *argv])


def test_no_arguments_is_the_embedded_default():
    config, embedded = resolve_config(_run_args())
    assert embedded
    assert (config.input, config.output, config.model) == (
        DEMO_CONFIG["input"], DEMO_CONFIG["output"], "demo")
    assert config.methods == ["leg", "leg-tv"] and config.image_size == 64
    assert config.params["leg-tv"]["lambdas"] == [0.1, 0.3]


def test_flags_build_a_job_without_a_file():
    config, embedded = resolve_config(_run_args(
        "--input", "s3://bucket/images", "--output", "s3://bucket/out", "--model",
        "torchvision:resnet18", "--methods", "leg,leg-tv", "--samples", "64", "--run-id", "r1",
        "--limit", "5"))
    assert not embedded
    assert config.input == "s3://bucket/images" and config.model == "torchvision:resnet18"
    assert config.params["leg"]["n_samples"] == 64 and config.params["leg-tv"]["n_samples"] == 64
    assert config.run_id == "r1" and config.limit == 5
    # Defaults of a real job, not of the demo.
    assert config.image_size == 224


def test_samples_auto_selects_the_adaptive_budget(capsys):
    config, _ = resolve_config(_run_args("--input", "./images", "--methods", "leg,leg-tv", "--samples", "auto"))
    assert config.params["leg"]["n_samples"] == "auto" and config.params["leg-tv"]["n_samples"] == "auto"
    with pytest.raises(SystemExit):
        _run_args("--samples", "many")
    assert "expected an integer or 'auto', got 'many'" in capsys.readouterr().err


def test_config_file_with_overrides(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("input: ./images\nmethods: [leg]\nleg: {n_samples: 100}\n")
    config, _ = resolve_config(_run_args(str(path), "--set", "leg.n_samples=500", "--set", "image_size=32"))
    assert config.params["leg"]["n_samples"] == 500 and config.image_size == 32


def test_config_errors_exit_2_with_the_problems(capsys):
    assert main(["run", "--input", "./x", "--set", "methods=[nope]", "--set", "batch_size=0"]) == 2
    message = capsys.readouterr().err
    assert "unknown method 'nope'" in message and "batch_size: must be >= 1" in message


def test_query_on_a_missing_output_is_a_clear_error(tmp_path, capsys):
    assert main(["query", str(tmp_path / "nothing"), "select 1"]) == 1
    assert "no results under" in capsys.readouterr().err


def test_help_lists_every_installed_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in ("run", "query", "show", "demo-data"):
        assert name in text


def test_csv_lines_end_with_a_line_feed_only():
    import io

    from legx.pipeline.cli.main import print_table

    buffer = io.StringIO(newline="")
    print_table(["image_id", "status"], [("a.png", "ok"), ("b, c.png", "error")], "csv", file=buffer)
    assert buffer.getvalue() == 'image_id,status\na.png,ok\n"b, c.png",error\n'
