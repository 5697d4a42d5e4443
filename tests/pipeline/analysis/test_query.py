"""Querying an output on S3 (the moto server): a connection sees every file written before it was
made, also in a process that queried the same output before those files existed."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from legx.pipeline.analysis.query import connect
from legx.pipeline.engine.storage import StorageOptions, resolve


def _write_part(output: str, name: str, image_ids: list[str]) -> None:
    filesystem, root = resolve(output, StorageOptions())
    table = pa.table({"image_id": image_ids, "run_id": ["r1"] * len(image_ids)})
    with filesystem.open_output_stream(f"{root}/saliency/{name}.parquet") as stream:
        pq.write_table(table, stream)


def test_a_new_connection_sees_files_written_after_an_earlier_query(s3_endpoint, s3_bucket):
    output = f"s3://{s3_bucket}/out"
    _write_part(output, "r1-part-a", ["a.png", "b.png"])
    assert connect(output).execute("select count(*) from saliency").fetchone()[0] == 2
    _write_part(output, "r1-part-b", ["c.png"])
    assert connect(output).execute("select count(*) from saliency").fetchone()[0] == 3
