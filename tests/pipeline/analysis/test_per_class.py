"""The per-class audit over a written output: known per-class numbers, intervals as
``legx.methods.metrics.intervals`` computes them, the context flag, the flagged images, the report
section and ``legx query OUTPUT per-class``."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from legx.methods.metrics.intervals import rate_estimate, wilson_interval
from legx.pipeline.analysis.per_class import Z, flagged_images, per_class
from legx.pipeline.analysis.query import connect
from legx.pipeline.analysis.report_classes import per_class_section
from legx.pipeline.analysis.report_data import Variant, saliency_columns
from legx.pipeline.engine.schema import output_schema


def write_output(directory, rows: list[dict], run_id: str = "audit") -> None:
    folder = directory / "saliency" / f"run_id={run_id}"
    folder.mkdir(parents=True)
    records = [{"run_id": run_id, "method": "leg", "status": "ok", **row} for row in rows]
    pq.write_table(pa.Table.from_pylist(records, schema=output_schema()), folder / "part-0.parquet")


# Class 0 (tench): the maps sit off the fish: mass well below its boxes' share. Class 1
# (goldfish): on the object. Class 2: a single image, too few for an interval.
MASS_0 = [0.10, 0.12, 0.08, 0.15, 0.11, 0.09]
MASS_1 = [0.80, 0.70, 0.90, 0.75]


def audit_rows() -> list[dict]:
    rows = []
    for index, mass in enumerate(MASS_0):
        rows.append({"image_id": f"t{index}", "label": 0, "label_name": "tench", "target": 0 if index < 4 else 1,
                     "pointing_game": 0.0 if index else 0.5, "mask_energy": mass, "region_share": 0.5})
    for index, mass in enumerate(MASS_1):
        rows.append({"image_id": f"g{index}", "label": 1, "label_name": "goldfish", "target": 1,
                     "pointing_game": 1.0, "mask_energy": mass, "region_share": 0.3})
    rows.append({"image_id": "s0", "label": 2, "label_name": "shark", "target": 2, "pointing_game": 1.0,
                 "mask_energy": 0.05, "region_share": 0.6})
    # Not part of any class: no label, or an error row.
    rows.append({"image_id": "u0", "label": None, "target": 1, "mask_energy": 0.1, "region_share": 0.5})
    rows.append({"image_id": "e0", "label": 0, "status": "error", "error": "decode: empty file (0 bytes)"})
    return rows


def test_per_class_numbers_intervals_and_flags(tmp_path):
    write_output(tmp_path, audit_rows())
    connection = connect(str(tmp_path))
    names, rows = per_class(connection, saliency_columns(connection))
    table = [dict(zip(names, row)) for row in rows]
    assert [row["label"] for row in table] == [0, 1, 2]  # flagged first
    tench, goldfish, shark = table
    assert (tench["class_name"], tench["n"], tench["explained_by_context"]) == ("tench", 6, True)
    assert tench["top1"] == pytest.approx(4 / 6)
    assert (tench["top1_low"], tench["top1_high"]) == pytest.approx(wilson_interval(4, 6))
    pointing = rate_estimate(np.array([0.5, 0, 0, 0, 0, 0]))
    assert (tench["pointing"], tench["pointing_low"], tench["pointing_high"]) == pytest.approx(
        (pointing.mean, pointing.low, pointing.high))
    mean, half = np.mean(MASS_0), Z * np.std(MASS_0, ddof=1) / np.sqrt(len(MASS_0))
    assert (tench["mass"], tench["mass_low"], tench["mass_high"]) == pytest.approx((mean, mean - half, mean + half))
    assert tench["chance"] == pytest.approx(0.5)
    assert goldfish["explained_by_context"] is False and goldfish["mass"] == pytest.approx(np.mean(MASS_1))
    assert shark["n_mass"] == 1 and shark["mass_low"] is None and shark["explained_by_context"] is False

    images = flagged_images(connection)
    assert [image_id for image_id, _, _ in images[0]] == ["t2", "t5", "t0", "t4", "t1", "t3"]
    assert images[2] == [("s0", 0.05, 0.6)]
    assert 1 not in images


def test_report_section_and_query_command(tmp_path):
    from legx.pipeline.cli.main import main

    write_output(tmp_path, audit_rows())
    connection = connect(str(tmp_path))
    html = per_class_section(connection, [Variant("leg", None)], saliency_columns(connection), {"audit"})
    assert "1 of 3 classes explained by context" in html
    assert html.index("tench") < html.index("goldfish")
    assert 'class="sortable"' in html and "t2 (0.080 &lt; 0.500)" in html
    without_top1 = per_class_section(connection, [Variant("leg", None)], saliency_columns(connection), set())
    assert "0.667" not in without_top1 and "0.667" in html

    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main(["query", str(tmp_path), "per-class", "--format", "csv"]) == 0
    lines = printed.getvalue().strip().splitlines()
    assert lines[0].startswith("run_id,method,lam,label,class_name,n,")
    assert lines[1].split(",")[3:6] == ["0", "tench", "6"] and lines[1].endswith("True")
