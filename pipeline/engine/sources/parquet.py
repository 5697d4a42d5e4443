"""Parquet files with a column of encoded image bytes (plain binary, or a struct with a
``bytes`` field as Hugging Face datasets write it); image_id from ``id_column``, else the first
of ``ID_COLUMNS`` present, else the struct's ``path``; label from ``label_column`` or ``label``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import ray

from legx.pipeline.engine.sources.common import (
    SOURCE_SCHEMA,
    parquet_ids_and_bytes,
    parquet_image_columns,
    parse_label,
    uri_prefix,
)

if TYPE_CHECKING:
    from legx.pipeline.engine.config import JobConfig


def read(config: JobConfig, filesystem: pafs.FileSystem, root: str) -> ray.data.Dataset:
    prefix = uri_prefix(config.input)
    dataset = ray.data.read_parquet(root, filesystem=filesystem, include_paths=True)
    schema = dataset.schema()
    names = list(schema.names)
    image_column, id_column = parquet_image_columns(names, list(schema.types), config.image_column,
                                                    config.id_column)
    label_column = config.label_column or ("label" if "label" in names else None)

    def to_rows(batch: pa.Table) -> pa.Table:
        ids, data = parquet_ids_and_bytes(batch, image_column, id_column)
        labels = (
            pa.array([parse_label(v) for v in batch.column(label_column).to_pylist()], pa.int64())
            if label_column
            else pa.nulls(batch.num_rows, pa.int64())
        )
        paths = batch.column("path").to_pylist()
        return pa.table(
            {
                "image_id": ids,
                "source_uri": pa.array(
                    [f"{prefix}{path}#{key}" for path, key in zip(paths, ids.to_pylist())], pa.string()
                ),
                "label": labels,
                "data": pc.fill_null(data.cast(pa.binary()), b""),
            },
            schema=SOURCE_SCHEMA,
        )

    return dataset.map_batches(to_rows, batch_format="pyarrow", batch_size=None)
