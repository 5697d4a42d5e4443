"""The input formats, in one place: a format is a module with ``read(config, filesystem, root)
-> ray.data.Dataset`` of ``SOURCE_SCHEMA`` rows, and one line here that names it and says how
to recognise its files. Adding a format is a new module in this package plus its line in
``FORMATS``. Importing this module imports neither torch nor Ray (the config's choices come from
here); a format's module, and Ray with it, is imported when its reader runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from legx.pipeline.engine.sources.common import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Format:
    """``module`` holds the reader. ``extensions``: the file name endings that make a folder
    this format (format detection); ``files`` names such files in messages. ``single_file``: a single input file of such an ending is
    one. ``unique_ids``: its image ids cannot repeat (no repeated-id pass). ``root_annotations``:
    ROOT/annotations.parquet is read when no annotations are configured."""

    module: str
    extensions: tuple[str, ...]
    files: str
    single_file: bool = False
    unique_ids: bool = False
    root_annotations: bool = False

    def reader(self) -> Callable:
        return importlib.import_module(self.module).read


# In the order detection tries them.
FORMATS: dict[str, Format] = {
    "folder": Format("legx.pipeline.engine.sources.folder", tuple(IMAGE_EXTENSIONS),
                     f"images ({', '.join(IMAGE_EXTENSIONS)})", unique_ids=True, root_annotations=True),
    "webdataset": Format("legx.pipeline.engine.sources.webdataset", ("tar",), ".tar shards", single_file=True),
    "parquet": Format("legx.pipeline.engine.sources.parquet", ("parquet",), ".parquet files", single_file=True),
}
