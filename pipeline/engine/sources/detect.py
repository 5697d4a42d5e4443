"""Format detection (``input_format: auto``): the first format in ``FORMATS`` whose file endings
occur in the input's root listing, else in its first subfolder (ImageNet's ROOT/CLASS/ layout)."""

from __future__ import annotations

import pyarrow.fs as pafs

from legx.pipeline.engine.sources.annotations import ANNOTATIONS_FILE
from legx.pipeline.engine.sources.common import SourceError, extension
from legx.pipeline.engine.sources.registry import FORMATS


def listing(filesystem: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    return filesystem.get_file_info(pafs.FileSelector(path, recursive=False))


def _format_of_files(infos: list[pafs.FileInfo]) -> str | None:
    names = [info.base_name for info in infos if info.type == pafs.FileType.File]
    extensions = {extension(name) for name in names if not name.startswith((".", "_")) and name != ANNOTATIONS_FILE}
    return next((name for name, form in FORMATS.items() if extensions & set(form.extensions)), None)


def detect_format(filesystem: pafs.FileSystem, path: str) -> str:
    """The name of the input's format in ``FORMATS``, from the root listing (and its first
    subfolder), or from a single file's ending."""
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"input {path!r} does not exist")
    if info.type == pafs.FileType.File:
        kind = next((name for name, form in FORMATS.items()
                     if form.single_file and extension(path) in form.extensions), None)
        if kind is None:
            endings = [f".{ending}" for form in FORMATS.values() if form.single_file for ending in form.extensions]
            raise SourceError(f"input {path!r} is a single file that is neither {' nor '.join(endings)}")
        return kind
    infos = listing(filesystem, path)
    kind = _format_of_files(infos)
    if kind:
        return kind
    folders = sorted(i.path for i in infos if i.type == pafs.FileType.Directory)
    if folders:
        kind = _format_of_files(listing(filesystem, folders[0]))
        if kind:
            return kind
    *others, last = [form.files for form in FORMATS.values()]
    raise SourceError(f"found no {', '.join(others)} or {last} in {path!r}")
