"""An annotations file that legx cannot read is a config error with the reason, before any work."""

from __future__ import annotations

import pytest

from legx.pipeline.demo.data import write_demo_dataset
from legx.pipeline.engine.config import ConfigError, load_config


def test_an_annotations_file_legx_cannot_read_is_a_config_error(ray_local, tmp_path):
    from legx.pipeline.engine.run import run_job

    demo = tmp_path / "demo"
    write_demo_dataset(str(demo), 2, seed=0, image_size=32)
    annotations = tmp_path / "boxes.csv"
    annotations.write_text("image_id,label\n0.png,3\n")
    config = load_config(None, [f"input={demo}", f"output={tmp_path / 'out'}", "methods=[leg]",
                                f"annotations={annotations}"])
    with pytest.raises(ConfigError) as refused:
        run_job(config)
    [problem] = refused.value.problems
    assert problem.startswith(f"annotations: {str(annotations)!r} ")
    assert "expected Parquet" in problem and "LOC_val_solution.csv" in problem and "\n" not in problem
    assert not (tmp_path / "out").exists()
