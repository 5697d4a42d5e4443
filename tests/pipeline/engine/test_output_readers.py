"""The output read with each client's own idiom: pandas, polars (where installed),
pyarrow.dataset, DuckDB with and without hive partitioning, and `legx query` over an output that
also holds a run written in the layout of earlier versions (hive ``run_id=RUN_ID`` folders)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from legx.pipeline.analysis.query import run_query
from legx.pipeline.engine.schema import STAGE_SCHEMA
from legx.pipeline.engine.sink import ParquetWriter
from legx.pipeline.engine.storage import StorageOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from evaluation_outputs import write_output  # noqa: E402 - the tests' legacy-layout writer

RUNS = {"run-a": ["a.png", "b.png", "c.png"], "run-b": ["a.png", "d.png"]}


def _write_runs(output: str) -> None:
    """Two runs through the job's writer: one LEG row per image, one image an error row."""
    for run_id, image_ids in RUNS.items():
        rows = [{"image_id": image_id, "source_uri": f"/in/{image_id}", "target": 1, "method": "leg",
                 "params": "{}", "height": 2, "width": 2, "status": "ok", "elapsed_s": 0.1,
                 "saliency": np.arange(4, dtype=np.float32) + position}
                for position, image_id in enumerate(image_ids[:-1])]
        rows.append({"image_id": image_ids[-1], "source_uri": f"/in/{image_ids[-1]}", "method": "leg",
                     "params": "{}", "status": "error", "error": "decode: not an image", "elapsed_s": 0.0})
        writer = ParquetWriter(output, StorageOptions(), run_id, "demo", anchor=("leg", None))
        writer.write(pa.Table.from_pylist(rows, schema=STAGE_SCHEMA))


EXPECTED = sorted((run_id, image_id) for run_id, image_ids in RUNS.items() for image_id in image_ids)


@pytest.fixture
def output(tmp_path) -> str:
    output = str(tmp_path / "out")
    _write_runs(output)
    return output


def _pairs(run_ids, image_ids) -> list[tuple[str, str]]:
    return sorted(zip((str(run_id) for run_id in run_ids), image_ids))


def test_pandas_reads_the_output_folder(output):
    import pandas

    frame = pandas.read_parquet(os.path.join(output, "saliency"))
    assert _pairs(frame["run_id"], frame["image_id"]) == EXPECTED
    assert frame["saliency"].notna().sum() == 3


def test_polars_reads_the_output_folder(output):
    polars = pytest.importorskip("polars")
    frame = polars.read_parquet(os.path.join(output, "saliency", "**", "*.parquet"))
    assert _pairs(frame["run_id"].to_list(), frame["image_id"].to_list()) == EXPECTED


@pytest.mark.parametrize("partitioning", [None, "hive"])
def test_pyarrow_dataset_reads_the_output_folder(output, partitioning):
    table = pads.dataset(os.path.join(output, "saliency"), format="parquet",
                         partitioning=partitioning).to_table()
    assert _pairs(table.column("run_id").to_pylist(), table.column("image_id").to_pylist()) == EXPECTED
    assert table.schema.field("run_id").type == pa.string()


@pytest.mark.parametrize("hive", ["", ", hive_partitioning = true", ", hive_partitioning = false"])
def test_duckdb_reads_the_output_with_or_without_hive_partitioning(output, hive):
    rows = duckdb.sql(
        f"select run_id, image_id from read_parquet('{output}/saliency/**/*.parquet'{hive})"
    ).fetchall()
    assert sorted(rows) == EXPECTED


def test_legx_query_reads_an_output_that_also_holds_a_legacy_run(output, tmp_path):
    images = [str(tmp_path / name) for name in ("x.png", "y.png")]
    write_output(output, images, {("leg", None): np.zeros((2, 4, 4))}, run_id="old-run",
                 with_manifest=False)
    assert (Path(output) / "saliency" / "run_id=old-run").is_dir()
    _, rows = run_query(output, "select run_id, image_id from saliency")
    assert sorted(rows) == sorted(EXPECTED + [("old-run", "x.png"), ("old-run", "y.png")])


def test_spark_reads_the_output_folder(output):
    """Runs where pyspark and a JVM are installed (neither is a legx dependency)."""
    pytest.importorskip("pyspark")
    import shutil

    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark needs a JVM")
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[1]").appName("legx-readers")
             .config("spark.ui.enabled", "false").getOrCreate())
    try:
        rows = spark.read.parquet(os.path.join(output, "saliency")).select("run_id", "image_id").collect()
    finally:
        spark.stop()
    assert sorted((row.run_id, row.image_id) for row in rows) == EXPECTED
