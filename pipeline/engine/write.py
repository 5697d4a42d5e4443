"""The write stage: Ray Data's ``Datasink`` over the job's Parquet files (``legx.pipeline.engine.sink``).

Ray Data calls ``write`` once per write task with the task's blocks (at least
``rows_per_file`` rows, as ``min_rows_per_write`` asks), and ``on_write_complete`` once on the
driver with every write's return value: here the ``WriteCounts`` of what each write wrote and
saw, added up into ``totals``, this invocation's counts and model timing for the summary and the
run manifest. A storage fault that outlives a write's retries comes back in its counts
(``WriteCounts.failure``) rather than as an exception, so that the job ends with that fault's
one line (``legx.pipeline.engine.run``) instead of Ray Data's report of a failed task.

The sink's guarantees hold as they did when the writer was a ``map_batches`` stage: a write task
is an ordinary Ray Data map task (Ray plans it as a ``MapOperator``, retried like any other),
and a retried one gets the same blocks, so it writes the same rows under the same file names;
rows already written are dropped in ``ParquetWriter`` (resume, one row per key). Ray names the
write tasks ``Write`` (``MapBatches(...)->Write`` when fused with the stage before it, as it is
when their resources agree), and its progress output shows them as it shows the other stages.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
from ray.data import Datasink
from ray.data.block import BlockAccessor
from ray.data.datasource.datasink import WriteResult

from legx.pipeline.engine.sink import ParquetWriter, WriteCounts
from legx.pipeline.engine.storage_retry import StorageError


class SaliencySink(Datasink):
    """Writes the stage rows through ``writer``; ``totals`` once the write completes."""

    def __init__(self, writer: ParquetWriter) -> None:
        self.writer = writer
        self.totals = WriteCounts()

    @property
    def min_rows_per_write(self) -> int | None:
        return self.writer.rows_per_file

    def get_name(self) -> str:
        return "Saliency"

    def write(self, blocks: Iterable, ctx) -> WriteCounts:
        tables = [BlockAccessor.for_block(block).to_arrow() for block in blocks]
        tables = [table for table in tables if table.num_rows]
        if not tables:
            return WriteCounts()
        try:
            return self.writer.write(pa.concat_tables(tables, promote_options="default"))
        except StorageError as error:
            return WriteCounts(failure=error.as_dict())

    def on_write_complete(self, write_result: WriteResult[WriteCounts]) -> None:
        self.totals = sum(write_result.write_returns, WriteCounts())
