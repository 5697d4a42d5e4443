"""Repeated image ids (formats whose ids can repeat: WebDataset, Parquet; a folder's relative
paths are unique).

The first occurrence wins, so the output never holds two rows of one key. "First" is fixed by
the input, not by the order in which Ray's tasks happen to run: the occurrence in the shard
whose path sorts first, and within one shard (a Parquet file; Ray's WebDataset reader refuses a
key repeated in one tar) the one whose bytes' SHA-256 sorts first. Every other occurrence
becomes error rows ("duplicate id: ...") under the id made unique by its shard, ``ID@SHARD``
(``ID@SHARD#DIGEST`` when the shard holds the id more than once), so that it is visible and
never explained. ``repeated_ids`` finds them in one pass over the ids and image bytes, before
the job; the decode stage applies them. The same input always gives the same names, so a
resumed run skips and keeps exactly the rows of the first attempt.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from legx.pipeline.engine.images import image_digest
from legx.pipeline.engine.sources.common import SourceError, uri_prefix
from legx.pipeline.engine.sources.registry import FORMATS
from legx.pipeline.engine.storage import resolve

if TYPE_CHECKING:
    from legx.pipeline.engine.config import JobConfig

DUPLICATE_ID_ERROR = "duplicate id"


def repeated_ids(config: JobConfig, source_format: str) -> dict[str, dict[str, tuple[str, str]]]:
    """The occurrences of repeated ids that lose to the first one (see the module docstring):
    source_uri -> {digest of the bytes: (unique image_id, error)}. Empty for formats with unique
    ids and when no id repeats. Reads the whole input (not just ``limit`` images), so that the
    names do not depend on which images a limited run happens to take."""
    if FORMATS[source_format].unique_ids:
        return {}
    table = _repeated_occurrences(config, source_format)
    if table is None:
        return {}
    _, root = resolve(config.input, config.storage)
    prefix = uri_prefix(config.input)
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


def _repeated_occurrences(config: JobConfig, source_format: str) -> pa.Table | None:
    """(image_id, source_uri, digest of the bytes) of every occurrence of an id that occurs more
    than once in the whole input; None when none does."""
    import ray

    filesystem, root = resolve(config.input, config.storage)

    # Nested, as the readers' row functions are: Ray ships it by value, so that its workers do
    # not import this module.
    def occurrences(batch: pa.Table) -> pa.Table:
        return pa.table({
            "image_id": batch.column("image_id"),
            "source_uri": batch.column("source_uri"),
            "digest": pa.array([image_digest(value) for value in batch.column("data").to_pylist()], pa.string()),
        })

    read = FORMATS[source_format].reader()
    refs = read(config, filesystem, root).map_batches(
        occurrences, batch_format="pyarrow", batch_size=None
    ).to_arrow_refs()
    tables = [table for table in ray.get(refs) if table.num_rows]
    if not tables:
        return None
    table = pa.concat_tables(tables)
    counts = table.group_by("image_id").aggregate([("image_id", "count")])
    repeated = counts.filter(pc.greater(counts.column("image_id_count"), 1)).column("image_id")
    if not len(repeated):
        return None
    return table.filter(pc.is_in(table.column("image_id"), value_set=repeated))


def _shard_of(source_uri: str, image_id: str, prefix: str, root: str) -> str:
    """The shard of a WebDataset / Parquet row (its source_uri is SHARD#ID), relative to the
    input root."""
    shard = source_uri[: -len(image_id) - 1] if source_uri.endswith("#" + image_id) else source_uri
    path = shard[len(prefix):] if prefix and shard.startswith(prefix) else shard
    return posixpath.basename(path) if path == root else posixpath.relpath(path, root)
