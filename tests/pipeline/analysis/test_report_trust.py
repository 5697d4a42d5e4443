"""The report's trust section on an output written by the pipeline's own sink: reliability per
method, forwards, and the maps below target."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from legx.pipeline.analysis.report import write_report
from legx.pipeline.engine.manifest import write_manifest
from legx.pipeline.engine.schema import STAGE_SCHEMA
from legx.pipeline.engine.sink import ParquetWriter
from legx.pipeline.engine.storage import StorageOptions

STORAGE = StorageOptions()


def test_report_shows_reliability_forwards_and_flags_maps_below_target(tmp_path):
    output = str(tmp_path / "out")
    rows = []
    reliabilities = {"a.png": 0.95, "b.png": 0.5, "c.png": 0.85}
    for image_id, reliability in reliabilities.items():
        base = {"image_id": image_id, "source_uri": image_id, "target": 1, "target_score": 0.7,
                "height": 2, "width": 2, "saliency": np.ones(4, np.float32), "status": "ok",
                "elapsed_s": 0.1, "n_forwards": 1026, "reliability": reliability}
        rows.append({**base, "method": "leg", "params": json.dumps({"n_samples": 342}),
                     "saliency_se": np.full(4, 0.1, np.float32)})
        adaptive = {"n_samples": "auto", "target_reliability": 0.8}
        rows.append({**base, "method": "leg-tv", "lam": 0.1, "params": json.dumps(adaptive),
                     "capped": image_id == "b.png"})
    rows.append({"image_id": "a.png", "source_uri": "a.png", "method": "grad-cam", "params": "{}",
                 "height": 2, "width": 2, "saliency": np.ones(4, np.float32), "status": "ok",
                 "elapsed_s": 0.1})
    writer = ParquetWriter(output, STORAGE, "r1", "demo", anchor=("leg", None))
    writer.write(pa.Table.from_pylist(rows, schema=STAGE_SCHEMA))
    write_manifest(output, STORAGE, "r1", {"config": {"image_size": 8}})
    path = tmp_path / "report.html"
    write_report(output, str(path))
    page = path.read_text()
    section = page[page.index("Trust in the maps"):]
    trust_table = section[: section.index("</table>")]
    assert "grad-cam" not in trust_table  # no reliability: not a sampled method
    # leg: 3 maps, 3078 forwards, 2 below the default 0.9; leg-tv: target 0.8, 1 below, 1 capped
    assert "<td>leg</td><td>3</td><td>3</td><td>0.500</td>" in trust_table
    assert "<td>3078</td><td>1026.000</td><td>0</td><td>2</td>" in trust_table
    assert "<td>3078</td><td>1026.000</td><td>1</td><td>1</td>" in trust_table
    flagged = section[section.index("Maps below target"):]
    flagged = flagged[: flagged.index("</table>")]
    assert flagged.count("b.png") == 2 and flagged.count("c.png") == 1 and "a.png" not in flagged
