"""What the report reads from a job's output: the method variants (a method and, for LEG-TV,
one lambda; per run when the output holds several), per-variant counts and metric means /
medians, metric values, the gallery's picks (best, worst and a random 'ok' row by one metric)
and the source images decoded as their job decoded them; ``Report``, what a written report
holds (returned to the caller). Everything goes through DuckDB
(``legx.pipeline.analysis.query.connect``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from legx.methods.metrics.catalogue import higher_is_better
from legx.pipeline.engine.manifest import read_manifest
from legx.pipeline.engine.storage import StorageOptions


@dataclass
class Variant:
    """One explanation method as configured: a method name and, for LEG-TV, one lambda."""

    method: str
    lam: float | None
    run_id: str | None = None

    @property
    def label(self) -> str:
        text = self.method if self.lam is None else f"{self.method} lam={self.lam:g}"
        return text if self.run_id is None else f"{text} [{self.run_id}]"

    def where(self) -> tuple[str, list[Any]]:
        """SQL condition (with ? parameters) selecting this variant's rows."""
        conditions = ["method = ?", "lam is null" if self.lam is None else "lam = ?"]
        values: list[Any] = [self.method] + ([] if self.lam is None else [self.lam])
        if self.run_id is not None:
            conditions.append("run_id = ?")
            values.append(self.run_id)
        return " and ".join(conditions), values


@dataclass
class Report:
    """What the report holds, returned to the caller (and printed by the CLI)."""

    path: str
    rows: int = 0
    ok: int = 0
    errors: int = 0
    variants: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    images: int = 0
    gallery: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def saliency_columns(connection) -> list[str]:
    return [row[0] for row in connection.execute("describe saliency").fetchall()]


def method_variants(connection, several_runs: bool) -> list[Variant]:
    run_column = "run_id" if several_runs else "null"
    rows = connection.execute(
        f"select distinct method, lam, {run_column} from saliency order by 3, 1, 2 nulls first"
    ).fetchall()
    return [Variant(method, lam, run_id) for method, lam, run_id in rows]


def finite_sql(column: str) -> str:
    return f"{column} is not null and not isnan({column})"


def variant_summary(connection, variants: list[Variant], metrics: list[str]) -> dict[str, dict]:
    """Per variant label: counts, and mean / median / n of every metric."""
    summary = {}
    for variant in variants:
        condition, values = variant.where()
        parts = ["count(*)", "count(*) filter (where status = 'ok')"]
        for metric in metrics:
            parts += [
                f"avg({metric}) filter (where {finite_sql(metric)})",
                f"median({metric}) filter (where {finite_sql(metric)})",
                f"count({metric}) filter (where {finite_sql(metric)})",
            ]
        row = connection.execute(
            f"select {', '.join(parts)} from saliency where {condition}", values
        ).fetchall()[0]
        entry = {"rows": row[0], "ok": row[1], "metrics": {}}
        for position, metric in enumerate(metrics):
            mean, median, count = row[2 + 3 * position : 5 + 3 * position]
            entry["metrics"][metric] = {"mean": mean, "median": median, "n": count}
        summary[variant.label] = entry
    return summary


def metric_values(connection, variant: Variant, metric: str) -> np.ndarray:
    condition, values = variant.where()
    rows = connection.execute(
        f"select {metric} from saliency where {condition} and status = 'ok' and {finite_sql(metric)}",
        values,
    ).fetchall()
    return np.array([row[0] for row in rows], dtype=np.float64)


# The columns a gallery or sensitivity row needs (created_at stays in SQL: timestamps with a
# time zone need pytz to reach Python).
ROW_COLUMNS = "run_id, image_id, source_uri, target, height, width, saliency"


def _metric_list(metric: str | None) -> str:
    return f", {metric}" if metric else ""


def row_dicts(result) -> list[dict]:
    columns = [description[0] for description in result.description]
    return [dict(zip(columns, row)) for row in result.fetchall()]


def gallery_rows(connection, variant: Variant, metric: str | None, seed: int) -> list[tuple[str, dict]]:
    """(caption, row) of the best, the worst and a random 'ok' row of the variant."""
    condition, values = variant.where()
    base = f"select {ROW_COLUMNS}{_metric_list(metric)} from saliency where {condition} and status = 'ok'"
    picks: list[tuple[str, dict]] = []
    if metric is not None:
        best_first = "desc" if higher_is_better(metric) else "asc"
        worst_first = "asc" if higher_is_better(metric) else "desc"
        for caption, direction in (("best", best_first), ("worst", worst_first)):
            rows = row_dicts(
                connection.execute(
                    f"{base} and {finite_sql(metric)} order by {metric} {direction}, image_id limit 1",
                    values,
                )
            )
            picks += [(caption, row) for row in rows]
    # The random image is one not shown already, when the variant has one.
    shown = [row["image_id"] for _, row in picks] or [""]
    placeholders = ", ".join("?" for _ in shown)
    rows = row_dicts(
        connection.execute(
            f"{base} order by image_id in ({placeholders}), hash(image_id || ?), image_id limit 1",
            values + shown + [str(seed)],
        )
    )
    picks += [("random", row) for row in rows]
    return picks


class SourceImages:
    """Source images decoded as their job decoded them (run manifest config), cached."""

    def __init__(self, output_uri: str, storage: StorageOptions) -> None:
        self.output_uri = output_uri
        self.storage = storage
        self._configs: dict[str, dict] = {}

    def config(self, run_id: str) -> dict:
        if run_id not in self._configs:
            manifest = read_manifest(self.output_uri, self.storage, run_id) or {}
            self._configs[run_id] = manifest.get("config", {})
        return self._configs[run_id]

    def load(self, row: dict) -> np.ndarray:
        """uint8 (size, size, 3); raises on anything that keeps the image from being read."""
        from legx.pipeline.analysis.show import load_source_image

        return load_source_image(row["source_uri"], self.storage, self.config(row["run_id"]))


def row_map(row: dict) -> np.ndarray:
    return np.asarray(row["saliency"], dtype=np.float32).reshape(row["height"], row["width"])
