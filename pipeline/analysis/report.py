"""``legx report OUTPUT [-o report.html]``: one self-contained HTML file about a job's output.

Sections: the runs; the model's top-1 accuracy against the labels per run (with a warning when
it is not above chance); a per-method summary (the LEG paper's key-size table, mean / median per
background, then deletion, insertion, Gini, pointing game, mask energy, ROAD); metric
distributions; a per-class audit (which classes the maps explain by their context rather than
the object: ``report_classes``); the ROAD curves (mean per method with 95% intervals, when the
output stores them); a gallery of image / map overlays per method (best, worst and a random
image by one metric);
the sanity-check curves (when OUTPUT/sanity/ holds rows); the sensitivity curves of the LEG
paper (only with a model: log-odds of the explained class relative to the clean image as the
top alpha of pixels by |saliency| are replaced, per background and method, averaged over a few
images); the comparison with another output (when given); and the error rows.

This module assembles the page. The sections live in ``report_tables`` (runs, accuracy,
summary, intervals, comparison, errors), ``report_figures`` (distributions, gallery, sanity,
sensitivity) and ``report_trust``; what they read in ``report_data``; the HTML helpers in
``report_html``; ``legx.pipeline.cli.report`` is the command. Everything is read with DuckDB
(``legx.pipeline.analysis.query.connect``: local paths or s3:// / gs://), plots are drawn with
matplotlib's Agg canvas, and images are embedded as base64 PNG, so the file opens anywhere
without the output or a network.
"""

from __future__ import annotations

from legx.methods.metrics.catalogue import higher_is_better, metric_names, region_metrics
from legx.pipeline.analysis.query import connect
from legx.pipeline.analysis.report_data import (
    Report,
    SourceImages,
    finite_sql,
    method_variants,
    saliency_columns,
    variant_summary,
)
from legx.pipeline.analysis.report_figures import (
    distribution_section,
    gallery_section,
    road_section,
    sanity_section,
    sensitivity_section,
)
from legx.pipeline.analysis.report_classes import per_class_section
from legx.pipeline.analysis.report_html import SORT_SCRIPT, STYLE, escape, number, table
from legx.pipeline.analysis.report_tables import (
    comparison_section,
    error_section,
    estimates_section,
    model_reading_section,
    runs_section,
    summary_section,
)
from legx.pipeline.analysis.report_trust import trust_section
from legx.pipeline.engine.storage import StorageOptions


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

    ``model_spec`` (as ``legx.methods.load_model`` takes it) or a loaded ``model`` enables the
    sensitivity curves over ``sensitivity_images`` images; ``compare_dir`` adds the summary
    written by ``legx.pipeline.analysis.compare.compare_runs``. ``seed`` picks the random gallery image and
    the sensitivity images.
    """
    storage = storage or StorageOptions()
    report = Report(path=out_path)
    connection = connect(output_uri, storage)
    columns = saliency_columns(connection)
    metrics = [name for name in metric_names() if name in columns]
    report.rows, report.ok, report.errors = connection.execute(
        "select count(*), count(*) filter (where status = 'ok'),"
        " count(*) filter (where status = 'error') from saliency"
    ).fetchall()[0]
    several_runs = connection.execute("select count(distinct run_id) from saliency").fetchall()[0][0] > 1
    variants = method_variants(connection, several_runs)
    report.variants = [variant.label for variant in variants]
    report.metrics = [m for m in metrics if connection.execute(
        f"select count(*) from saliency where {finite_sql(m)}").fetchall()[0][0]]
    if model is None and model_spec is not None:
        from legx.methods import load_model

        model = load_model(model_spec, device=device)
    if model is not None:
        model.eval()
    sources = SourceImages(output_uri, storage)

    sections = [
        runs_section(connection),
        model_reading_section(connection, output_uri, storage, report),
        summary_section(variant_summary(connection, variants, report.metrics), report.metrics),
        estimates_section(connection, variants, report.metrics, columns),
        per_class_section(connection, variants, columns, explained_top1(connection, output_uri, storage)),
        trust_section(connection, variants, columns, table),
        distribution_section(connection, variants, report.metrics, report),
        road_section(connection, variants, columns, sources, report),
        gallery_section(connection, variants, report.metrics, sources, seed, report),
        sanity_section(connection, output_uri, storage, report),
        sensitivity_section(connection, variants, model, sources, sensitivity_images, seed, report),
    ]
    if compare_dir is not None:
        sections.append(comparison_section(compare_dir, storage))
    sections.append(error_section(connection))
    title = f"legx report: {output_uri}"
    document = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>{report.rows} rows: {report.ok} ok, {report.errors} errors;"
        f" {len(variants)} method variant(s).</p>" + "".join(sections)
        + f"<script>{SORT_SCRIPT}</script></body></html>"
    )
    with open(out_path, "w", encoding="utf-8") as handle:
        handle.write(document)
    return report


def explained_top1(connection, output_uri: str, storage: StorageOptions) -> set[str]:
    """The output's runs that explained the top-1 class (their manifests' ``target``)."""
    from legx.pipeline.engine.manifest import read_manifest

    runs = [row[0] for row in connection.execute("select distinct run_id from saliency").fetchall()]
    return {run_id for run_id in runs
            if ((read_manifest(output_uri, storage, run_id) or {}).get("config") or {}).get("target", "top1") == "top1"}


def summary_markdown(output_uri: str, storage: StorageOptions | None = None) -> str:
    """The per-method summary as a Markdown table (for a README): maps, then every metric the
    output holds values of, in the catalogue's order (``legx.methods.metrics.catalogue``): key size
    mean [95% interval] / median per background, every other metric's mean [95% interval]
    (``legx.pipeline.analysis.estimates``), and the chance level of the localisation metrics."""
    from legx.pipeline.analysis.estimates import variant_estimates

    connection = connect(output_uri, storage or StorageOptions())
    columns = saliency_columns(connection)
    several_runs = connection.execute("select count(distinct run_id) from saliency").fetchall()[0][0] > 1
    variants = method_variants(connection, several_runs)
    metrics = [name for name in metric_names() if name in columns and connection.execute(
        f"select count(*) from saliency where {finite_sql(name)}").fetchall()[0][0]]
    localised = region_metrics(metrics)
    summary = variant_summary(connection, variants, metrics)
    header = ["method", "maps"]
    for name in metrics:
        if name.startswith("key_size_"):
            header.append(f"key size {name.removeprefix('key_size_')} (mean [95%] / median)")
        else:
            header.append(f"{name} {'↑' if higher_is_better(name) else '↓'} (mean [95%])")
    header += ["chance (localisation)"] if localised else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, (label, entry) in zip(variants, summary.items()):
        condition, parameters = variant.where()
        estimates = variant_estimates(connection, condition, parameters, metrics, columns)
        cells = [label, str(entry["ok"])]
        for name in metrics:
            median = entry["metrics"][name]["median"]
            cells.append(
                f"{estimates[name].text()} / {number(median)}"
                if name.startswith("key_size_")
                else estimates[name].text()
            )
        if localised:
            cells.append(number(estimates[localised[0]].chance))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
