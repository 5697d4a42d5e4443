"""The job's output: Parquet files of the ``saliency`` table (schema: ``legx.pipeline.engine.schema``).

    OUTPUT/saliency/RUN_ID-part-<hash>.parquet

One flat folder for every run: every file carries its ``run_id`` column, and its name starts
with it. Readers take run_id from the files with their plain idiom: a hive ``run_id=RUN_ID``
folder would hand them a second, differently typed ``run_id`` (pandas and pyarrow's default
discovery refuse to merge the two), and plain subfolders are not read by Spark's
``read.parquet`` of the folder. Outputs written by earlier versions keep their
``saliency/run_id=RUN_ID/part-<hash>.parquet`` files: ``run_location`` finds them, so a rerun
of such a run resumes in place, and ``legx query`` reads both layouts (it takes run_id from the
files).

``ParquetWriter.write`` drops the rows whose key (image_id, method, lam) the run already holds
and writes the rest in files of at most ``rows_per_file`` rows, each named by a hash of the
attempt's token and its rows' keys, so a retried write of the same rows in the same attempt
rewrites the same files. Files appear atomically (object-store uploads complete or do not exist;
local files are renamed into place). Each write returns its ``WriteCounts``. The job's write
stage runs it in Ray Data's write tasks (``legx.pipeline.engine.write``); this module imports no
Ray, so that the analysis commands can read the output's layout from it.

A rerun of a run id reads the keys already written (``written_state``): those of its final rows,
'ok' rows and permanent errors (``legx.pipeline.engine.error_classes``). It skips the images
whose keys are all final, drops any row whose key is final, and so redoes the keys whose rows
are all retryable errors. After its writes, ``supersede`` rewrites each file that holds a
retryable error row whose key now has another row (in place, atomically; a file left empty is
deleted), so that every reader sees exactly one row per key, the newest result, without a
filter of its own. Every storage operation here is retried on transient faults
(``legx.pipeline.engine.storage_retry``).
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from legx.pipeline.engine.broadcast import shared
from legx.pipeline.engine.error_classes import PERMANENT, error_class
from legx.pipeline.engine.schema import output_schema, row_key
from legx.pipeline.engine.storage import StorageOptions, exists, resolve, write_bytes_atomic
from legx.pipeline.engine.storage_retry import RetryCounter, retried

SALIENCY_DIR = "saliency"


# The hive-style run folder of outputs written by earlier versions, and its files' names.
LEGACY_RUN_FOLDER = "run_id={run_id}"
LEGACY_FILE_PREFIX = "part-"
# A file's name: the run id, then this, then the hash of its rows (24 hex digits).
FILE_INFIX = "-part-"
_DIGEST = re.compile(r"[0-9a-f]{24}\.parquet")


def run_location(output: str, storage: StorageOptions, run_id: str) -> tuple[pafs.FileSystem, str, str]:
    """The filesystem, folder and file-name prefix of the run's Parquet files: OUTPUT/saliency
    and RUN_ID-part-, or the legacy folder OUTPUT/saliency/run_id=RUN_ID and part- where a run
    was written that way."""
    filesystem, root = resolve(output, storage)
    legacy = posixpath.join(root, SALIENCY_DIR, LEGACY_RUN_FOLDER.format(run_id=run_id))
    if exists(filesystem, legacy):
        return filesystem, legacy, LEGACY_FILE_PREFIX
    return filesystem, posixpath.join(root, SALIENCY_DIR), run_id + FILE_INFIX


def run_files(output: str, storage: StorageOptions, run_id: str) -> tuple[pafs.FileSystem, list[str]]:
    """The filesystem and the paths of the run's Parquet files (none yet: an empty list)."""
    filesystem, folder, prefix = run_location(output, storage, run_id)
    selector = pafs.FileSelector(folder, allow_not_found=True)
    paths = [info.path for info in filesystem.get_file_info(selector)
             if info.type == pafs.FileType.File and info.base_name.startswith(prefix)
             and _DIGEST.fullmatch(info.base_name[len(prefix):])]
    return filesystem, sorted(paths)


def table_keys(table: pa.Table) -> list[str]:
    """The row key (``schema.row_key``) of every row of a table with image_id, method and lam."""
    columns = (table.column(name).to_pylist() for name in ("image_id", "method", "lam"))
    return [row_key(image_id, method, lam) for image_id, method, lam in zip(*columns)]


# The columns that decide which rows of a key stand (``supersede``).
_STATE_COLUMNS = ["image_id", "method", "lam", "status", "error", "error_class", "created_at"]


# Files of a run read at once: object stores serve parallel GETs.
READ_THREADS = 16


def _listed(output: str, storage: StorageOptions, run_id: str) -> tuple[pafs.FileSystem, list[str]]:
    return retried("list", _where(output, run_id), lambda: run_files(output, storage, run_id),
                   storage.max_attempts)


def _read_files(output: str, storage: StorageOptions, filesystem: pafs.FileSystem, paths: list[str],
                columns: list[str]) -> list[pa.Table]:
    """``columns`` of each file, in the order of ``paths``, each file read (and retried on a
    transient fault) on its own, so that one fault costs one file's read, not the run's. Files
    written before a column existed read it as nulls."""
    schema = output_schema()

    def read(path: str) -> pa.Table:
        return retried("read", _object_uri(output, path),
                       lambda: pads.dataset(path, filesystem=filesystem, format="parquet",
                                            schema=schema).to_table(columns=columns),
                       storage.max_attempts)

    if len(paths) < 2:
        return [read(path) for path in paths]
    with ThreadPoolExecutor(min(READ_THREADS, len(paths))) as pool:
        return list(pool.map(read, paths))


def _final(status: str | None, error: str | None, stored_class: str | None) -> bool:
    """Whether a row stands for good: 'ok', or an error that is a fact about the input."""
    return status == "ok" or (stored_class or error_class(error)) == PERMANENT


def written_state(output: str, storage: StorageOptions, run_id: str) -> tuple[set[str], int]:
    """Keys (image_id, method, lam) of ``run_id`` whose row is final (``_final``): what a rerun
    keeps (a key whose rows are all retryable errors is left out, so a rerun redoes it); and the
    number of retryable error rows, which only a rerun's rows can supersede (``supersede``)."""
    filesystem, paths = _listed(output, storage, run_id)
    keys: set[str] = set()
    retryable = 0
    for table in _read_files(output, storage, filesystem, paths, _STATE_COLUMNS):
        states = zip(*(table.column(name).to_pylist() for name in ("status", "error", "error_class")))
        for key, state in zip(table_keys(table), states):
            if _final(*state):
                keys.add(key)
            else:
                retryable += 1
    return keys, retryable


def read_run(output: str, storage: StorageOptions, run_id: str, columns: list[str]) -> pa.Table:
    """``columns`` of every row of the run."""
    filesystem, paths = _listed(output, storage, run_id)
    tables = _read_files(output, storage, filesystem, paths, columns)
    return pa.concat_tables(tables) if tables else output_schema().empty_table().select(columns)


def supersede(output: str, storage: StorageOptions, run_id: str) -> int:
    """Remove the rows that a later row of the same key supersedes: a retryable error row goes
    when its key has a final row, or a newer retryable error row. Final rows are never removed.
    Each file holding such rows is rewritten without them (deleted when none is left). Returns
    the number of rows removed."""
    filesystem, paths = _listed(output, storage, run_id)
    rows: dict[str, list[tuple[bool, Any, str, int]]] = {}
    for path, table in zip(paths, _read_files(output, storage, filesystem, paths, _STATE_COLUMNS)):
        states = zip(*(table.column(name).to_pylist() for name in ("status", "error", "error_class", "created_at")))
        for position, (key, (status, error, stored_class, created)) in enumerate(zip(table_keys(table), states)):
            rows.setdefault(key, []).append((_final(status, error, stored_class), created, path, position))
    removed: dict[str, set[int]] = {}
    for versions in rows.values():
        if len(versions) < 2:
            continue
        # The row that stands: a final one, else the newest; every retryable row but it goes.
        standing = max(versions, key=lambda version: (version[0], version[1] is not None, version[1]))
        for final, _, path, position in versions:
            if not final and (path, position) != standing[2:]:
                removed.setdefault(path, set()).add(position)
    for path, positions in removed.items():
        def rewrite(path=path, positions=positions) -> None:
            table = pq.read_table(path, filesystem=filesystem)
            keep = pa.array([position not in positions for position in range(table.num_rows)], pa.bool_())
            table = table.filter(keep)
            if table.num_rows:
                buffer = io.BytesIO()
                pq.write_table(table, buffer, compression="zstd")
                write_bytes_atomic(output, storage, path, buffer.getvalue())
            elif exists(filesystem, path):
                filesystem.delete_file(path)

        retried("rewrite", _object_uri(output, path), rewrite, storage.max_attempts)
    return sum(map(len, removed.values()))


def _where(output: str, run_id: str) -> str:
    return f"{output.rstrip('/')}/{SALIENCY_DIR}/{run_id}{FILE_INFIX}*.parquet"


def _object_uri(output: str, path: str) -> str:
    """``path`` (as ``resolve`` returns it) as a URI of ``output``'s storage, for messages."""
    scheme = output.split("://", 1)[0] if "://" in output else None
    return f"{scheme}://{path}" if scheme and scheme != "file" else path


@dataclass
class WriteCounts:
    """What writes did: rows written (ok / error), images (rows of the first method's first
    output), forwards, rows skipped as already written; and over the model calls whose rows
    they saw, written or not: busy seconds, the first call's start and the last one's end
    (epoch seconds), images with a label, those read correctly, the model's classes; the
    storage operations retried, and the storage fault that ended a write, if one did; the
    solver programs that fell back to the exact solver in the rows written."""

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
    storage_retries: int = 0
    solver_fallbacks: int = 0
    # A write that a storage fault ended after its retries (``StorageError.as_dict``); the job
    # raises it once the other writes are done.
    failure: dict | None = None

    def __add__(self, other: WriteCounts) -> WriteCounts:
        def pick(choose, a, b):
            return b if a is None else a if b is None else choose(a, b)

        return WriteCounts(
            **{name: getattr(self, name) + getattr(other, name)
               for name in ("rows", "ok", "errors", "images", "forwards", "skipped", "model_s",
                            "labelled", "correct", "storage_retries", "solver_fallbacks")},
            model_start=pick(min, self.model_start, other.model_start),
            model_end=pick(max, self.model_end, other.model_end),
            classes=pick(max, self.classes, other.classes),
            failure=self.failure or other.failure,
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


def output_rows(batch: pa.Table, run_id: str, model_id: str) -> pa.Table:
    """Stage rows (``STAGE_SCHEMA``) as rows of the output table (``output_schema``): the run id,
    the model id where the actor set none, the creation time; internal columns dropped."""
    schema = output_schema()
    count = batch.num_rows
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    columns = {}
    for name in schema.names:
        if name == "run_id":
            columns[name] = pa.array([run_id] * count, pa.string())
        elif name == "model_id":
            # The loaded model's id (spec and weights hash) where the actor set it.
            given = batch.column(name) if name in batch.column_names else pa.nulls(count, pa.string())
            columns[name] = pc.fill_null(given.cast(pa.string()), model_id)
        elif name == "created_at":
            columns[name] = pa.array([now] * count, schema.field(name).type)
        elif name == "error_class":
            statuses = batch.column("status").to_pylist()
            errors = batch.column("error").to_pylist()
            columns[name] = pa.array([error_class(error) if status == "error" else None
                                      for status, error in zip(statuses, errors)], pa.string())
        elif name in batch.column_names:
            columns[name] = batch.column(name).cast(schema.field(name).type)
        else:
            columns[name] = pa.nulls(count, schema.field(name).type)
    return pa.table(columns, schema=schema)


@dataclass(frozen=True)
class ParquetWriter:
    """Stage rows (``STAGE_SCHEMA``) -> Parquet files of the ``saliency`` table of ``run_id``,
    ``rows_per_file`` rows to a file (None: one file per write). ``model_id`` fills rows whose
    actor set none; ``anchor`` (method, lam) is the output whose rows count the images;
    ``written_ref`` holds the keys already written (a Ray object ref; None: none); ``attempt``
    tells this attempt's files from an earlier attempt's; ``location``: the folder and file-name
    prefix of the run's files (``run_location``; None: looked up at each write)."""

    output: str
    storage: StorageOptions
    run_id: str
    model_id: str
    anchor: tuple[str, float | None]
    rows_per_file: int | None = None
    written_ref: Any = None
    attempt: str = ""
    location: tuple[str, str] | None = None

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
        counts.solver_fallbacks = int(pc.sum(batch.column("_solver_fallbacks")).as_py() or 0)
        counts.images = sum(
            1 for method, lam in zip(table.column("method").to_pylist(), table.column("lam").to_pylist())
            if method == anchor_method and lam == anchor_lam
        )
        counts.storage_retries = self._write(table, [key for key, keep in zip(keys, fresh) if keep])
        return counts

    def _to_output(self, batch: pa.Table) -> pa.Table:
        return output_rows(batch, self.run_id, self.model_id)

    def _write(self, table: pa.Table, keys: list[str]) -> int:
        """Write the file of ``table``; returns the retries its storage faults cost."""
        folder, prefix = self.location or run_location(self.output, self.storage, self.run_id)[1:]
        digest = hashlib.sha256("\n".join([self.attempt, *sorted(keys)]).encode()).hexdigest()[:24]
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        path = posixpath.join(folder, f"{prefix}{digest}.parquet")
        before = RetryCounter.retries
        retried("write", _object_uri(self.output, path),
                lambda: write_bytes_atomic(self.output, self.storage, path, buffer.getvalue()),
                self.storage.max_attempts)
        return RetryCounter.retries - before
