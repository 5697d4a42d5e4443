"""The report's table sections: the runs, each run's top-1 accuracy against the labels (with a
loud line when it is not above chance), the per-method summary (the LEG paper's key-size table,
mean / median per background, then deletion, insertion, Gini, pointing game, mask energy), the
means with their 95% intervals and chance levels, the comparison with another output, and the
error rows."""

from __future__ import annotations

from legx.methods.metrics.catalogue import BACKGROUNDS, higher_is_better, region_metrics
from legx.pipeline.analysis.report_data import Report, Variant
from legx.pipeline.analysis.report_html import escape, number, table
from legx.pipeline.engine.manifest import read_manifest
from legx.pipeline.engine.storage import StorageOptions

MAX_ERROR_ROWS = 200



def runs_section(connection) -> str:
    rows = connection.execute(
        "select run_id, model_id, count(distinct image_id), count(*),"
        " count(*) filter (where status = 'ok'), count(*) filter (where status = 'error'),"
        " strftime(min(created_at), '%Y-%m-%d %H:%M:%S'), strftime(max(created_at), '%Y-%m-%d %H:%M:%S')"
        " from saliency group by run_id, model_id order by 7, 1"
    ).fetchall()
    header = ["run", "model", "images", "rows", "ok", "errors", "first row (UTC)", "last row (UTC)"]
    return "<h2>Runs</h2>" + table(header, rows, "runs")


def model_reading_section(connection, output_uri: str, storage: StorageOptions, report: Report) -> str:
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
                     number(reading["accuracy"]), f"{number(low)} - {number(high)}",
                     number(reading["chance"]), "NOT above chance" if reading["near_chance"] else "above chance"])
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
    loud = "".join(f'<p style="color: #b00000; font-weight: bold">{escape(text)}</p>' for text in warnings)
    return "<h2>Model accuracy on the labelled inputs</h2>" + loud + table(header, rows, "model-accuracy")


def summary_section(summary: dict[str, dict], metrics: list[str]) -> str:
    parts = ["<h2>Summary per method</h2>"]
    key_sizes = [f"key_size_{name}" for name in BACKGROUNDS if f"key_size_{name}" in metrics]
    if key_sizes:
        header = ["method", "maps"] + [name.removeprefix("key_size_") for name in key_sizes]
        rows = [
            [label, entry["ok"]]
            + [
                f"{number(entry['metrics'][m]['mean'])} / {number(entry['metrics'][m]['median'])}"
                for m in key_sizes
            ]
            for label, entry in summary.items()
        ]
        parts.append(
            "<h3>Key size (mean / median; fraction of pixels, by |saliency|, whose replacement by"
            " the background changes the top-1 class; 1 if none; lower is better)</h3>"
        )
        parts.append(table(header, rows, "key-size"))
    others = [m for m in metrics if m not in key_sizes]
    if others:
        header = ["method", "maps"]
        for metric in others:
            arrow = "↑" if higher_is_better(metric) else "↓"
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
        parts.append(table(header, rows, "metrics"))
    if not metrics:
        parts.append('<p class="note">No metric columns in this output: the job ran without'
                     " metrics (set <code>metrics</code> in the job config).</p>")
    return "".join(parts)


def estimates_section(connection, variants: list[Variant], metrics: list[str], columns: list[str]) -> str:
    """Every per-method mean with its 95% interval over images, and the chance level beside the
    localisation metrics (``legx.pipeline.analysis.estimates``)."""
    from legx.pipeline.analysis.estimates import variant_estimates

    if not metrics:
        return ""
    localised = region_metrics(metrics)
    header = ["method"] + [f"{m} {'↑' if higher_is_better(m) else '↓'}" for m in metrics]
    header += ["chance (localisation)"] if localised else []
    rows = []
    for variant in variants:
        condition, values = variant.where()
        estimates = variant_estimates(connection, condition, values, metrics, columns)
        row = [variant.label] + [f"{estimates[m].text()} (n={estimates[m].n})" for m in metrics]
        if localised:
            row.append(number(estimates[localised[0]].chance))
        rows.append(row)
    return (
        "<h3>Means with 95% intervals over images</h3><p>Mean [95% interval] (n images): the"
        " pointing game, a per-image share of the map's maximal pixels inside the region, with"
        " Wilson's interval on the expected count of hits; every other mean with a seeded bootstrap"
        " interval. Chance: the ground-truth region's mean share of the image, the score of a map"
        " that knows nothing on both the pointing game and the mass in the region.</p>"
        + table(header, rows, "intervals")
    )


def _low_high(estimate: dict | None) -> list | None:
    return None if not estimate else [estimate.get("low"), estimate.get("high")]


def _bounds(bounds: list | None) -> str:
    """'[low, high]' of an interval in a compare summary; '–' where there is none."""
    if not bounds or bounds[0] is None or bounds[1] is None:
        return "–"
    return f"[{number(bounds[0])}, {number(bounds[1])}]"


def comparison_section(compare_dir: str, storage: StorageOptions) -> str:
    from legx.pipeline.analysis.compare import read_summary

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
            f"{number(summary['methods'][label]['metric_shift'].get(metric))} "
            f"{_bounds(summary['methods'][label].get('metric_shift_interval', {}).get(metric))}"
            for label in labels
        ]
        for metric in summary["metrics"]
    ]
    sides = [
        [label, metric] + [
            f"{number(estimate.get('mean'))} {_bounds(_low_high(estimate))}"
            for estimate in (entry.get("metric_a", {}).get(metric, {}), entry.get("metric_b", {}).get(metric, {}))
        ] + [number(entry.get("metric_a", {}).get(metric, {}).get("chance"))]
        for label, entry in summary["methods"].items()
        for metric in summary["metrics"]
    ]
    moved = [
        [item["image_id"], Variant(item["method"], item["lam"]).label, item["spearman"], item["target_a"],
         item["target_b"]]
        for item in summary["moved_most"]
    ]
    return (
        f"<h2>Comparison</h2><p>{escape(summary['output_a'])} (A) vs {escape(summary['output_b'])} (B):"
        f" {summary['matched']} matched maps, {summary['only_a']} only in A, {summary['only_b']} only"
        " in B.</p>"
        + table(header, rows, "compare")
        + "<h3>Metric shifts (mean of B − A [95% bootstrap interval over the matched images])</h3>"
        + table(["metric"] + labels, shifts, "compare-metrics")
        + "<h3>Metric means on A and B [95% interval], chance level of the localisation metrics</h3>"
        + table(["method", "metric", "A", "B", "chance"], sides, "compare-sides")
        + "<h3>Explanations that moved most</h3>"
        + table(["image", "method", "Spearman", "target A", "target B"], moved, "moved")
    )


def error_section(connection) -> str:
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
        + table(["image", "method", "lam", "status", "error"], rows, "errors")
    )
