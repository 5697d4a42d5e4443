"""DuckDB over a job's output: a view ``saliency`` over OUTPUT/saliency/**/*.parquet (and a
view ``runs`` over the run manifests when there are any).

For s3:// and gs:// outputs the fsspec filesystem is registered with DuckDB (its httpfs
extension cannot be downloaded on offline machines).
"""

from __future__ import annotations

import duckdb

from legx.pipeline.engine.manifest import RUNS_DIR
from legx.pipeline.engine.sink import SALIENCY_DIR
from legx.pipeline.engine.storage import StorageOptions, fsspec_filesystem, join, resolve, scheme_of


class EmptyOutputError(ValueError):
    """The output holds no saliency files."""


def _glob_target(output: str) -> str:
    scheme = scheme_of(output)
    base = join(output, SALIENCY_DIR) if scheme == "file" else output.rstrip("/") + "/" + SALIENCY_DIR
    return base + "/**/*.parquet"


def connect(output: str, storage: StorageOptions | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the view ``saliency``. Hive partitioning is off: every file
    carries its ``run_id`` column, in the run folders of today (OUTPUT/saliency/RUN_ID) and in
    the ``run_id=RUN_ID`` folders of outputs written by earlier versions alike."""
    storage = storage or StorageOptions()
    connection = duckdb.connect()
    if scheme_of(output) != "file":
        connection.register_filesystem(fsspec_filesystem(output, storage))
    filesystem, root = resolve(output, storage)
    import pyarrow.fs as pafs

    saliency_root = f"{root}/{SALIENCY_DIR}"
    if filesystem.get_file_info(saliency_root).type == pafs.FileType.NotFound:
        raise EmptyOutputError(f"no results under {output!r} (expected {SALIENCY_DIR}/ in it)")
    pattern = _glob_target(output).replace("'", "''")
    connection.execute(
        "create view saliency as select * from read_parquet("
        f"'{pattern}', hive_partitioning = false, union_by_name = true)"
    )
    runs_root = f"{root}/{RUNS_DIR}"
    if filesystem.get_file_info(runs_root).type != pafs.FileType.NotFound:
        runs = (join(output, RUNS_DIR) if scheme_of(output) == "file" else output.rstrip("/") + "/" + RUNS_DIR)
        runs = (runs + "/*.json").replace("'", "''")
        connection.execute(
            f"create view runs as select * from read_json('{runs}', union_by_name = true,"
            " maximum_object_size = 67108864)"
        )
    return connection


def run_query(output: str, sql: str, storage: StorageOptions | None = None):
    """The result of ``sql`` over the output, as a DuckDB relation-like result (columns, rows)."""
    connection = connect(output, storage)
    result = connection.execute(sql)
    columns = [description[0] for description in result.description or []]
    return columns, result.fetchall()
