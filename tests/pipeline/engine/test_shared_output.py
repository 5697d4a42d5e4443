"""The shared-output rule of ``run_job`` without a cluster: a local output is refused on more
than one node unless ``output_shared`` says every node mounts it (the multi-node run itself is in
tests/cluster/test_multinode.py)."""

from __future__ import annotations

import pytest

from legx.pipeline.engine.config import ConfigError, load_config
from legx.pipeline.engine.run import check_shared_output


def _config(*overrides: str):
    return load_config(None, ["input=./images", *overrides])


def test_local_output_refused_on_several_nodes_only():
    check_shared_output(_config("output=./out"), nodes=1)  # one node: the embedded default
    with pytest.raises(ConfigError) as refused:
        check_shared_output(_config("output=./out"), nodes=3)
    (problem,) = refused.value.problems
    assert problem.startswith("output: './out' is a local path") and "3 nodes" in problem
    assert "s3://" in problem and "gs://" in problem and "output_shared: true" in problem
    for output in ("s3://bucket/out", "gs://bucket/out"):
        check_shared_output(_config(f"output={output}"), nodes=3)
    check_shared_output(_config("output=/mnt/shared/out", "output_shared=true"), nodes=3)


def test_output_shared_is_validated_with_the_other_keys():
    with pytest.raises(ConfigError) as invalid:
        load_config(None, ["input=./images", "output_shared=sometimes", "actors=0"])
    assert invalid.value.problems == [
        "output_shared: expected true or false, got 'sometimes'", "actors: must be >= 1, got 0",
    ]
    assert _config().output_shared is False
