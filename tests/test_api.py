"""The Python API (``legx.explain``, ``legx.evaluate``, ``legx.explain_dataset``, ``legx.run``) end to end.

Known answers where the answer is known (a model that reads one region, a map whose peak is or is
not in the mask), and the API's Ray path against the job's own output: the same stages must give
the same maps for the same images.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
from PIL import Image

import legx
from legx.pipeline.demo.data import write_demo_dataset
from legx.pipeline.engine.schema import output_schema
from legx.pipeline.engine.sources import SOURCE_SCHEMA

sys.path.insert(0, str(Path(__file__).resolve().parent / "methods"))
from saliency_toys import REGION, REGION_SETTINGS, RegionModel, argmax_in_region, region_images  # noqa: E402

LEG_SMALL = {"n_samples": 48, "grid_size": 8}


def test_explain_takes_pil_images_and_finds_the_region_the_model_reads():
    images = region_images(3, seed=4)
    pixels = [Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for image in images]
    maps = legx.explain(RegionModel(), pixels, method="lime", targets=[0, 0, 0], **REGION_SETTINGS["lime"])
    assert maps.shape == (3, 32, 32)
    assert argmax_in_region(maps, REGION).all()


def test_explain_gives_one_map_per_lambda_and_evaluate_scores_the_localisation(tmp_path):
    write_demo_dataset(tmp_path, 2, seed=3, image_size=64)
    pixels = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in sorted(tmp_path.glob("*.png"))])
    maps = legx.explain("demo", pixels, method="leg-tv", lambdas=[0.1, 0.3], device="cpu", **LEG_SMALL)
    assert maps.shape == (2, 2, 8, 8) and maps.dtype == np.float32  # LEG maps live on the grid

    peak_inside = np.zeros((2, 64, 64), np.float32)
    peak_inside[:, 10, 10] = 1.0
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 5:15, 5:15] = True
    masks[1, 40:50, 40:50] = True
    scores = legx.evaluate("demo", pixels, peak_inside, ["pointing_game", "gini"], masks=masks, device="cpu")
    assert scores["pointing_game"].tolist() == [1.0, 0.0]
    assert np.allclose(scores["gini"], 1 - 1 / (64 * 64))


def test_explain_says_what_it_expected():
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        legx.explain(RegionModel(), region_images(1) * 255, method="lime")
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        legx.explain(RegionModel(), np.zeros((2, 32, 32)), method="lime")
    with pytest.raises(ValueError, match="unknown method"):
        legx.explain(RegionModel(), region_images(1), method="leg-xyz")


def test_import_legx_loads_neither_torch_nor_ray():
    import subprocess

    code = "import sys, legx; legx.__version__; print([m for m in ('torch', 'ray') if m in sys.modules])"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "[]"


def _source_rows(folder: Path) -> list[dict]:
    return [{"image_id": path.name, "source_uri": str(path), "label": None, "data": path.read_bytes()}
            for path in sorted(folder.glob("*.png"))]


def test_explain_dataset_and_run_give_the_same_rows_as_the_job(ray_local, tmp_path):
    import pyarrow as pa
    import ray

    images = tmp_path / "images"
    write_demo_dataset(images, 3, seed=5, image_size=64)
    config = {"input": str(images), "output": str(tmp_path / "out"), "model": "demo", "methods": ["leg"],
              "leg": LEG_SMALL, "image_size": 64, "metrics": ["gini"], "run_id": "api"}

    summary = legx.run(config)
    assert (summary.images, summary.ok, summary.errors) == (3, 3, 0)
    written = duckdb.sql(
        f"select image_id, saliency, gini from read_parquet('{tmp_path}/out/saliency/**/*.parquet') order by image_id"
    ).fetchall()

    source = ray.data.from_arrow(pa.Table.from_pylist(_source_rows(images), schema=SOURCE_SCHEMA))
    dataset = legx.explain_dataset(source, {key: value for key, value in config.items() if key not in ("input", "output")})
    rows = sorted(dataset.take_all(), key=lambda row: row["image_id"])
    assert set(rows[0]) == set(output_schema().names)
    assert [(row["run_id"], row["status"], row["method"]) for row in rows] == [("api", "ok", "leg")] * 3
    assert [row["image_id"] for row in rows] == [image_id for image_id, _, _ in written]
    for row, (_, saliency, gini) in zip(rows, written):
        assert np.array_equal(np.asarray(row["saliency"], np.float32), np.asarray(saliency, np.float32))
        assert row["gini"] == pytest.approx(gini)
