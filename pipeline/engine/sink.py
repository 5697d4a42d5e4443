"""The job's output: Parquet files of the ``saliency`` table (schema: ``pipeline.engine.schema``).

    OUTPUT/saliency/run_id=RUN_ID/part-<hash>.parquet

Each file holds the rows of one write batch and is named by a hash of its rows' keys
(image_id, method, lam), so a retried task rewrites the same file. Files appear atomically
(object-store uploads complete or do not exist; local files are renamed into place). A rerun of
a run id reads the keys already written, skips the images that are complete and drops any row
whose key exists, so a resumed run ends with exactly one row per key. The run's manifest is
``pipeline.engine.manifest``.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.engine.broadcast import shared
from pipeline.engine.schema import WRITE_SUMMARY_SCHEMA, output_schema, row_key
from pipeline.engine.storage import StorageOptions, exists, resolve, write_bytes_atomic

SALIENCY_DIR = "saliency"


def run_directory(output: str, storage: StorageOptions, run_id: str) -> tuple[pafs.FileSystem, str]:
    filesystem, root = resolve(output, storage)
    return filesystem, posixpath.join(root, SALIENCY_DIR, f"run_id={run_id}")


def written_keys(output: str, storage: StorageOptions, run_id: str) -> set[str]:
    """Keys (image_id, method, lam) already written for ``run_id``."""
    filesystem, directory = run_directory(output, storage, run_id)
    if not exists(filesystem, directory):
        return set()
    dataset = pads.dataset(directory, filesystem=filesystem, format="parquet", exclude_invalid_files=False)
    table = dataset.to_table(columns=["image_id", "method", "lam"])
    return {
        row_key(image_id, method, lam)
        for image_id, method, lam in zip(
            table.column("image_id").to_pylist(),
            table.column("method").to_pylist(),
            table.column("lam").to_pylist(),
        )
    }


def read_run(output: str, storage: StorageOptions, run_id: str, columns: list[str]) -> pa.Table:
    filesystem, directory = run_directory(output, storage, run_id)
    if not exists(filesystem, directory):
        return output_schema().empty_table().select(columns)
    dataset = pads.dataset(directory, filesystem=filesystem, format="parquet")
    return dataset.to_table(columns=columns)


class ParquetWriter:
    """The write stage: stage rows -> one Parquet file; returns a one-row summary."""

    SUMMARY_SCHEMA = WRITE_SUMMARY_SCHEMA

    def __init__(self, output: str, storage: StorageOptions, run_id: str, model_id: str,
                 anchor: tuple[str, float | None], written_ref=None) -> None:
        self.output = output
        self.storage = storage
        self.run_id = run_id
        self.model_id = model_id
        self.anchor = anchor
        self.written_ref = written_ref

    def __call__(self, batch: pa.Table) -> pa.Table:
        written = shared(self.written_ref) if self.written_ref is not None else frozenset()
        keys = [
            row_key(i, m, lam)
            for i, m, lam in zip(
                batch.column("image_id").to_pylist(),
                batch.column("method").to_pylist(),
                batch.column("lam").to_pylist(),
            )
        ]
        # Model time counts whether or not its rows were already written (resume).
        timing = {
            "model_s": pc.sum(batch.column("_model_s")).as_py() if batch.num_rows else None,
            "model_start": pc.min(batch.column("_model_start")).as_py() if batch.num_rows else None,
            "model_end": pc.max(batch.column("_model_end")).as_py() if batch.num_rows else None,
            # The model's reading of the labels, likewise: every image a model call saw.
            "labelled": pc.sum(batch.column("_labelled")).as_py() if batch.num_rows else None,
            "correct": pc.sum(batch.column("_correct")).as_py() if batch.num_rows else None,
            "classes": pc.max(batch.column("_classes")).as_py() if batch.num_rows else None,
        }
        fresh = [key not in written for key in keys]
        skipped = len(keys) - sum(fresh)
        batch = batch.filter(pa.array(fresh, pa.bool_()))
        keys = [key for key, keep in zip(keys, fresh) if keep]
        forwards = int(pc.sum(batch.column("_forwards")).as_py() or 0) if batch.num_rows else 0
        summary = {"rows": batch.num_rows, "ok": 0, "errors": 0, "images": 0,
                   "forwards": forwards, "skipped": skipped, **timing}
        if batch.num_rows:
            table = self._to_output(batch)
            statuses = table.column("status").to_pylist()
            summary["ok"] = statuses.count("ok")
            summary["errors"] = statuses.count("error")
            anchor_method, anchor_lam = self.anchor
            summary["images"] = sum(
                1 for m, lam in zip(table.column("method").to_pylist(), table.column("lam").to_pylist())
                if m == anchor_method and lam == anchor_lam
            )
            self._write(table, keys)
        return pa.Table.from_pylist([summary], schema=self.SUMMARY_SCHEMA)

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
