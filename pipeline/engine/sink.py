"""The job's output: Parquet files of the ``saliency`` table (schema: ``legx.pipeline.engine.schema``).

    OUTPUT/saliency/RUN_ID/part-<hash>.parquet

The run's folder is a plain name, not a hive ``run_id=RUN_ID`` folder: every file carries its
``run_id`` column, and a hive folder would give readers a second, differently typed ``run_id``
(pandas and pyarrow's default discovery refuse to merge the two). Outputs written by earlier
versions keep their ``run_id=RUN_ID`` folders: ``run_directory`` finds them, so a rerun of such a
run resumes in place, and ``legx query`` reads both layouts (it takes run_id from the files).

``ParquetWriter.write`` drops the rows whose key (image_id, method, lam) the run already holds
and writes the rest in files of at most ``rows_per_file`` rows, each named by a hash of its
rows' keys, so a retried write of the same rows rewrites the same files. Files appear atomically
(object-store uploads complete or do not exist; local files are renamed into place). A rerun of
a run id reads the keys already written (``written_keys``), skips the images that are complete
and drops any row whose key exists, so a resumed run ends with exactly one row per key. Each
write returns its ``WriteCounts``. The job's write stage runs it in Ray Data's write tasks
(``legx.pipeline.engine.write``); this module imports no Ray, so that the analysis commands can read
the output's layout from it.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from legx.pipeline.engine.broadcast import shared
from legx.pipeline.engine.schema import output_schema, row_key
from legx.pipeline.engine.storage import StorageOptions, exists, resolve, write_bytes_atomic

SALIENCY_DIR = "saliency"


# The hive-style run folder of outputs written before the run folder became a plain name.
LEGACY_RUN_FOLDER = "run_id={run_id}"


def run_directory(output: str, storage: StorageOptions, run_id: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and folder of the run's Parquet files: OUTPUT/saliency/RUN_ID, or the
    legacy OUTPUT/saliency/run_id=RUN_ID where a run was written that way."""
    filesystem, root = resolve(output, storage)
    legacy = posixpath.join(root, SALIENCY_DIR, LEGACY_RUN_FOLDER.format(run_id=run_id))
    if exists(filesystem, legacy):
        return filesystem, legacy
    return filesystem, posixpath.join(root, SALIENCY_DIR, run_id)


def table_keys(table: pa.Table) -> list[str]:
    """The row key (``schema.row_key``) of every row of a table with image_id, method and lam."""
    columns = (table.column(name).to_pylist() for name in ("image_id", "method", "lam"))
    return [row_key(image_id, method, lam) for image_id, method, lam in zip(*columns)]


def written_keys(output: str, storage: StorageOptions, run_id: str) -> set[str]:
    """Keys (image_id, method, lam) already written for ``run_id``."""
    filesystem, directory = run_directory(output, storage, run_id)
    if not exists(filesystem, directory):
        return set()
    dataset = pads.dataset(directory, filesystem=filesystem, format="parquet", exclude_invalid_files=False)
    return set(table_keys(dataset.to_table(columns=["image_id", "method", "lam"])))


def read_run(output: str, storage: StorageOptions, run_id: str, columns: list[str]) -> pa.Table:
    filesystem, directory = run_directory(output, storage, run_id)
    if not exists(filesystem, directory):
        return output_schema().empty_table().select(columns)
    dataset = pads.dataset(directory, filesystem=filesystem, format="parquet")
    return dataset.to_table(columns=columns)


@dataclass
class WriteCounts:
    """What writes did: rows written (ok / error), images (rows of the first method's first
    output), forwards, rows skipped as already written; and over the model calls whose rows
    they saw, written or not: busy seconds, the first call's start and the last one's end
    (epoch seconds), images with a label, those read correctly, the model's classes."""

    rows: int = 0
    ok: int = 0
    errors: int = 0
    images: int = 0
    forwards: int = 0
    skipped: int = 0
    model_s: float = 0.0
    model_start: float | None = None
    model_end: float | None = None
    labelled: int = 0
    correct: int = 0
    classes: int | None = None

    def __add__(self, other: WriteCounts) -> WriteCounts:
        def pick(choose, a, b):
            return b if a is None else a if b is None else choose(a, b)

        return WriteCounts(
            **{name: getattr(self, name) + getattr(other, name)
               for name in ("rows", "ok", "errors", "images", "forwards", "skipped", "model_s",
                            "labelled", "correct")},
            model_start=pick(min, self.model_start, other.model_start),
            model_end=pick(max, self.model_end, other.model_end),
            classes=pick(max, self.classes, other.classes),
        )


def _model_calls(table: pa.Table) -> WriteCounts:
    """The model calls' part of the counts: their once-per-call columns (``ONCE_PER_CALL``)."""
    if not table.num_rows:
        return WriteCounts()
    return WriteCounts(
        model_s=pc.sum(table.column("_model_s")).as_py() or 0.0,
        model_start=pc.min(table.column("_model_start")).as_py(),
        model_end=pc.max(table.column("_model_end")).as_py(),
        labelled=pc.sum(table.column("_labelled")).as_py() or 0,
        correct=pc.sum(table.column("_correct")).as_py() or 0,
        classes=pc.max(table.column("_classes")).as_py(),
    )


@dataclass(frozen=True)
class ParquetWriter:
    """Stage rows (``STAGE_SCHEMA``) -> Parquet files of the ``saliency`` table of ``run_id``,
    ``rows_per_file`` rows to a file (None: one file per write). ``model_id`` fills rows whose
    actor set none; ``anchor`` (method, lam) is the output whose rows count the images;
    ``written_ref`` holds the keys already written (a Ray object ref; None: none)."""

    output: str
    storage: StorageOptions
    run_id: str
    model_id: str
    anchor: tuple[str, float | None]
    rows_per_file: int | None = None
    written_ref: Any = None

    def write(self, table: pa.Table) -> WriteCounts:
        """Write the rows of ``table`` not yet written; what was written and seen."""
        size = self.rows_per_file or max(table.num_rows, 1)
        counts = WriteCounts()
        for start in range(0, table.num_rows, size):
            counts += self._write_file(table.slice(start, size))
        return counts

    def _write_file(self, batch: pa.Table) -> WriteCounts:
        written = shared(self.written_ref) if self.written_ref is not None else frozenset()
        keys = table_keys(batch)
        # Model time and label reading count whether or not the rows were already written
        # (resume): every image a model call saw.
        counts = _model_calls(batch)
        fresh = [key not in written for key in keys]
        counts.skipped = len(keys) - sum(fresh)
        batch = batch.filter(pa.array(fresh, pa.bool_()))
        if not batch.num_rows:
            return counts
        table = self._to_output(batch)
        statuses = table.column("status").to_pylist()
        anchor_method, anchor_lam = self.anchor
        counts.rows = table.num_rows
        counts.ok = statuses.count("ok")
        counts.errors = statuses.count("error")
        counts.forwards = int(pc.sum(batch.column("_forwards")).as_py() or 0)
        counts.images = sum(
            1 for method, lam in zip(table.column("method").to_pylist(), table.column("lam").to_pylist())
            if method == anchor_method and lam == anchor_lam
        )
        self._write(table, [key for key, keep in zip(keys, fresh) if keep])
        return counts

    def _to_output(self, batch: pa.Table) -> pa.Table:
        schema = output_schema()
        count = batch.num_rows
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        columns = {}
        for name in schema.names:
            if name == "run_id":
                columns[name] = pa.array([self.run_id] * count, pa.string())
            elif name == "model_id":
                # The loaded model's id (spec and weights hash) where the actor set it.
                given = batch.column(name) if name in batch.column_names else pa.nulls(count, pa.string())
                columns[name] = pc.fill_null(given.cast(pa.string()), self.model_id)
            elif name == "created_at":
                columns[name] = pa.array([now] * count, schema.field(name).type)
            elif name in batch.column_names:
                columns[name] = batch.column(name).cast(schema.field(name).type)
            else:
                columns[name] = pa.nulls(count, schema.field(name).type)
        return pa.table(columns, schema=schema)

    def _write(self, table: pa.Table, keys: list[str]) -> None:
        _, directory = run_directory(self.output, self.storage, self.run_id)
        digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:24]
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        path = posixpath.join(directory, f"part-{digest}.parquet")
        write_bytes_atomic(self.output, self.storage, path, buffer.getvalue())
