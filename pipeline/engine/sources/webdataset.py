"""WebDataset tar shards (one sample = the files sharing a key): image_id = the sample key, the
image = the sample's first entry with an image extension, label = the ``label_column`` (else
``cls`` or ``label``) entry when present."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import ray

from legx.pipeline.engine.sources.common import IMAGE_EXTENSIONS, SOURCE_SCHEMA, parse_label, uri_prefix

if TYPE_CHECKING:
    from legx.pipeline.engine.config import JobConfig


def read(config: JobConfig, filesystem: pafs.FileSystem, root: str) -> ray.data.Dataset:
    prefix = uri_prefix(config.input)
    configured_label = config.label_column

    def to_rows(batch: pa.Table) -> pa.Table:
        names = batch.column_names
        image_column = next((ext for ext in IMAGE_EXTENSIONS if ext in names), None)
        count = batch.num_rows
        if image_column is None:
            data = pa.array([b""] * count, pa.binary())
        else:
            data = pc.fill_null(batch.column(image_column).cast(pa.binary()), b"")
        label_column = configured_label or next((n for n in ("cls", "label") if n in names), None)
        labels = [None] * count
        if label_column and label_column in names:
            labels = [parse_label(value) for value in batch.column(label_column).to_pylist()]
        keys = batch.column("__key__").to_pylist()
        urls = batch.column("__url__").to_pylist()
        return pa.table(
            {
                "image_id": pa.array(keys, pa.string()),
                "source_uri": pa.array([f"{prefix}{url}#{key}" for url, key in zip(urls, keys)], pa.string()),
                "label": pa.array(labels, pa.int64()),
                "data": data,
            },
            schema=SOURCE_SCHEMA,
        )

    dataset = ray.data.read_webdataset(root, filesystem=filesystem, decoder=None)
    return dataset.map_batches(to_rows, batch_format="pyarrow", batch_size=None)
