"""``legx compare OUTPUT_A OUTPUT_B [-o DIR]``: how explanations moved between two outputs.

For scheduled audits (a new model version against the last one, a rerun against a baseline):
maps are matched by (image_id, method, lam) among the 'ok' rows of both outputs (the newest row
of a key when an output holds several runs). Per matched pair: the Spearman rank correlation of
the two maps (B upsampled to A's grid when the grids differ), whether the explained class
changed, and every metric both outputs hold, with its shift B - A (and, for ROAD, both sides'
stored curves). Per method: the number of
pairs, mean and median correlation, how many targets changed and the mean shift of each metric,
each mean with its 95% interval over the matched images (``legx.pipeline.analysis.estimates``: Wilson for the
rate of changed targets and the pointing game, a seeded bootstrap otherwise), and each metric's
mean on A and on B with the chance level of the localisation metrics (the region's mean share
of the image) where both outputs store ``region_share``. The pairs whose maps moved most
(lowest correlation) are listed.

Written to DIR (local or object storage): ``pairs.parquet`` (one row per matched pair) and
``summary.json`` (what ``compare_runs`` returns); ``legx report --compare DIR`` shows it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from legx.methods.resize import upsample_maps
from legx.methods.metrics.catalogue import METRICS_BY_NAME, metric_names
from legx.methods.metrics.intervals import mean_estimate, rate_estimate
from legx.pipeline.analysis.estimates import column_estimate
from legx.pipeline.analysis.query import connect
from legx.pipeline.analysis.report_data import Variant
from legx.pipeline.engine.schema import REGION_SHARE
from legx.pipeline.analysis.sanity import spearman_rows
from legx.pipeline.engine.storage import StorageOptions, resolve, write_bytes_atomic

PAIRS_FILE = "pairs.parquet"
SUMMARY_FILE = "summary.json"


def _latest_ok(connection, metrics: list[str], method: str) -> pa.Table:
    # ``metrics`` may include REGION_SHARE: it travels like a metric column.
    """The newest 'ok' row per (image_id, lam) of one method, with its map and metrics."""
    extra = "".join(f", {name}" for name in metrics)
    return connection.sql(
        "select image_id, lam, target, height, width, saliency" + extra + " from saliency"
        " where status = 'ok' and method = ?"
        " qualify row_number() over (partition by image_id, lam order by created_at desc) = 1",
        params=[method],
    ).to_arrow_table()


def _columns(connection) -> set[str]:
    return {row[0] for row in connection.execute("describe saliency").fetchall()}


def _maps(column: pa.ChunkedArray, heights: np.ndarray, widths: np.ndarray) -> list[np.ndarray]:
    return [
        np.asarray(values, dtype=np.float32).reshape(int(height), int(width))
        for values, height, width in zip(column.to_pylist(), heights, widths)
    ]


def _pair_correlations(maps_a: list[np.ndarray], maps_b: list[np.ndarray]) -> np.ndarray:
    correlations = np.empty(len(maps_a))
    for index, (map_a, map_b) in enumerate(zip(maps_a, maps_b)):
        if map_b.shape != map_a.shape:
            map_b = upsample_maps(map_b, *map_a.shape)
        correlations[index] = spearman_rows(map_a[None], map_b[None])[0]
    return correlations


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def compare_runs(
    output_a: str,
    output_b: str,
    out_dir: str,
    storage: StorageOptions | None = None,
    top_k: int = 20,
) -> dict:
    """Compare two outputs, write ``pairs.parquet`` and ``summary.json`` to ``out_dir`` and
    return the summary: {output_a, output_b, matched, only_a, only_b, metrics, methods: {label:
    {method, lam, pairs, spearman_mean, spearman_median, target_changed, metric_shift: {metric:
    mean B - A}}}, moved_most: [{image_id, method, lam, spearman, target_a, target_b}, ...]}."""
    storage = storage or StorageOptions()
    side_a, side_b = connect(output_a, storage), connect(output_b, storage)
    shared_columns = _columns(side_a) & _columns(side_b)
    metrics = [name for name in metric_names() if name in shared_columns]
    curves = [curve for name in metrics for curve in METRICS_BY_NAME[name].curve_columns
              if curve in shared_columns]
    carried = metrics + curves + ([REGION_SHARE] if REGION_SHARE in shared_columns else [])
    method_rows = side_a.execute("select distinct method from saliency where status = 'ok'").fetchall()
    method_rows += side_b.execute("select distinct method from saliency where status = 'ok'").fetchall()
    methods = sorted({row[0] for row in method_rows})

    joiner = duckdb.connect()
    pair_tables: list[pa.Table] = []
    only_a = only_b = 0
    for method in methods:
        joiner.register("a", _latest_ok(side_a, carried, method))
        joiner.register("b", _latest_ok(side_b, carried, method))
        only_a += joiner.execute(
            "select count(*) from a anti join b on a.image_id = b.image_id"
            " and a.lam is not distinct from b.lam"
        ).fetchall()[0][0]
        only_b += joiner.execute(
            "select count(*) from b anti join a on a.image_id = b.image_id"
            " and a.lam is not distinct from b.lam"
        ).fetchall()[0][0]
        metric_columns = "".join(f", a.{m} as {m}_a, b.{m} as {m}_b" for m in carried)
        matched = joiner.sql(
            "select a.image_id, a.lam, a.target as target_a, b.target as target_b,"
            " a.height as height_a, a.width as width_a, a.saliency as saliency_a,"
            " b.height as height_b, b.width as width_b, b.saliency as saliency_b"
            + metric_columns
            + " from a join b on a.image_id = b.image_id and a.lam is not distinct from b.lam"
            " order by a.image_id, a.lam"
        ).to_arrow_table()
        joiner.unregister("a")
        joiner.unregister("b")
        if matched.num_rows == 0:
            continue
        maps_a = _maps(matched["saliency_a"], matched["height_a"].to_numpy(), matched["width_a"].to_numpy())
        maps_b = _maps(matched["saliency_b"], matched["height_b"].to_numpy(), matched["width_b"].to_numpy())
        columns: dict[str, Any] = {
            "image_id": matched["image_id"],
            "method": pa.array([method] * matched.num_rows, pa.string()),
            "lam": matched["lam"],
            "spearman": pa.array(_pair_correlations(maps_a, maps_b), pa.float64()),
            "target_a": matched["target_a"],
            "target_b": matched["target_b"],
        }
        for metric in metrics:
            before = matched[f"{metric}_a"].to_numpy(zero_copy_only=False).astype(np.float64)
            after = matched[f"{metric}_b"].to_numpy(zero_copy_only=False).astype(np.float64)
            columns[f"{metric}_a"] = pa.array(before, pa.float64(), from_pandas=True)
            columns[f"{metric}_b"] = pa.array(after, pa.float64(), from_pandas=True)
            columns[f"{metric}_shift"] = pa.array(after - before, pa.float64(), from_pandas=True)
        for curve in curves:
            for side in ("a", "b"):
                columns[f"{curve}_{side}"] = matched[f"{curve}_{side}"].cast(pa.list_(pa.float32()))
        if REGION_SHARE in carried:
            for side in ("a", "b"):
                shares = matched[f"{REGION_SHARE}_{side}"].to_numpy(zero_copy_only=False)
                columns[f"{REGION_SHARE}_{side}"] = pa.array(shares.astype(np.float64), pa.float64(),
                                                             from_pandas=True)
        pair_tables.append(pa.table(columns))

    pairs = (pa.concat_tables(pair_tables) if pair_tables
             else _empty_pairs(metrics, curves, REGION_SHARE in carried))
    summary = {
        "output_a": output_a,
        "output_b": output_b,
        "matched": pairs.num_rows,
        "only_a": only_a,
        "only_b": only_b,
        "metrics": metrics,
        "methods": _per_method(joiner, pairs, metrics),
        "moved_most": _moved_most(joiner, pairs, top_k),
    }
    summary = _clean(summary)
    _write(out_dir, storage, pairs, summary)
    return summary


def _empty_pairs(metrics: list[str], curves: list[str], with_shares: bool) -> pa.Table:
    fields = [("image_id", pa.string()), ("method", pa.string()), ("lam", pa.float64()),
              ("spearman", pa.float64()), ("target_a", pa.int64()), ("target_b", pa.int64())]
    fields += [(f"{m}_{suffix}", pa.float64()) for m in metrics for suffix in ("a", "b", "shift")]
    fields += [(f"{curve}_{side}", pa.list_(pa.float32())) for curve in curves for side in ("a", "b")]
    if with_shares:
        fields += [(f"{REGION_SHARE}_{side}", pa.float64()) for side in ("a", "b")]
    return pa.schema(fields).empty_table()


def _per_method(joiner, pairs: pa.Table, metrics: list[str]) -> dict[str, dict]:
    joiner.register("pairs", pairs)
    shifts = "".join(
        f", avg({m}_shift) filter (where {m}_shift is not null and not isnan({m}_shift))" for m in metrics
    )
    rows = joiner.execute(
        "select method, lam, count(*), avg(spearman) filter (where not isnan(spearman)),"
        " median(spearman) filter (where not isnan(spearman)),"
        " count(*) filter (where target_a != target_b)" + shifts
        + " from pairs group by method, lam order by method, lam nulls first"
    ).fetchall()
    joiner.unregister("pairs")
    result = {}
    for method, lam, count, mean, median, changed, *metric_shifts in rows:
        result[Variant(method, lam).label] = {
            "method": method,
            "lam": lam,
            "pairs": count,
            "spearman_mean": mean,
            "spearman_median": median,
            "target_changed": changed,
            "metric_shift": dict(zip(metrics, metric_shifts)),
            **_intervals(pairs, method, lam, metrics),
        }
    return result


def _intervals(pairs: pa.Table, method: str, lam: float | None, metrics: list[str]) -> dict:
    """The 95% intervals of one variant's per-method aggregates over its matched pairs:
    spearman_interval, target_changed_rate, metric_shift_interval, and metric_a / metric_b
    (mean, low, high, n, chance) of every metric."""
    chosen = np.array([m == method and (lam_ == lam) for m, lam_ in zip(
        pairs["method"].to_pylist(), pairs["lam"].to_pylist())], dtype=bool)

    def column(name: str) -> np.ndarray:
        values = pairs[name].to_numpy(zero_copy_only=False).astype(np.float64)
        return values[chosen]

    spearman = mean_estimate(column("spearman"))
    changed = column("target_a") != column("target_b")
    names = set(pairs.column_names)
    entry: dict[str, Any] = {
        "spearman_interval": [spearman.low, spearman.high],
        "target_changed_rate": rate_estimate(changed.astype(np.float64)).as_dict(),
        "metric_shift_interval": {},
        "metric_a": {},
        "metric_b": {},
    }
    for metric in metrics:
        shift = mean_estimate(column(f"{metric}_shift"))
        entry["metric_shift_interval"][metric] = [shift.low, shift.high]
        for side in ("a", "b"):
            shares = column(f"{REGION_SHARE}_{side}") if f"{REGION_SHARE}_{side}" in names else None
            estimate = column_estimate(metric, column(f"{metric}_{side}"), shares)
            entry[f"metric_{side}"][metric] = estimate.as_dict()
    return entry


def _moved_most(joiner, pairs: pa.Table, top_k: int) -> list[dict]:
    joiner.register("pairs", pairs)
    result = joiner.execute(
        "select image_id, method, lam, spearman, target_a, target_b from pairs"
        " order by isnan(spearman), spearman, image_id, method limit ?",
        [top_k],
    )
    columns = [description[0] for description in result.description]
    rows = [dict(zip(columns, row)) for row in result.fetchall()]
    joiner.unregister("pairs")
    return rows


def _write(out_dir: str, storage: StorageOptions, pairs: pa.Table, summary: dict) -> None:
    _, root = resolve(out_dir, storage)
    sink = pa.BufferOutputStream()
    pq.write_table(pairs, sink)
    write_bytes_atomic(out_dir, storage, f"{root}/{PAIRS_FILE}", sink.getvalue().to_pybytes())
    write_bytes_atomic(out_dir, storage, f"{root}/{SUMMARY_FILE}", json.dumps(summary, indent=2).encode())


def read_summary(out_dir: str, storage: StorageOptions | None = None) -> dict:
    """The ``summary.json`` that ``compare_runs`` wrote to ``out_dir``."""
    filesystem, root = resolve(out_dir, storage or StorageOptions())
    with filesystem.open_input_stream(f"{root}/{SUMMARY_FILE}") as stream:
        return json.loads(stream.read())
