"""What every input format shares: the rows a reader yields, the names readers look for, the
error they raise, and small helpers. Imports neither torch nor Ray."""

from __future__ import annotations

import posixpath

import pyarrow as pa

from pipeline.engine.storage import scheme_of

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
