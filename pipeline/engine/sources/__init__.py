"""The read stage: job inputs as Ray Datasets with the columns image_id, source_uri, label, data
(``SOURCE_SCHEMA``), local or in object storage.

    registry.py     FORMATS: every input format, its reader module and how to recognise it
    folder.py       a folder of images (ImageNet's ROOT/CLASS/ layout gives labels)
    webdataset.py   WebDataset tar shards
    parquet.py      Parquet files with a column of encoded image bytes
    detect.py       input_format: auto, from the input's listing
    annotations.py  labels, boxes and masks from a Parquet file joined by image_id
    repeated.py     repeated image ids: the first occurrence wins, the others become error rows
    common.py       the row schema, the column names readers look for (and the Parquet
                    column choice, shared with `legx show`), SourceError

A new format is a module with ``read(config, filesystem, root)`` and one line in
``registry.FORMATS``. Importing this package imports neither torch nor Ray: a format's module,
and Ray with it, is imported when its reader runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from legx.pipeline.engine.sources.annotations import ANNOTATIONS_FILE, read_annotations
from legx.pipeline.engine.sources.common import ID_COLUMNS, IMAGE_COLUMNS, IMAGE_EXTENSIONS, SOURCE_SCHEMA, SourceError
from legx.pipeline.engine.sources.detect import detect_format
from legx.pipeline.engine.sources.registry import FORMATS
from legx.pipeline.engine.sources.repeated import DUPLICATE_ID_ERROR, repeated_ids
from legx.pipeline.engine.storage import resolve

if TYPE_CHECKING:
    import ray

    from legx.pipeline.engine.config import JobConfig

__all__ = [
    "ANNOTATIONS_FILE", "DUPLICATE_ID_ERROR", "FORMATS", "ID_COLUMNS", "IMAGE_COLUMNS",
    "IMAGE_EXTENSIONS", "SOURCE_SCHEMA", "SourceError", "detect_format", "read_annotations",
    "read_source", "repeated_ids",
]


def read_source(config: JobConfig) -> tuple[ray.data.Dataset, str]:
    """The input as a Dataset of SOURCE_SCHEMA rows (at most ``limit``), and its format's name."""
    filesystem, root = resolve(config.input, config.storage)
    kind = detect_format(filesystem, root) if config.input_format == "auto" else config.input_format
    dataset = FORMATS[kind].reader()(config, filesystem, root)
    if config.limit:
        dataset = dataset.limit(config.limit)
    return dataset, kind
