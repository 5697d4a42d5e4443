"""A folder of images. In the ImageNet layout (ROOT/CLASS/xxx.JPEG) the class folders give the
labels through their sorted list (or the ``classes`` file, one folder name per line); images
directly under ROOT have no label. image_id = the path relative to ROOT."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs
import ray

from legx.pipeline.engine.sources.common import IMAGE_EXTENSIONS, SOURCE_SCHEMA, uri_prefix
from legx.pipeline.engine.sources.detect import listing
from legx.pipeline.engine.sources.imagenet import read_class_list

if TYPE_CHECKING:
    from legx.pipeline.engine.config import JobConfig


def class_names(config: JobConfig, filesystem: pafs.FileSystem, root: str) -> list[str]:
    """The label order of an ImageNet-layout folder: the ``classes`` file (one folder name per
    line, or ``LOC_synset_mapping.txt``, whose synsets name the folders), else the sorted class
    folders."""
    if config.classes:
        return list(read_class_list(config.classes, config.storage).keys)
    return sorted(
        info.base_name
        for info in listing(filesystem, root)
        if info.type == pafs.FileType.Directory and not info.base_name.startswith((".", "_"))
    )


def read(config: JobConfig, filesystem: pafs.FileSystem, root: str) -> ray.data.Dataset:
    index = {name: position for position, name in enumerate(class_names(config, filesystem, root))}
    prefix = uri_prefix(config.input)

    def to_rows(batch: pa.Table) -> pa.Table:
        paths = batch.column("path").to_pylist()
        relative = [posixpath.relpath(path, root) if path != root else posixpath.basename(path) for path in paths]
        labels = [index.get(rel.split("/")[0]) if "/" in rel else None for rel in relative]
        return pa.table(
            {
                "image_id": pa.array(relative, pa.string()),
                "source_uri": pa.array([prefix + path for path in paths], pa.string()),
                "label": pa.array(labels, pa.int64()),
                "data": batch.column("bytes").cast(pa.binary()),
            },
            schema=SOURCE_SCHEMA,
        )

    dataset = ray.data.read_binary_files(
        root, filesystem=filesystem, include_paths=True, file_extensions=IMAGE_EXTENSIONS
    )
    return dataset.map_batches(to_rows, batch_format="pyarrow", batch_size=None)
