"""A folder of images. In the ImageNet layout (ROOT/CLASS/xxx.JPEG) the class folders give the
labels through their sorted list (or the ``classes`` file, one folder name per line); images
directly under ROOT have no label. image_id = the path relative to ROOT."""

from __future__ import annotations

import math
import posixpath
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs
import ray

from legx.pipeline.engine.sources.common import IMAGE_EXTENSIONS, SOURCE_SCHEMA, SourceError, uri_prefix
from legx.pipeline.engine.sources.detect import listing
from legx.pipeline.engine.sources.imagenet import read_class_list
from legx.pipeline.engine.storage_retry import retried

if TYPE_CHECKING:
    from legx.pipeline.engine.config import JobConfig

# Ray's binary-file reader fetches a task's files one after another and plans its tasks by bytes
# (blocks of at least 1 MiB: hundreds of small images to a task, a handful of tasks for a folder of
# thousands), so under an object store's latency and retries a folder of small images was read
# at the pace of one request at a time. legx lists the folder itself, plans a task per
# FILES_PER_READ_TASK files, fetches each task's files on FETCH_THREADS threads with its own
# retries (``legx.pipeline.engine.storage_retry``), and lets several tasks share a CPU, since a
# read only fetches bytes (the decode stage decodes).
FILES_PER_READ_TASK = 32
MAX_READ_TASKS = 4096
FETCH_THREADS = 16
READ_TASK_CPUS = 0.25
# Ray's own convention for a folder's files that are not data.
HIDDEN_PREFIXES = (".", "_")


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
    paths = image_paths(filesystem, root)
    if not paths:
        raise SourceError(f"input {prefix + root!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")

    def fetch(batch: pa.Table) -> pa.Table:
        task_paths = batch.column("path").to_pylist()

        def read_one(path: str) -> bytes:
            return retried("read", prefix + path, lambda: _read_all(filesystem, path))

        with ThreadPoolExecutor(min(FETCH_THREADS, max(1, len(task_paths)))) as pool:
            data = list(pool.map(read_one, task_paths))
        relative = [posixpath.relpath(path, root) if path != root else posixpath.basename(path)
                    for path in task_paths]
        labels = [index.get(rel.split("/")[0]) if "/" in rel else None for rel in relative]
        return pa.table(
            {
                "image_id": pa.array(relative, pa.string()),
                "source_uri": pa.array([prefix + path for path in task_paths], pa.string()),
                "label": pa.array(labels, pa.int64()),
                "data": pa.array(data, pa.binary()),
            },
            schema=SOURCE_SCHEMA,
        )

    read_tasks = min(MAX_READ_TASKS, math.ceil(len(paths) / FILES_PER_READ_TASK))
    size = math.ceil(len(paths) / read_tasks)
    table = pa.table({"path": pa.array(paths, pa.string())})
    dataset = ray.data.from_arrow([table.slice(start, size) for start in range(0, len(paths), size)])
    return dataset.map_batches(fetch, batch_format="pyarrow", batch_size=None, num_cpus=READ_TASK_CPUS)


def image_paths(filesystem: pafs.FileSystem, root: str) -> list[str]:
    """The image files under ``root`` at any depth, sorted; names under a folder or file whose
    path below ``root`` starts with '.' or '_' are left out, as Ray's readers leave them out."""
    if retried("look up", root, lambda: filesystem.get_file_info(root)).type == pafs.FileType.File:
        return [root]
    infos = retried("list", root, lambda: filesystem.get_file_info(pafs.FileSelector(root, recursive=True)))
    endings = tuple(f".{ending}" for ending in IMAGE_EXTENSIONS)
    return sorted(
        info.path for info in infos
        if info.type == pafs.FileType.File and info.base_name.lower().endswith(endings)
        and not posixpath.relpath(info.path, root).startswith(HIDDEN_PREFIXES)
    )


def _read_all(filesystem: pafs.FileSystem, path: str) -> bytes:
    with filesystem.open_input_stream(path) as stream:
        return stream.read()
