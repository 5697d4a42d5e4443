"""`legx show`: the stored map with the image it was computed from, for every input layout."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from legx.pipeline.analysis.show import STYLES, load_source_image, show
from legx.pipeline.engine.manifest import write_manifest
from legx.pipeline.engine.schema import STAGE_SCHEMA
from legx.pipeline.engine.sink import ParquetWriter
from legx.pipeline.engine.storage import StorageOptions

STORAGE = StorageOptions()
CONFIG = {"image_size": 8, "resize": "stretch"}


def _image_bytes() -> tuple[bytes, np.ndarray]:
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[:4] = (250, 0, 0)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue(), pixels


def test_source_image_from_file_tar_and_parquet(tmp_path):
    data, pixels = _image_bytes()
    (tmp_path / "a.png").write_bytes(data)
    with tarfile.open(tmp_path / "shard.tar", "w") as archive:
        info = tarfile.TarInfo("key1.png")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table({"image_id": ["x", "y"], "image": [b"", data]}), tmp_path / "p.parquet")
    for uri in (str(tmp_path / "a.png"), f"{tmp_path}/shard.tar#key1", f"{tmp_path}/p.parquet#y"):
        assert np.array_equal(load_source_image(uri, STORAGE, CONFIG), pixels), uri
    with pytest.raises(LookupError):
        load_source_image(f"{tmp_path}/shard.tar#missing", STORAGE, CONFIG)


def test_every_style_renders_a_png(tmp_path):
    data, _ = _image_bytes()
    (tmp_path / "a.png").write_bytes(data)
    output = str(tmp_path / "out")
    saliency = np.linspace(-1, 1, 16, dtype=np.float32)
    row = {"image_id": "a.png", "source_uri": str(tmp_path / "a.png"), "target": 1,
           "target_score": 0.7, "method": "leg", "params": "{}", "height": 4, "width": 4,
           "saliency": saliency, "status": "ok", "elapsed_s": 0.1}
    writer = ParquetWriter(output, STORAGE, "r1", "demo", anchor=("leg", None))
    summary = writer.write(pa.Table.from_pylist([row], schema=STAGE_SCHEMA))
    assert summary.rows == 1
    write_manifest(output, STORAGE, "r1", {"config": CONFIG})
    for style in STYLES:
        for signed in (False, True):
            path = tmp_path / f"{style}-{signed}.png"
            shown = show(output, "a.png", str(path), STORAGE, method="leg", style=style, signed=signed)
            assert shown["run_id"] == "r1" and Image.open(path).size[0] > 100
    with pytest.raises(LookupError, match="no row"):
        show(output, "a.png", str(tmp_path / "x.png"), STORAGE, method="lime")


def test_significant_greys_out_cells_whose_interval_contains_zero(tmp_path):
    data, _ = _image_bytes()
    (tmp_path / "a.png").write_bytes(data)
    output = str(tmp_path / "out")
    saliency = np.where(np.arange(16) < 8, 10.0, 0.5).astype(np.float32)  # 8 cells at 10 SE
    base = {"image_id": "a.png", "source_uri": str(tmp_path / "a.png"), "target": 1,
            "target_score": 0.7, "params": "{}", "height": 4, "width": 4, "saliency": saliency,
            "status": "ok", "elapsed_s": 0.1}
    rows = [{**base, "method": "leg", "saliency_se": np.ones(16, np.float32)},
            {**base, "method": "grad-cam"}]
    writer = ParquetWriter(output, STORAGE, "r1", "demo", anchor=("leg", None))
    writer.write(pa.Table.from_pylist(rows, schema=STAGE_SCHEMA))
    write_manifest(output, STORAGE, "r1", {"config": CONFIG})
    path = tmp_path / "significant.png"
    shown = show(output, "a.png", str(path), STORAGE, method="leg", significant=True)
    assert shown["significant_cells"] == 8 and Image.open(path).size[0] > 100
    with pytest.raises(LookupError, match="no standard errors"):
        show(output, "a.png", str(path), STORAGE, method="grad-cam", significant=True)


def test_names_in_the_title_and_the_target_boxes_drawn(tmp_path):
    from legx.pipeline.analysis.show import class_text, render

    data, pixels = _image_bytes()
    (tmp_path / "a.png").write_bytes(data)
    output = str(tmp_path / "out")
    boxes = [{"x_min": 1.0, "y_min": 1.0, "x_max": 5.0, "y_max": 5.0, "label": 1},
             {"x_min": 4.0, "y_min": 4.0, "x_max": 7.0, "y_max": 7.0, "label": 3}]
    row = {"image_id": "a.png", "source_uri": str(tmp_path / "a.png"), "label": 3, "label_name": "goldfish",
           "target": 1, "target_name": "tench", "target_score": 0.7, "method": "leg", "params": "{}",
           "height": 4, "width": 4, "saliency": np.ones(16, np.float32), "boxes": boxes, "status": "ok",
           "elapsed_s": 0.1}
    ParquetWriter(output, STORAGE, "r1", "demo", anchor=("leg", None)).write(
        pa.Table.from_pylist([row], schema=STAGE_SCHEMA))
    write_manifest(output, STORAGE, "r1", {"config": CONFIG})
    shown = show(output, "a.png", str(tmp_path / "named.png"), STORAGE)
    assert (shown["label_name"], shown["target_name"], shown["boxes"]) == ("goldfish", "tench", boxes)
    assert class_text(1, "tench") == "tench (1)" and class_text(1, None) == "1"
    # The outlines change the picture; without the image there is nothing to draw them on.
    saliency = np.ones((4, 4), np.float32)
    for name, drawn in (("plain", None), ("boxes", boxes)):
        render(pixels, saliency, "overlay", False, "t", str(tmp_path / f"{name}.png"), boxes=drawn, target=1)
    plain = np.asarray(Image.open(tmp_path / "plain.png"))
    outlined = np.asarray(Image.open(tmp_path / "boxes.png"))
    assert plain.shape == outlined.shape and not np.array_equal(plain, outlined)
