"""Job inputs as Ray Datasets with the columns image_id, source_uri, label, data.

Three layouts, local or in object storage:

* a folder of images. In the ImageNet layout (ROOT/CLASS/xxx.JPEG) the class folders give the
  labels through their sorted list (or the ``classes`` file, one folder name per line); images
  directly under ROOT have no label. image_id = the path relative to ROOT.
* WebDataset tar shards (one sample = files sharing a key); image_id = the sample key, label =
  the ``cls`` entry when present.
* Parquet files with a column of encoded image bytes (plain binary, or a struct with a
  ``bytes`` field as Hugging Face datasets write it); image_id from ``id_column``, ``image_id``,
  ``id``, ``key`` or the struct's ``path``.

Annotations (image_id, and any of label, box, height, width, mask) come from a Parquet file
joined by image_id; ROOT/annotations.parquet is used when present and none is configured.

Repeated ids (WebDataset and Parquet inputs; a folder's relative paths are unique): the first
occurrence wins, so the output never holds two rows of one key. "First" is fixed by the input,
not by the order in which Ray's tasks happen to run: the occurrence in the shard whose path sorts
first, and within one shard (a Parquet file; Ray's WebDataset reader refuses a key repeated in
one tar) the one whose bytes' SHA-256 sorts first. Every other occurrence
becomes error rows ("duplicate id: ...") under the id made unique by its shard, ``ID@SHARD``
(``ID@SHARD#DIGEST`` when the shard holds the id more than once), so that it is visible and
never explained. ``repeated_ids`` finds them in one pass over the ids and image bytes, before
the job; the decode stage applies them. The same input always gives the same names, so a resumed
run skips and keeps exactly the rows of the first attempt.
"""

from __future__ import annotations

import posixpath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from methods.lazy_imports import LazyModule
from pipeline.engine.config import JobConfig
from pipeline.engine.images import image_digest
from pipeline.engine.storage import exists, read_bytes, resolve, scheme_of

# Ray is imported when a source is read: `legx show` takes the layout constants alone.
ray = LazyModule("ray")

IMAGE_EXTENSIONS = ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm"]
ANNOTATIONS_FILE = "annotations.parquet"
SOURCE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("source_uri", pa.string()),
        ("label", pa.int64()),
        ("data", pa.binary()),
    ]
)
ID_COLUMNS = ("image_id", "id", "key", "__key__")
IMAGE_COLUMNS = ("image", "img", "image_bytes", "bytes", "jpg", "jpeg", "png")


DUPLICATE_ID_ERROR = "duplicate id"


class SourceError(ValueError):
    """The input cannot be read as the configured (or detected) format."""


def _uri_prefix(uri: str) -> str:
    scheme = scheme_of(uri)
    return "" if scheme == "file" else f"{scheme}://"


def _extension(path: str) -> str:
    return posixpath.splitext(path)[1].lower().lstrip(".")


def _listing(filesystem: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    return filesystem.get_file_info(pafs.FileSelector(path, recursive=False))


def _kind_of_files(infos: list[pafs.FileInfo]) -> str | None:
    names = [info.base_name for info in infos if info.type == pafs.FileType.File]
    extensions = {_extension(name) for name in names if not name.startswith((".", "_"))}
    if extensions & set(IMAGE_EXTENSIONS):
        return "folder"
    if "tar" in extensions:
        return "webdataset"
    if any(_extension(n) == "parquet" and n != ANNOTATIONS_FILE for n in names):
        return "parquet"
    return None


def detect_format(filesystem: pafs.FileSystem, path: str) -> str:
    """'folder', 'webdataset' or 'parquet' from the root listing (and its first subfolder)."""
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"input {path!r} does not exist")
    if info.type == pafs.FileType.File:
        kind = {"tar": "webdataset", "parquet": "parquet"}.get(_extension(path))
        if kind is None:
            raise SourceError(f"input {path!r} is a single file that is neither .tar nor .parquet")
        return kind
    infos = _listing(filesystem, path)
    kind = _kind_of_files(infos)
    if kind:
        return kind
    folders = sorted(i.path for i in infos if i.type == pafs.FileType.Directory)
    if folders:
        kind = _kind_of_files(_listing(filesystem, folders[0]))
        if kind:
            return kind
    raise SourceError(
        f"found no images ({', '.join(IMAGE_EXTENSIONS)}), .tar shards or .parquet files in {path!r}"
    )


def class_names(config: JobConfig, filesystem: pafs.FileSystem, root: str) -> list[str]:
    """The label order of an ImageNet-layout folder: the ``classes`` file, else the sorted
    class folders."""
    if config.classes:
        text = read_bytes(config.classes, config.storage).decode("utf-8")
        return [line.strip() for line in text.splitlines() if line.strip()]
    return sorted(
        info.base_name
        for info in _listing(filesystem, root)
        if info.type == pafs.FileType.Directory and not info.base_name.startswith((".", "_"))
    )


def read_source(config: JobConfig) -> tuple[ray.data.Dataset, str]:
    """The input as a Dataset of SOURCE_SCHEMA rows, and the detected format."""
    filesystem, root = resolve(config.input, config.storage)
    kind = config.input_format
    if kind == "auto":
        kind = detect_format(filesystem, root)
    if kind == "folder":
        dataset = _read_folder(config, filesystem, root)
    elif kind == "webdataset":
        dataset = _read_webdataset(config, filesystem, root)
    else:
        dataset = _read_parquet(config, filesystem, root)
    if config.limit:
        dataset = dataset.limit(config.limit)
    return dataset, kind


def _read_folder(config: JobConfig, filesystem: pafs.FileSystem, root: str) -> ray.data.Dataset:
    index = {name: position for position, name in enumerate(class_names(config, filesystem, root))}
    prefix = _uri_prefix(config.input)

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


def _read_webdataset(config: JobConfig, filesystem: pafs.FileSystem, root: str) -> ray.data.Dataset:
    prefix = _uri_prefix(config.input)

    def to_rows(batch: pa.Table) -> pa.Table:
        names = batch.column_names
        image_column = next((ext for ext in IMAGE_EXTENSIONS if ext in names), None)
        count = batch.num_rows
        if image_column is None:
            data = pa.array([b""] * count, pa.binary())
        else:
            data = pc.fill_null(batch.column(image_column).cast(pa.binary()), b"")
        label_column = config.label_column or next((n for n in ("cls", "label") if n in names), None)
        labels = [None] * count
        if label_column and label_column in names:
            labels = [_parse_label(value) for value in batch.column(label_column).to_pylist()]
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


def _parse_label(value: bytes | str | int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _read_parquet(config: JobConfig, filesystem: pafs.FileSystem, root: str) -> ray.data.Dataset:
    prefix = _uri_prefix(config.input)
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
            pa.array([_parse_label(v) for v in batch.column(label_column).to_pylist()], pa.int64())
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


def read_annotations(config: JobConfig, source_format: str) -> pa.Table | None:
    """The annotations table (image_id first) or None. The configured file must exist; the
    implicit ROOT/annotations.parquet is used only for folder inputs that have one."""
    uri = config.annotations
    if uri is None and source_format == "folder":
        filesystem, root = resolve(config.input, config.storage)
        candidate = posixpath.join(root, ANNOTATIONS_FILE)
        if not exists(filesystem, candidate):
            return None
        with filesystem.open_input_file(candidate) as handle:
            table = pq.read_table(handle)
    elif uri is None:
        return None
    else:
        filesystem, path = resolve(uri, config.storage)
        if not exists(filesystem, path):
            raise SourceError(f"annotations {uri!r} do not exist")
        with filesystem.open_input_file(path) as handle:
            table = pq.read_table(handle)
    if "image_id" not in table.column_names:
        raise SourceError(f"annotations have no image_id column; columns: {table.column_names}")
    keep = [n for n in ("image_id", "label", "box", "height", "width", "mask") if n in table.column_names]
    return table.select(keep)


def repeated_ids(config: JobConfig, source_format: str) -> dict[str, dict[str, tuple[str, str]]]:
    """The occurrences of repeated ids that lose to the first one (see the module docstring):
    source_uri -> {digest of the bytes: (unique image_id, error)}. Empty for folder inputs and
    when no id repeats. Reads the whole input (not just ``limit`` images), so that the names do
    not depend on which images a limited run happens to take."""
    if source_format == "folder":
        return {}
    filesystem, root = resolve(config.input, config.storage)

    # Nested, as the readers' row functions are: Ray ships it by value, so that its workers do
    # not import this module (and through the config, torch).
    def occurrences(batch: pa.Table) -> pa.Table:
        return pa.table({
            "image_id": batch.column("image_id"),
            "source_uri": batch.column("source_uri"),
            "digest": pa.array([image_digest(value) for value in batch.column("data").to_pylist()], pa.string()),
        })

    read = _read_webdataset if source_format == "webdataset" else _read_parquet
    refs = read(config, filesystem, root).map_batches(
        occurrences, batch_format="pyarrow", batch_size=None
    ).to_arrow_refs()
    tables = [table for table in ray.get(refs) if table.num_rows]
    if not tables:
        return {}
    table = pa.concat_tables(tables)
    counts = table.group_by("image_id").aggregate([("image_id", "count")])
    repeated = counts.filter(pc.greater(counts.column("image_id_count"), 1)).column("image_id")
    if not len(repeated):
        return {}
    table = table.filter(pc.is_in(table.column("image_id"), value_set=repeated))
    prefix = _uri_prefix(config.input)
    by_id: dict[str, list[tuple[str, str, str]]] = {}
    for image_id, uri, digest in zip(*(table.column(name).to_pylist() for name in table.column_names)):
        by_id.setdefault(image_id, []).append((_shard_of(uri, image_id, prefix, root), digest, uri))
    losers: dict[str, dict[str, tuple[str, str]]] = {}
    for image_id, occurrences in by_id.items():
        occurrences.sort()
        for (shard, digest, _), (next_shard, next_digest, _) in zip(occurrences, occurrences[1:]):
            if (shard, digest) == (next_shard, next_digest):
                raise SourceError(
                    f"input: {shard} holds id {image_id!r} more than once with identical bytes;"
                    " remove the copies (they cannot be told apart, so no one of them can be kept)"
                )
        first_shard = occurrences[0][0]
        in_shard: dict[str, int] = {}
        for shard, _, _ in occurrences:
            in_shard[shard] = in_shard.get(shard, 0) + 1
        for shard, digest, uri in occurrences[1:]:
            unique = f"{image_id}@{shard}" + (f"#{digest[:12]}" if in_shard[shard] > 1 else "")
            error = (f"{DUPLICATE_ID_ERROR}: {image_id!r} occurs {len(occurrences)} times; the first"
                     f" occurrence (in {first_shard}) is explained under that id, this one is not")
            losers.setdefault(uri, {})[digest] = (unique, error)
    return losers


def _shard_of(source_uri: str, image_id: str, prefix: str, root: str) -> str:
    """The shard of a WebDataset / Parquet row (its source_uri is SHARD#ID), relative to the
    input root."""
    shard = source_uri[: -len(image_id) - 1] if source_uri.endswith("#" + image_id) else source_uri
    path = shard[len(prefix):] if prefix and shard.startswith(prefix) else shard
    return posixpath.basename(path) if path == root else posixpath.relpath(path, root)
