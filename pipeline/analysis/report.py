"""``legx report OUTPUT [-o report.html]``: one self-contained HTML file about a job's output.

Sections: the runs; the model's top-1 accuracy against the labels per run (with a warning when
it is not above chance); a per-method summary (the LEG paper's key-size table, mean / median per
background, then deletion, insertion, Gini, pointing game, mask energy); metric distributions;
a gallery of image / map overlays per method (best, worst and a random image by one metric);
the sanity-check curves (when OUTPUT/sanity/ holds rows); the sensitivity curves of the LEG
paper (only with a model: log-odds of the explained class relative to the clean image as the
top alpha of pixels by |saliency| are replaced, per background and method, averaged over a few
images); the comparison with another output (when given); and the error rows.

Everything is read with DuckDB (``pipeline.analysis.query.connect``: local paths or s3:// / gs://), plots
are drawn with matplotlib's Agg canvas, and images are embedded as base64 PNG, so the file opens
anywhere without the output or a network.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from methods.resize import upsample_maps
from methods.metric_names import BACKGROUNDS, HIGHER_IS_BETTER, METRIC_NAMES, SENSITIVITY_ALPHAS
from pipeline.analysis.query import connect
from pipeline.analysis.report_trust import trust_section
from pipeline.engine.manifest import read_manifest
from pipeline.engine.storage import StorageOptions, join, resolve, scheme_of

SANITY_DIR = "sanity"
# The metric that orders the gallery: the first of these the output holds.
GALLERY_METRICS = ("key_size_mean", "deletion_auc", "insertion_auc", "mask_energy", "gini")
MAX_ERROR_ROWS = 200


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


# ---------------------------------------------------------------------------------------------
# HTML helpers


def _escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str = "") -> str:
    head = "".join(f"<th>{_escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_escape(_number(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    identifier = f' id="{_escape(table_id)}"' if table_id else ""
    return f"<table{identifier}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure_html(figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_escape(alt)}" src="data:image/png;base64,{encoded}">'


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    # Figure() draws on the Agg canvas without pyplot's global state or a display.
    return Figure(figsize=(width, height))


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } .note { color: #555; font-style: italic; }
"""


# ---------------------------------------------------------------------------------------------
# data


def _columns(connection) -> list[str]:
    return [row[0] for row in connection.execute("describe saliency").fetchall()]


def _variants(connection, several_runs: bool) -> list[Variant]:
    run_column = "run_id" if several_runs else "null"
    rows = connection.execute(
        f"select distinct method, lam, {run_column} from saliency order by 3, 1, 2 nulls first"
    ).fetchall()
    return [Variant(method, lam, run_id) for method, lam, run_id in rows]


def _finite(column: str) -> str:
    return f"{column} is not null and not isnan({column})"


def _summary(connection, variants: list[Variant], metrics: list[str]) -> dict[str, dict]:
    """Per variant label: counts, and mean / median / n of every metric."""
    summary = {}
    for variant in variants:
        condition, values = variant.where()
        parts = ["count(*)", "count(*) filter (where status = 'ok')"]
        for metric in metrics:
            parts += [
                f"avg({metric}) filter (where {_finite(metric)})",
                f"median({metric}) filter (where {_finite(metric)})",
                f"count({metric}) filter (where {_finite(metric)})",
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


def _metric_values(connection, variant: Variant, metric: str) -> np.ndarray:
    condition, values = variant.where()
    rows = connection.execute(
        f"select {metric} from saliency where {condition} and status = 'ok' and {_finite(metric)}",
        values,
    ).fetchall()
    return np.array([row[0] for row in rows], dtype=np.float64)


# The columns a gallery or sensitivity row needs (created_at stays in SQL: timestamps with a
# time zone need pytz to reach Python).
_ROW_COLUMNS = "run_id, image_id, source_uri, target, height, width, saliency"


def _metric_list(metric: str | None) -> str:
    return f", {metric}" if metric else ""


def _row_dicts(result) -> list[dict]:
    columns = [description[0] for description in result.description]
    return [dict(zip(columns, row)) for row in result.fetchall()]


def _gallery_rows(connection, variant: Variant, metric: str | None, seed: int) -> list[tuple[str, dict]]:
    """(caption, row) of the best, the worst and a random 'ok' row of the variant."""
    condition, values = variant.where()
    base = f"select {_ROW_COLUMNS}{_metric_list(metric)} from saliency where {condition} and status = 'ok'"
    picks: list[tuple[str, dict]] = []
    if metric is not None:
        best_first = "desc" if HIGHER_IS_BETTER[metric] else "asc"
        worst_first = "asc" if HIGHER_IS_BETTER[metric] else "desc"
        for caption, direction in (("best", best_first), ("worst", worst_first)):
            rows = _row_dicts(
                connection.execute(
                    f"{base} and {_finite(metric)} order by {metric} {direction}, image_id limit 1",
                    values,
                )
            )
            picks += [(caption, row) for row in rows]
    # The random image is one not shown already, when the variant has one.
    shown = [row["image_id"] for _, row in picks] or [""]
    placeholders = ", ".join("?" for _ in shown)
    rows = _row_dicts(
        connection.execute(
            f"{base} order by image_id in ({placeholders}), hash(image_id || ?), image_id limit 1",
            values + shown + [str(seed)],
        )
    )
    picks += [("random", row) for row in rows]
    return picks


class _SourceImages:
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
        from pipeline.analysis.show import load_source_image

        return load_source_image(row["source_uri"], self.storage, self.config(row["run_id"]))


def _row_map(row: dict) -> np.ndarray:
    return np.asarray(row["saliency"], dtype=np.float32).reshape(row["height"], row["width"])


# ---------------------------------------------------------------------------------------------
# sections


def _runs_section(connection) -> str:
    rows = connection.execute(
        "select run_id, model_id, count(distinct image_id), count(*),"
        " count(*) filter (where status = 'ok'), count(*) filter (where status = 'error'),"
        " strftime(min(created_at), '%Y-%m-%d %H:%M:%S'), strftime(max(created_at), '%Y-%m-%d %H:%M:%S')"
        " from saliency group by run_id, model_id order by 7, 1"
    ).fetchall()
    header = ["run", "model", "images", "rows", "ok", "errors", "first row (UTC)", "last row (UTC)"]
    return "<h2>Runs</h2>" + _table(header, rows, "runs")


def _model_reading_section(connection, output_uri: str, storage: StorageOptions, report: Report) -> str:
    """Each run's top-1 accuracy against the labels (the run manifest's ``top1``), its 95%
    interval and chance; a loud line for a run whose model reads the inputs no better than
    chance. Empty when no run had labels."""
    rows, warnings = [], []
    run_ids = [row[0] for row in connection.execute("select distinct run_id from saliency order by 1").fetchall()]
    for run_id in run_ids:
        manifest = read_manifest(output_uri, storage, run_id) or {}
        reading = manifest.get("top1")
        if not reading:
            continue
        low, high = reading["interval_95"]
        rows.append([run_id, manifest.get("model_id"), manifest.get("config", {}).get("image_size"),
                     manifest.get("model_input_size"), f"{reading['correct']} / {reading['labelled']}",
                     _number(reading["accuracy"]), f"{_number(low)} - {_number(high)}",
                     _number(reading["chance"]), "NOT above chance" if reading["near_chance"] else "above chance"])
        if reading["near_chance"]:
            warnings.append(
                f"Run {run_id}: the model's top-1 accuracy against the labels, {reading['accuracy']:.2f}"
                f" (95% interval {low:.2f}-{high:.2f}), is not above chance ({reading['chance']:.2f}):"
                " its maps explain a model that does not recognise these images."
            )
    if not rows:
        return ""
    report.notes.extend(warnings)
    header = ["run", "model", "image size", "model's input size", "top-1 correct / labelled", "accuracy",
              "95% interval (Wilson)", "chance (1 / classes)", "verdict"]
    loud = "".join(f'<p style="color: #b00000; font-weight: bold">{_escape(text)}</p>' for text in warnings)
    return "<h2>Model accuracy on the labelled inputs</h2>" + loud + _table(header, rows, "model-accuracy")


def _summary_section(summary: dict[str, dict], metrics: list[str]) -> str:
    parts = ["<h2>Summary per method</h2>"]
    key_sizes = [f"key_size_{name}" for name in BACKGROUNDS if f"key_size_{name}" in metrics]
    if key_sizes:
        header = ["method", "maps"] + [name.removeprefix("key_size_") for name in key_sizes]
        rows = [
            [label, entry["ok"]]
            + [
                f"{_number(entry['metrics'][m]['mean'])} / {_number(entry['metrics'][m]['median'])}"
                for m in key_sizes
            ]
            for label, entry in summary.items()
        ]
        parts.append(
            "<h3>Key size (mean / median; fraction of pixels, by |saliency|, whose replacement by"
            " the background changes the top-1 class; 1 if none; lower is better)</h3>"
        )
        parts.append(_table(header, rows, "key-size"))
    others = [m for m in metrics if m not in key_sizes]
    if others:
        header = ["method", "maps"]
        for metric in others:
            arrow = "↑" if HIGHER_IS_BETTER[metric] else "↓"
            header += [f"{metric} {arrow} mean", "median"]
        rows = [
            [label, entry["ok"]]
            + [
                value
                for m in others
                for value in (entry["metrics"][m]["mean"], entry["metrics"][m]["median"])
            ]
            for label, entry in summary.items()
        ]
        parts.append("<h3>Faithfulness, sparseness and localisation</h3>")
        parts.append(_table(header, rows, "metrics"))
    if not metrics:
        parts.append('<p class="note">No metric columns in this output: the job ran without'
                     " metrics (set <code>metrics</code> in the job config).</p>")
    return "".join(parts)


def _estimates_section(connection, variants: list[Variant], metrics: list[str], columns: list[str]) -> str:
    """Every per-method mean with its 95% interval over images, and the chance level beside the
    localisation metrics (``pipeline.analysis.estimates``)."""
    from methods.metric_names import LOCALISATION_METRICS
    from pipeline.analysis.estimates import variant_estimates

    if not metrics:
        return ""
    localised = [m for m in metrics if m in LOCALISATION_METRICS]
    header = ["method"] + [f"{m} {'↑' if HIGHER_IS_BETTER[m] else '↓'}" for m in metrics]
    header += ["chance (localisation)"] if localised else []
    rows = []
    for variant in variants:
        condition, values = variant.where()
        estimates = variant_estimates(connection, condition, values, metrics, columns)
        row = [variant.label] + [f"{estimates[m].text()} (n={estimates[m].n})" for m in metrics]
        if localised:
            row.append(_number(estimates[localised[0]].chance))
        rows.append(row)
    return (
        "<h3>Means with 95% intervals over images</h3><p>Mean [95% interval] (n images): the"
        " pointing game, a per-image share of the map's maximal pixels inside the region, with"
        " Wilson's interval on the expected count of hits; every other mean with a seeded bootstrap"
        " interval. Chance: the ground-truth region's mean share of the image, the score of a map"
        " that knows nothing on both the pointing game and the mass in the region.</p>"
        + _table(header, rows, "intervals")
    )


def _distribution_section(connection, variants: list[Variant], metrics: list[str], report: Report) -> str:
    shown = []
    for metric in metrics:
        data = [(variant.label, _metric_values(connection, variant, metric)) for variant in variants]
        data = [(label, values) for label, values in data if values.size]
        if data:
            shown.append((metric, data))
    if not shown:
        return ""
    columns = min(3, len(shown))
    rows = -(-len(shown) // columns)
    height_per_row = 0.5 + 0.35 * len(variants)
    figure = _new_figure(5 * columns, max(2.2, height_per_row) * rows)
    for position, (metric, data) in enumerate(shown, start=1):
        axes = figure.add_subplot(rows, columns, position)
        axes.boxplot([values for _, values in data], orientation="horizontal", tick_labels=[label for label, _ in data])
        axes.set_title(metric, fontsize=9)
        axes.tick_params(labelsize=7)
    figure.tight_layout()
    report.images += 1
    return "<h2>Metric distributions</h2>" + _figure_html(figure, "metric distributions")


def _gallery_section(connection, variants: list[Variant], metrics: list[str], sources: _SourceImages,
                     seed: int, report: Report) -> str:
    metric = next((m for m in GALLERY_METRICS if m in metrics), None)
    parts = ["<h2>Gallery</h2>"]
    parts.append(
        f"<p>Best, worst and a random image per method by <code>{_escape(metric)}</code>.</p>"
        if metric
        else '<p class="note">No metric to rank by: a random image per method.</p>'
    )
    unreadable: list[str] = []
    for variant in variants:
        picks = _gallery_rows(connection, variant, metric, seed)
        if not picks:
            continue
        report.gallery[variant.label] = [(caption, row["image_id"]) for caption, row in picks]
        figure = _new_figure(3.0 * len(picks), 6.0)
        for position, (caption, row) in enumerate(picks):
            overlay_axes = figure.add_subplot(2, len(picks), position + 1)
            map_axes = figure.add_subplot(2, len(picks), len(picks) + position + 1)
            saliency = np.abs(_row_map(row))
            try:
                image = sources.load(row)
            except Exception as error:  # noqa: BLE001 - any unreadable source shows the map alone
                unreadable.append(f"{row['image_id']}: {type(error).__name__}: {error}")
                image = None
            if image is not None:
                overlay_axes.imshow(image)
                overlay_axes.imshow(upsample_maps(saliency, *image.shape[:2]), cmap="jet", alpha=0.5)
            else:
                overlay_axes.text(0.5, 0.5, "image unavailable", ha="center", va="center", fontsize=8)
            map_axes.imshow(saliency, cmap="jet")
            score = f"\n{metric}={_number(row.get(metric))}" if metric else ""
            overlay_axes.set_title(f"{caption}: {row['image_id']}{score}", fontsize=8)
            overlay_axes.set_axis_off()
            map_axes.set_title("|map|", fontsize=8)
            map_axes.set_axis_off()
        figure.tight_layout()
        report.images += 1
        parts.append(f"<h3>{_escape(variant.label)}</h3>" + _figure_html(figure, f"gallery {variant.label}"))
    if unreadable:
        note = f"{len(unreadable)} source image(s) could not be read; their maps are shown alone"
        report.notes.append(note)
        parts.append(f'<p class="note">{_escape(note)}: {_escape("; ".join(unreadable[:5]))}</p>')
    return "".join(parts)


def _sanity_uri(output_uri: str) -> str:
    return join(output_uri, SANITY_DIR) if scheme_of(output_uri) == "file" else (
        output_uri.rstrip("/") + "/" + SANITY_DIR
    )


def _sanity_section(connection, output_uri: str, storage: StorageOptions, report: Report) -> str:
    filesystem, root = resolve(output_uri, storage)
    if filesystem.get_file_info(f"{root}/{SANITY_DIR}").type == pafs.FileType.NotFound:
        note = "no sanity-check rows (run the sanity mode to fill OUTPUT/sanity/)"
        report.notes.append(note)
        return f'<h2>Sanity check</h2><p class="note">{_escape(note)}.</p>'
    pattern = (_sanity_uri(output_uri) + "/*.parquet").replace("'", "''")
    rows = connection.execute(
        "select method, lam, layer_index, any_value(layer), avg(spearman), avg(spearman_abs), count(*)"
        f" from read_parquet('{pattern}', union_by_name = true)"
        " group by method, lam, layer_index order by method, lam nulls first, layer_index"
    ).fetchall()
    curves: dict[str, list[tuple]] = {}
    for method, lam, layer_index, layer, signed, magnitude, count in rows:
        label = Variant(method, lam).label
        curves.setdefault(label, []).append((layer_index, layer, signed, magnitude, count))
    figure = _new_figure(11, 3.6)
    for position, (title, column) in enumerate((("Spearman (signed maps)", 2), ("Spearman (|maps|)", 3)), 1):
        axes = figure.add_subplot(1, 2, position)
        for label, points in curves.items():
            # layer_index 0 is the trained model: correlation 1 by definition.
            xs = [0] + [p[0] for p in points]
            ys = [1.0] + [np.nan if p[column] is None else p[column] for p in points]
            axes.plot(xs, ys, marker="o", label=label)
        longest = max(curves.values(), key=len)
        axes.set_xticks([0] + [p[0] for p in longest])
        axes.set_xticklabels(["trained"] + [str(p[1]) for p in longest], rotation=60, fontsize=7)
        axes.set_ylim(-1.05, 1.05)
        axes.axhline(0.0, color="#999", linewidth=0.8)
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("randomised down to layer", fontsize=8)
    axes.legend(fontsize=7)
    figure.tight_layout()
    report.images += 1
    table = _table(
        ["method", "layers randomised", "down to", "mean Spearman", "mean Spearman |map|", "images"],
        [(label, *point) for label, points in curves.items() for point in points],
        "sanity",
    )
    return (
        "<h2>Sanity check (cascading randomisation)</h2><p>Layers re-initialised from the output"
        " down; a method that depends on the model shows falling correlation.</p>"
        + _figure_html(figure, "sanity curves")
        + table
    )


def _sensitivity_section(connection, variants: list[Variant], model, sources: _SourceImages,
                         n_images: int, seed: int, report: Report) -> str:
    header = "<h2>Sensitivity analysis</h2>"
    if model is None:
        note = "sensitivity curves need the model: pass --model SPEC (model_spec=...)"
        report.notes.append(note)
        return f'{header}<p class="note">{_escape(note)}.</p>'
    import torch

    from methods.metrics import sensitivity_curve

    ids = [
        row[0]
        for row in connection.execute(
            "select image_id from saliency where status = 'ok' group by image_id"
            " order by hash(image_id || ?), image_id limit ?",
            [str(seed), n_images],
        ).fetchall()
    ]
    curves: dict[str, dict[str, list[np.ndarray]]] = {}
    failures: list[str] = []
    for variant in variants:
        condition, values = variant.where()
        for image_id in ids:
            rows = _row_dicts(connection.execute(
                f"select {_ROW_COLUMNS} from saliency where {condition} and status = 'ok'"
                " and image_id = ? limit 1",
                values + [image_id],
            ))
            if not rows:
                continue
            row = rows[0]
            try:
                pixels = sources.load(row)
            except Exception as error:  # noqa: BLE001 - reported below, the image is skipped
                failures.append(f"{image_id}: {type(error).__name__}: {error}")
                continue
            image = torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 255.0
            for background in BACKGROUNDS:
                curve = sensitivity_curve(model, image, _row_map(row), int(row["target"]), background,
                                          seed=seed)
                curves.setdefault(variant.label, {}).setdefault(background, []).append(curve)
    if not curves:
        note = "no source image could be read for the sensitivity curves"
        report.notes.append(note)
        return f'{header}<p class="note">{_escape(note)}: {_escape("; ".join(failures[:5]))}</p>'
    figure = _new_figure(12, 6.5)
    for position, background in enumerate(BACKGROUNDS, start=1):
        axes = figure.add_subplot(2, 3, position)
        for label, per_background in curves.items():
            axes.plot(SENSITIVITY_ALPHAS, np.mean(per_background[background], axis=0), label=label)
        axes.set_title(background, fontsize=9)
        axes.set_xlabel("alpha (fraction replaced)", fontsize=8)
        axes.set_ylabel("log-odds change", fontsize=8)
        axes.tick_params(labelsize=7)
    axes.legend(fontsize=7)
    figure.tight_layout()
    report.images += 1
    counts = {label: len(per_background[BACKGROUNDS[0]]) for label, per_background in curves.items()}
    text = ", ".join(f"{label}: {count}" for label, count in counts.items())
    return (
        f"{header}<p>Log-odds of the explained class relative to the clean image as the top alpha"
        f" of pixels by |saliency| are replaced; a steeper fall is a more faithful map. Images per"
        f" method: {_escape(text)}.</p>" + _figure_html(figure, "sensitivity curves")
    )


def _low_high(estimate: dict | None) -> list | None:
    return None if not estimate else [estimate.get("low"), estimate.get("high")]


def _bounds(bounds: list | None) -> str:
    """'[low, high]' of an interval in a compare summary; '–' where there is none."""
    if not bounds or bounds[0] is None or bounds[1] is None:
        return "–"
    return f"[{_number(bounds[0])}, {_number(bounds[1])}]"


def _comparison_section(compare_dir: str, storage: StorageOptions) -> str:
    from pipeline.analysis.compare import read_summary

    summary = read_summary(compare_dir, storage)
    labels = list(summary["methods"])
    rows = [
        [label, entry["pairs"], entry["spearman_mean"], _bounds(entry.get("spearman_interval")),
         entry["spearman_median"], entry["target_changed"],
         _bounds(_low_high(entry.get("target_changed_rate")))]
        for label, entry in summary["methods"].items()
    ]
    header = ["method", "matched maps", "mean Spearman", "95% interval", "median Spearman",
              "target changed", "rate 95% interval"]
    shifts = [
        [metric] + [
            f"{_number(summary['methods'][label]['metric_shift'].get(metric))} "
            f"{_bounds(summary['methods'][label].get('metric_shift_interval', {}).get(metric))}"
            for label in labels
        ]
        for metric in summary["metrics"]
    ]
    sides = [
        [label, metric] + [
            f"{_number(estimate.get('mean'))} {_bounds(_low_high(estimate))}"
            for estimate in (entry.get("metric_a", {}).get(metric, {}), entry.get("metric_b", {}).get(metric, {}))
        ] + [_number(entry.get("metric_a", {}).get(metric, {}).get("chance"))]
        for label, entry in summary["methods"].items()
        for metric in summary["metrics"]
    ]
    moved = [
        [item["image_id"], Variant(item["method"], item["lam"]).label, item["spearman"], item["target_a"],
         item["target_b"]]
        for item in summary["moved_most"]
    ]
    return (
        f"<h2>Comparison</h2><p>{_escape(summary['output_a'])} (A) vs {_escape(summary['output_b'])} (B):"
        f" {summary['matched']} matched maps, {summary['only_a']} only in A, {summary['only_b']} only"
        " in B.</p>"
        + _table(header, rows, "compare")
        + "<h3>Metric shifts (mean of B − A [95% bootstrap interval over the matched images])</h3>"
        + _table(["metric"] + labels, shifts, "compare-metrics")
        + "<h3>Metric means on A and B [95% interval], chance level of the localisation metrics</h3>"
        + _table(["method", "metric", "A", "B", "chance"], sides, "compare-sides")
        + "<h3>Explanations that moved most</h3>"
        + _table(["image", "method", "Spearman", "target A", "target B"], moved, "moved")
    )


def _error_section(connection) -> str:
    total = connection.execute(
        "select count(*) from saliency where status = 'error' or error is not null"
    ).fetchall()[0][0]
    if total == 0:
        return "<h2>Errors</h2><p>No error rows.</p>"
    rows = connection.execute(
        "select image_id, method, lam, status, error from saliency"
        " where status = 'error' or error is not null order by image_id, method limit ?",
        [MAX_ERROR_ROWS],
    ).fetchall()
    shown = f" (the first {MAX_ERROR_ROWS})" if total > MAX_ERROR_ROWS else ""
    return (
        f"<h2>Errors</h2><p>{total} row(s) with an error{shown}.</p>"
        + _table(["image", "method", "lam", "status", "error"], rows, "errors")
    )


# ---------------------------------------------------------------------------------------------
# entry points


def write_report(
    output_uri: str,
    out_path: str,
    model_spec: str | None = None,
    *,
    model=None,
    storage: StorageOptions | None = None,
    compare_dir: str | None = None,
    sensitivity_images: int = 4,
    seed: int = 0,
    device: str | None = None,
) -> Report:
    """Write the HTML report of ``output_uri`` to the local file ``out_path``.

    ``model_spec`` (as ``methods.load_model`` takes it) or a loaded ``model`` enables the
    sensitivity curves over ``sensitivity_images`` images; ``compare_dir`` adds the summary
    written by ``pipeline.analysis.compare.compare_runs``. ``seed`` picks the random gallery image and
    the sensitivity images.
    """
    storage = storage or StorageOptions()
    report = Report(path=out_path)
    connection = connect(output_uri, storage)
    columns = _columns(connection)
    metrics = [name for name in METRIC_NAMES if name in columns]
    report.rows, report.ok, report.errors = connection.execute(
        "select count(*), count(*) filter (where status = 'ok'),"
        " count(*) filter (where status = 'error') from saliency"
    ).fetchall()[0]
    several_runs = connection.execute("select count(distinct run_id) from saliency").fetchall()[0][0] > 1
    variants = _variants(connection, several_runs)
    report.variants = [variant.label for variant in variants]
    report.metrics = [m for m in metrics if connection.execute(
        f"select count(*) from saliency where {_finite(m)}").fetchall()[0][0]]
    if model is None and model_spec is not None:
        from methods import load_model

        model = load_model(model_spec, device=device)
    if model is not None:
        model.eval()
    sources = _SourceImages(output_uri, storage)

    sections = [
        _runs_section(connection),
        _model_reading_section(connection, output_uri, storage, report),
        _summary_section(_summary(connection, variants, report.metrics), report.metrics),
        _estimates_section(connection, variants, report.metrics, columns),
        trust_section(connection, variants, columns, _table),
        _distribution_section(connection, variants, report.metrics, report),
        _gallery_section(connection, variants, report.metrics, sources, seed, report),
        _sanity_section(connection, output_uri, storage, report),
        _sensitivity_section(connection, variants, model, sources, sensitivity_images, seed, report),
    ]
    if compare_dir is not None:
        sections.append(_comparison_section(compare_dir, storage))
    sections.append(_error_section(connection))
    title = f"legx report: {output_uri}"
    document = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_escape(title)}</h1><p>{report.rows} rows: {report.ok} ok, {report.errors} errors;"
        f" {len(variants)} method variant(s).</p>" + "".join(sections) + "</body></html>"
    )
    with open(out_path, "w", encoding="utf-8") as handle:
        handle.write(document)
    return report


def summary_markdown(output_uri: str, storage: StorageOptions | None = None) -> str:
    """The per-method summary as a Markdown table (for a README): maps, key size mean [95%
    interval] / median per background, deletion and insertion AUC, pointing game, mask energy
    and Gini means [95% interval] (``pipeline.analysis.estimates``), the chance level of the localisation
    metrics; only the metrics the output holds values of."""
    from methods.metric_names import LOCALISATION_METRICS
    from pipeline.analysis.estimates import variant_estimates

    connection = connect(output_uri, storage or StorageOptions())
    columns = _columns(connection)
    several_runs = connection.execute("select count(distinct run_id) from saliency").fetchall()[0][0] > 1
    variants = _variants(connection, several_runs)
    wanted = [f"key_size_{name}" for name in BACKGROUNDS] + ["deletion_auc", "insertion_auc"]
    wanted += ["pointing_game", "mask_energy", "gini"]
    metrics = [name for name in wanted if name in columns and connection.execute(
        f"select count(*) from saliency where {_finite(name)}").fetchall()[0][0]]
    localised = [name for name in metrics if name in LOCALISATION_METRICS]
    summary = _summary(connection, variants, metrics)
    header = ["method", "maps"]
    for name in metrics:
        if name.startswith("key_size_"):
            header.append(f"key size {name.removeprefix('key_size_')} (mean [95%] / median)")
        else:
            header.append(f"{name} {'↑' if HIGHER_IS_BETTER[name] else '↓'} (mean [95%])")
    header += ["chance (localisation)"] if localised else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, (label, entry) in zip(variants, summary.items()):
        condition, parameters = variant.where()
        estimates = variant_estimates(connection, condition, parameters, metrics, columns)
        cells = [label, str(entry["ok"])]
        for name in metrics:
            median = entry["metrics"][name]["median"]
            cells.append(
                f"{estimates[name].text()} / {_number(median)}"
                if name.startswith("key_size_")
                else estimates[name].text()
            )
        if localised:
            cells.append(_number(estimates[localised[0]].chance))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.cli.main import add_storage_arguments

    parser.add_argument("output", help="the job's output (local path or s3://)")
    parser.add_argument("-o", "--out", default="report.html", help="HTML file to write (default report.html)")
    parser.add_argument("--model", help="model spec for the sensitivity curves (e.g. 'demo'); skipped without")
    parser.add_argument("--device", help="device of the model (default: cuda when available)")
    parser.add_argument("--compare", help="a folder written by 'legx compare' to include")
    parser.add_argument("--sensitivity-images", type=int, default=4, help="images per method (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="picks the random gallery and sensitivity images")
    parser.add_argument("--markdown", help="also write the per-method table (means with 95%% intervals) as Markdown here")
    add_storage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pipeline.cli.main import storage_from
    from pipeline.analysis.query import EmptyOutputError

    try:
        report = write_report(
            args.output, args.out, args.model, storage=storage_from(args), compare_dir=args.compare,
            sensitivity_images=args.sensitivity_images, seed=args.seed, device=args.device,
        )
    except (EmptyOutputError, OSError, ValueError) as error:
        print(f"legx: {error}", file=sys.stderr)
        return 1
    print(
        f"legx: wrote {report.path}: {report.rows} rows ({report.ok} ok, {report.errors} errors),"
        f" {len(report.variants)} method variant(s), {report.images} figure(s)"
    )
    for note in report.notes:
        print(f"legx: note: {note}")
    if args.markdown:
        table = summary_markdown(args.output, storage_from(args))
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write(table)
        print(f"legx: wrote {args.markdown}")
    return 0

