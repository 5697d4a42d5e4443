"""What every input format shares: the rows a reader yields, the names readers look for, the
error they raise, and small helpers. Imports neither torch nor Ray."""

from __future__ import annotations

import posixpath

import pyarrow as pa

from legx.pipeline.engine.storage import scheme_of

SOURCE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("source_uri", pa.string()),
        ("label", pa.int64()),
        ("data", pa.binary()),
    ]
)
IMAGE_EXTENSIONS = ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm"]
ID_COLUMNS = ("image_id", "id", "key", "__key__")
IMAGE_COLUMNS = ("image", "img", "image_bytes", "bytes", "jpg", "jpeg", "png")


class SourceError(ValueError):
    """The input cannot be read as the configured (or detected) format."""


def uri_prefix(uri: str) -> str:
    """The scheme part of ``uri`` that filesystem paths lack ('' for local paths)."""
    scheme = scheme_of(uri)
    return "" if scheme == "file" else f"{scheme}://"


def extension(path: str) -> str:
    return posixpath.splitext(path)[1].lower().lstrip(".")


def parse_label(value: bytes | str | int | None) -> int | None:
    """An integer label from a WebDataset entry or a Parquet cell; None when it is not one."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def parquet_image_columns(names: list[str], types: list[pa.DataType], image_column: str | None = None,
                          id_column: str | None = None) -> tuple[str, str | None]:
    """The image column and id column of a Parquet input (the configured ones, else the first of
    ``IMAGE_COLUMNS`` / ``ID_COLUMNS`` present); the id column is None where the image column is
    a struct whose ``path`` names the image. Raises SourceError saying what is missing."""
    found_image = image_column or next((n for n in IMAGE_COLUMNS if n in names), None)
    if found_image not in names:
        raise SourceError(
            f"Parquet input has no image column (tried {image_column or IMAGE_COLUMNS});"
            f" columns: {names}; set image_column"
        )
    image_type = dict(zip(names, types))[found_image]
    image_is_struct = isinstance(image_type, pa.DataType) and pa.types.is_struct(image_type)
    found_id = id_column or next((n for n in ID_COLUMNS if n in names), None)
    if found_id is None and not image_is_struct:
        raise SourceError(
            f"Parquet input has no id column (tried {ID_COLUMNS}); columns: {names}; set id_column"
        )
    if found_id is not None and found_id not in names:
        raise SourceError(f"id_column {found_id!r} is not a column of the input; columns: {names}")
    return found_image, found_id


def parquet_ids_and_bytes(table: pa.Table, image_column: str, id_column: str | None) -> tuple[pa.Array, pa.Array]:
    """(image ids as strings, encoded image bytes) of a Parquet table, from the columns
    ``parquet_image_columns`` chose: a struct image column gives its ``bytes`` field (and its
    ``path`` as the id when there is no id column)."""
    images = table.column(image_column).combine_chunks()
    if pa.types.is_struct(images.type):
        data = images.field("bytes")
        ids = images.field("path") if id_column is None else table.column(id_column).combine_chunks()
    else:
        data = images
        ids = table.column(id_column).combine_chunks()
    return ids.cast(pa.string()), data
