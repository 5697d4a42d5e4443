"""legx benchmark: the per-class audit (``legx.pipeline.analysis.per_class``) over a synthetic
output of ImageNet's size: 1,000 classes x 150 images, one method (150,000 rows).

    python scripts/bench_per_class.py               # prints one JSON object

Times, each the median of ``--repeats`` runs on a fresh DuckDB connection over the Parquet
output: the audit query (every class's numbers and intervals), the flagged classes' images, and
the whole report section (both, and the HTML table of 1,000 rows). The maps' values are drawn
so that about a tenth of the classes sit below chance.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from legx.pipeline.analysis.per_class import flagged_images, per_class
from legx.pipeline.analysis.query import connect
from legx.pipeline.analysis.report_classes import per_class_section
from legx.pipeline.analysis.report_data import Variant, saliency_columns
from legx.pipeline.engine.schema import output_schema


def synthetic_output(directory: Path, classes: int, per_class_images: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    count = classes * per_class_images
    labels = np.repeat(np.arange(classes), per_class_images)
    share = rng.uniform(0.2, 0.7, classes)[labels]
    context = rng.random(classes)[labels] < 0.1
    mass = np.clip(np.where(context, share - 0.15, share + 0.1) + rng.normal(0, 0.15, count), 0, 1)
    targets = np.where(rng.random(count) < 0.75, labels, (labels + 1) % classes)
    columns = {
        "run_id": pa.array(["bench"] * count), "image_id": pa.array([f"ILSVRC2012_val_{i + 1:08d}" for i in range(count)]),
        "label": pa.array(labels), "target": pa.array(targets), "label_name": pa.array([f"class {c}" for c in labels]),
        "method": pa.array(["leg"] * count), "status": pa.array(["ok"] * count),
        "pointing_game": pa.array((rng.random(count) < np.clip(mass + 0.2, 0, 1)).astype(float)),
        "mask_energy": pa.array(mass), "region_share": pa.array(share),
    }
    schema = output_schema()
    table = pa.table({name: columns.get(name, pa.nulls(count, schema.field(name).type)) for name in schema.names},
                     schema=schema)
    folder = directory / "saliency" / "run_id=bench"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    return count


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--images-per-class", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = synthetic_output(Path(folder), args.classes, args.images_per_class)

        def fresh():
            connection = connect(folder)
            return connection, saliency_columns(connection)

        def query():
            connection, columns = fresh()
            return per_class(connection, columns)

        def images():
            connection, _ = fresh()
            return flagged_images(connection)

        def section():
            connection, columns = fresh()
            return per_class_section(connection, [Variant("leg", None)], columns, {"bench"})

        flagged = sum(1 for row in query()[1] if row[-1])
        print(json.dumps({
            "rows": rows, "classes": args.classes, "flagged": flagged,
            "query_s": round(median_seconds(query, args.repeats), 3),
            "flagged_images_s": round(median_seconds(images, args.repeats), 3),
            "report_section_s": round(median_seconds(section, args.repeats), 3),
            "report_section_html_bytes": len(section()),
        }))


if __name__ == "__main__":
    main()
