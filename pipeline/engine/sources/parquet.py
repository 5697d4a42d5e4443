"""Parquet files with a column of encoded image bytes (plain binary, or a struct with a
``bytes`` field as Hugging Face datasets write it); image_id from ``id_column``, else the first
of ``ID_COLUMNS`` present, else the struct's ``path``; label from ``label_column`` or ``label``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import ray

from pipeline.engine.sources.common import ID_COLUMNS, IMAGE_COLUMNS, SOURCE_SCHEMA, SourceError, parse_label, uri_prefix

if TYPE_CHECKING:
    from pipeline.engine.config import JobConfig


def read(config: JobConfig, filesystem: pafs.FileSystem, root: str) -> ray.data.Dataset:
    prefix = uri_prefix(config.input)
    dataset = ray.data.read_parquet(root, filesystem=filesystem, include_paths=True)
    schema = dataset.schema()
    names = list(schema.names)
    types = dict(zip(names, schema.types))
    image_column = config.image_column or next((n for n in IMAGE_COLUMNS if n in names), None)
    if image_column not in names:
        raise SourceError(
            f"Parquet input has no image column (tried {config.image_column or IMAGE_COLUMNS});"
            f" columns: {names}; set image_column"
        )
    image_type = types[image_column]
    image_is_struct = isinstance(image_type, pa.DataType) and pa.types.is_struct(image_type)
    id_column = config.id_column or next((n for n in ID_COLUMNS if n in names), None)
    if id_column is None and not image_is_struct:
        raise SourceError(
            f"Parquet input has no id column (tried {ID_COLUMNS}); columns: {names}; set id_column"
        )
    if id_column is not None and id_column not in names:
        raise SourceError(f"id_column {id_column!r} is not a column of the input; columns: {names}")
    label_column = config.label_column or ("label" if "label" in names else None)

    def to_rows(batch: pa.Table) -> pa.Table:
        images = batch.column(image_column).combine_chunks()
        if pa.types.is_struct(images.type):
            data = images.field("bytes")
            ids = images.field("path") if id_column is None else batch.column(id_column)
        else:
            data = images
            ids = batch.column(id_column)
        ids = ids.cast(pa.string())
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
