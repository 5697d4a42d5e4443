"""Annotations (image_id, and any of label, box, height, width, mask): a Parquet file joined by
image_id, the configured ``annotations`` file, else ROOT/annotations.parquet for the formats
that read one (``Format.root_annotations``) when it exists."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from legx.pipeline.engine.sources.common import SourceError
from legx.pipeline.engine.sources.registry import FORMATS
from legx.pipeline.engine.storage import exists, resolve

if TYPE_CHECKING:
    from legx.pipeline.engine.config import JobConfig

ANNOTATIONS_FILE = "annotations.parquet"
ANNOTATION_COLUMNS = ("image_id", "label", "box", "height", "width", "mask")


def read_annotations(config: JobConfig, source_format: str) -> pa.Table | None:
    """The annotations table (image_id first) or None. The configured file must exist; the
    implicit ROOT/annotations.parquet is used only where the format reads one and it exists."""
    if config.annotations is not None:
        filesystem, path = resolve(config.annotations, config.storage)
        if not exists(filesystem, path):
            raise SourceError(f"annotations {config.annotations!r} do not exist")
    elif FORMATS[source_format].root_annotations:
        filesystem, root = resolve(config.input, config.storage)
        path = posixpath.join(root, ANNOTATIONS_FILE)
        if not exists(filesystem, path):
            return None
    else:
        return None
    with filesystem.open_input_file(path) as handle:
        table = pq.read_table(handle)
    if "image_id" not in table.column_names:
        raise SourceError(f"annotations have no image_id column; columns: {table.column_names}")
    return table.select([name for name in ANNOTATION_COLUMNS if name in table.column_names])
