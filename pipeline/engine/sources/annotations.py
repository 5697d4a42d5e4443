"""Annotations (image_id, and any of label, box, boxes, height, width, mask) joined to the
images by image_id: the configured ``annotations``, else ROOT/annotations.parquet for the formats
that read one (``Format.root_annotations``) when it exists.

The configured file is recognised by its content (``imagenet.sniff``): legx's Parquet,
ImageNet's ``LOC_val_solution.csv``, or a folder (or a single file) of ILSVRC XML files; the
last two need the ``classes`` file to turn synsets into class indices. Anything unreadable is a
``ConfigError`` before work starts.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from legx.pipeline.engine.sources.imagenet import (
    AnnotationCounts,
    AnnotationFileError,
    read_class_list,
    read_loc_csv,
    read_xml_files,
    sniff,
    xml_paths,
)
from legx.pipeline.engine.sources.registry import FORMATS
from legx.pipeline.engine.storage import exists, resolve

if TYPE_CHECKING:
    from legx.pipeline.engine.config import JobConfig

ANNOTATIONS_FILE = "annotations.parquet"
ANNOTATION_COLUMNS = ("image_id", "label", "box", "boxes", "height", "width", "mask")
# Unknown synsets named in a config error, at most.
LISTED_SYNSETS = 20


@dataclass(frozen=True)
class Annotations:
    """The annotations table (image_id first) and, for ImageNet's files, what reading found."""

    table: pa.Table
    counts: AnnotationCounts | None = None


def _config_error(problem: str):
    from legx.pipeline.engine.config import ConfigError

    return ConfigError([problem])


def read_annotations(config: JobConfig, source_format: str) -> Annotations | None:
    """The annotations or None. The configured file must exist and be readable; the implicit
    ROOT/annotations.parquet is used only where the format reads one and it exists."""
    if config.annotations is not None:
        filesystem, path = resolve(config.annotations, config.storage)
        if not exists(filesystem, path):
            raise _config_error(f"annotations: {config.annotations!r} does not exist")
        name = config.annotations
    elif FORMATS[source_format].root_annotations:
        filesystem, root = resolve(config.input, config.storage)
        path = posixpath.join(root, ANNOTATIONS_FILE)
        if not exists(filesystem, path):
            return None
        name = path
    else:
        return None
    try:
        form = sniff(filesystem, path)
        if form == "parquet":
            return Annotations(_read_parquet(filesystem, path))
        if config.classes is None:
            raise AnnotationFileError(
                "ImageNet's annotation files name classes by synset; set classes to the"
                " LOC_synset_mapping.txt (or a file of one synset per line) in the model's class order"
            )
        classes = read_class_list(config.classes, config.storage)
        if form == "loc_csv":
            with filesystem.open_input_stream(path) as stream:
                table, counts = read_loc_csv(stream.read(), classes)
        else:
            paths = xml_paths(filesystem, path) if form == "xml_folder" else [path]
            if not paths:
                raise AnnotationFileError("is a folder without .xml files")
            table, counts = read_xml_files(filesystem, paths, classes)
    except AnnotationFileError as error:
        raise _config_error(f"annotations: {name!r} {error}") from None
    except (OSError, pa.ArrowException) as error:
        raise _config_error(f"annotations: cannot read {name!r}: {error}") from None
    if counts.unknown_synsets:
        unknown = sorted(counts.unknown_synsets)
        more = f" and {len(unknown) - LISTED_SYNSETS} more" if len(unknown) > LISTED_SYNSETS else ""
        raise _config_error(
            f"annotations: {len(unknown)} synset(s) in {name!r} are not in the classes file"
            f" {config.classes!r}: {', '.join(unknown[:LISTED_SYNSETS])}{more}"
        )
    return Annotations(table, counts)


def _read_parquet(filesystem, path: str) -> pa.Table:
    with filesystem.open_input_file(path) as handle:
        table = pq.read_table(handle)
    if "image_id" not in table.column_names:
        raise AnnotationFileError(f"is Parquet without an image_id column; columns: {table.column_names}")
    return table.select([name for name in ANNOTATION_COLUMNS if name in table.column_names])
