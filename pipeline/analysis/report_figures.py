"""The report's figure sections: metric distributions (box plots per method), the ROAD curves
(mean probability of the explained class per method against the removed fraction, MoRF and
LeRF, with 95% bootstrap intervals over images, from the stored curve columns), the gallery of
image / map overlays per method (best, worst and a random image by the first of
``GALLERY_METRICS`` the output holds), the sanity-check curves (mean Spearman per method as layers
are randomised, when OUTPUT/sanity/ holds rows) and the sensitivity curves of the LEG paper (only
with a model: log-odds of the explained class relative to the clean image as the top alpha of
pixels by |saliency| are replaced, per background and method, averaged over a few images)."""

from __future__ import annotations

import numpy as np
import pyarrow.fs as pafs

from legx.methods.resize import upsample_maps
from legx.methods.metrics.catalogue import BACKGROUNDS, METRICS_BY_NAME
from legx.methods.metrics.intervals import mean_estimate
from legx.methods.metrics.road_options import ROAD_STEPS, road_fractions
from legx.pipeline.analysis.report_data import (
    ROW_COLUMNS,
    Report,
    SourceImages,
    Variant,
    gallery_rows,
    metric_values,
    row_dicts,
    row_map,
)
from legx.pipeline.analysis.report_html import escape, figure_html, new_figure, number, table
from legx.pipeline.engine.storage import StorageOptions, join, resolve, scheme_of

SANITY_DIR = "sanity"


# The metric that orders the gallery: the first of these the output holds.
GALLERY_METRICS = ("key_size_mean", "deletion_auc", "insertion_auc", "mask_energy", "gini")



def distribution_section(connection, variants: list[Variant], metrics: list[str], report: Report) -> str:
    shown = []
    for metric in metrics:
        data = [(variant.label, metric_values(connection, variant, metric)) for variant in variants]
        data = [(label, values) for label, values in data if values.size]
        if data:
            shown.append((metric, data))
    if not shown:
        return ""
    columns = min(3, len(shown))
    rows = -(-len(shown) // columns)
    height_per_row = 0.5 + 0.35 * len(variants)
    figure = new_figure(5 * columns, max(2.2, height_per_row) * rows)
    for position, (metric, data) in enumerate(shown, start=1):
        axes = figure.add_subplot(rows, columns, position)
        axes.boxplot([values for _, values in data], orientation="horizontal", tick_labels=[label for label, _ in data])
        axes.set_title(metric, fontsize=9)
        axes.tick_params(labelsize=7)
    figure.tight_layout()
    report.images += 1
    return "<h2>Metric distributions</h2>" + figure_html(figure, "metric distributions")


ROAD_CURVES = (("road_morf", "MoRF: most relevant removed first (lower is better)"),
               ("road_lerf", "LeRF: least relevant removed first (higher is better)"))


def _run_road_fractions(config: dict) -> np.ndarray | None:
    """The fractions a run's ROAD curves were measured at (its config's metric options, else the
    defaults); None where the stored options are not valid fractions."""
    options = config.get("metric_options") or {}
    try:
        return road_fractions(options.get("road_fractions"), options.get("road_steps", ROAD_STEPS))
    except (ValueError, TypeError):
        return None


def road_section(connection, variants: list[Variant], columns: list[str], sources: SourceImages,
                 report: Report) -> str:
    """Mean ROAD curves per method with 95% bootstrap intervals at each fraction (empty when the
    output stores no curve)."""
    curve_columns = [(METRICS_BY_NAME[name].curve_columns[0], title) for name, title in ROAD_CURVES
                     if METRICS_BY_NAME[name].curve_columns[0] in columns]
    if not curve_columns:
        return ""
    # {column: {label: (fractions, curves)}}; rows of one variant measured at other fractions
    # than its first row's are counted and left out.
    drawn: dict[str, dict[str, tuple[np.ndarray, list]]] = {column: {} for column, _ in curve_columns}
    skipped = 0
    for variant in variants:
        condition, values = variant.where()
        for column, _ in curve_columns:
            rows = connection.execute(
                f"select run_id, {column} from saliency where {condition} and status = 'ok'"
                f" and {column} is not null order by image_id", values,
            ).fetchall()
            for run_id, curve in rows:
                fractions = _run_road_fractions(sources.config(run_id))
                if fractions is None or len(fractions) != len(curve):
                    skipped += 1
                    continue
                entry = drawn[column].setdefault(variant.label, (fractions, []))
                if len(entry[0]) != len(fractions) or not np.allclose(entry[0], fractions):
                    skipped += 1
                    continue
                entry[1].append(curve)
    if not any(drawn.values()):
        return ""
    figure = new_figure(11, 3.8)
    table_rows = []
    for position, (column, title) in enumerate(curve_columns, start=1):
        axes = figure.add_subplot(1, len(curve_columns), position)
        for label, (fractions, curves) in drawn[column].items():
            points = np.asarray(curves, dtype=np.float64)
            estimates = [mean_estimate(points[:, k]) for k in range(points.shape[1])]
            means = [estimate.mean for estimate in estimates]
            line, = axes.plot(fractions, means, marker="o", markersize=3, label=f"{label} (n={len(points)})")
            axes.fill_between(fractions, [e.low for e in estimates], [e.high for e in estimates],
                              color=line.get_color(), alpha=0.2)
            table_rows += [[column, label, f"{fraction:g}", estimate.text(), estimate.n]
                           for fraction, estimate in zip(fractions, estimates)]
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("fraction of pixels removed (noisy linear imputation)", fontsize=8)
        axes.set_ylabel("probability of the explained class", fontsize=8)
        axes.set_ylim(-0.02, 1.02)
        axes.tick_params(labelsize=7)
        axes.legend(fontsize=7)
    figure.tight_layout()
    report.images += 1
    note = (f'<p class="note">{skipped} curve(s) measured at other fractions than their method\'s'
            " first are not drawn.</p>") if skipped else ""
    return (
        "<h2>ROAD curves</h2><p>Mean probability of the explained class per method as a fraction"
        " of the pixels, in the order of the map, is removed and filled by noisy linear imputation"
        " (Rong et al. 2022); shaded: 95% bootstrap interval of the mean over images. The scores"
        " road_morf, road_lerf and road_combined are in the tables above.</p>"
        + note + figure_html(figure, "ROAD curves")
        + table(["curve", "method", "fraction removed", "mean probability [95%]", "images"], table_rows,
                "road-curves")
    )


def gallery_section(connection, variants: list[Variant], metrics: list[str], sources: SourceImages,
                     seed: int, report: Report) -> str:
    metric = next((m for m in GALLERY_METRICS if m in metrics), None)
    parts = ["<h2>Gallery</h2>"]
    parts.append(
        f"<p>Best, worst and a random image per method by <code>{escape(metric)}</code>.</p>"
        if metric
        else '<p class="note">No metric to rank by: a random image per method.</p>'
    )
    unreadable: list[str] = []
    for variant in variants:
        picks = gallery_rows(connection, variant, metric, seed)
        if not picks:
            continue
        report.gallery[variant.label] = [(caption, row["image_id"]) for caption, row in picks]
        figure = new_figure(3.0 * len(picks), 6.0)
        for position, (caption, row) in enumerate(picks):
            overlay_axes = figure.add_subplot(2, len(picks), position + 1)
            map_axes = figure.add_subplot(2, len(picks), len(picks) + position + 1)
            saliency = np.abs(row_map(row))
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
            score = f"\n{metric}={number(row.get(metric))}" if metric else ""
            overlay_axes.set_title(f"{caption}: {row['image_id']}{score}", fontsize=8)
            overlay_axes.set_axis_off()
            map_axes.set_title("|map|", fontsize=8)
            map_axes.set_axis_off()
        figure.tight_layout()
        report.images += 1
        parts.append(f"<h3>{escape(variant.label)}</h3>" + figure_html(figure, f"gallery {variant.label}"))
    if unreadable:
        note = f"{len(unreadable)} source image(s) could not be read; their maps are shown alone"
        report.notes.append(note)
        parts.append(f'<p class="note">{escape(note)}: {escape("; ".join(unreadable[:5]))}</p>')
    return "".join(parts)


def _sanity_uri(output_uri: str) -> str:
    return join(output_uri, SANITY_DIR) if scheme_of(output_uri) == "file" else (
        output_uri.rstrip("/") + "/" + SANITY_DIR
    )


def sanity_section(connection, output_uri: str, storage: StorageOptions, report: Report) -> str:
    filesystem, root = resolve(output_uri, storage)
    if filesystem.get_file_info(f"{root}/{SANITY_DIR}").type == pafs.FileType.NotFound:
        note = "no sanity-check rows (run the sanity mode to fill OUTPUT/sanity/)"
        report.notes.append(note)
        return f'<h2>Sanity check</h2><p class="note">{escape(note)}.</p>'
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
    figure = new_figure(11, 3.6)
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
    points_table = table(
        ["method", "layers randomised", "down to", "mean Spearman", "mean Spearman |map|", "images"],
        [(label, *point) for label, points in curves.items() for point in points],
        "sanity",
    )
    return (
        "<h2>Sanity check (cascading randomisation)</h2><p>Layers re-initialised from the output"
        " down; a method that depends on the model shows falling correlation.</p>"
        + figure_html(figure, "sanity curves")
        + points_table
    )


def sensitivity_section(connection, variants: list[Variant], model, sources: SourceImages,
                         n_images: int, seed: int, report: Report) -> str:
    header = "<h2>Sensitivity analysis</h2>"
    if model is None:
        note = "sensitivity curves need the model: pass --model SPEC (model_spec=...)"
        report.notes.append(note)
        return f'{header}<p class="note">{escape(note)}.</p>'
    import torch

    from legx.methods.metrics.sensitivity import SENSITIVITY_ALPHAS, sensitivity_curve

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
            rows = row_dicts(connection.execute(
                f"select {ROW_COLUMNS} from saliency where {condition} and status = 'ok'"
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
                curve = sensitivity_curve(model, image, row_map(row), int(row["target"]), background,
                                          seed=seed)
                curves.setdefault(variant.label, {}).setdefault(background, []).append(curve)
    if not curves:
        note = "no source image could be read for the sensitivity curves"
        report.notes.append(note)
        return f'{header}<p class="note">{escape(note)}: {escape("; ".join(failures[:5]))}</p>'
    figure = new_figure(12, 6.5)
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
        f" method: {escape(text)}.</p>" + figure_html(figure, "sensitivity curves")
    )
