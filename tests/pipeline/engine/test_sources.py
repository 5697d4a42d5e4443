"""Inputs through Ray Data readers: folders (ImageNet layout and flat), WebDataset tar shards,
Parquet of image bytes; stable image ids and labels."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from legx.pipeline.engine.config import load_config
from legx.pipeline.engine.sources import SourceError, detect_format, read_annotations, read_source
from legx.pipeline.engine.sources.registry import FORMATS, Format


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _rows(config):
    dataset, kind = read_source(config)
    rows = sorted(dataset.take_all(), key=lambda row: row["image_id"])
    return rows, kind


def test_imagenet_folder_labels_follow_sorted_class_folders(ray_local, tmp_path):
    for synset, count in (("n02", 2), ("n01", 1)):
        (tmp_path / synset).mkdir()
        for index in range(count):
            (tmp_path / synset / f"img{index}.JPEG").write_bytes(_png(index))
    (tmp_path / "loose.png").write_bytes(_png(9))
    (tmp_path / "notes.txt").write_text("not an image")
    rows, kind = _rows(load_config(None, [f"input={tmp_path}"]))
    assert kind == "folder"
    assert [(r["image_id"], r["label"]) for r in rows] == [
        ("loose.png", None), ("n01/img0.JPEG", 0), ("n02/img0.JPEG", 1), ("n02/img1.JPEG", 1),
    ]
    assert rows[1]["source_uri"] == str(tmp_path / "n01" / "img0.JPEG")
    assert rows[1]["data"] == _png(0)


def test_a_folder_of_small_images_is_read_by_many_tasks(ray_local, tmp_path):
    """Ray's reader would plan one read task per MiB, here all 200 files in one task fetched one
    by one; the folder reader plans a task per FILES_PER_READ_TASK files, whatever their size,
    and reads every file once, hidden ones left out."""
    from legx.pipeline.engine.sources.folder import FILES_PER_READ_TASK

    (tmp_path / "n01").mkdir()
    for index in range(200):
        (tmp_path / "n01" / f"ILSVRC2012_val_{index:08d}.JPEG").write_bytes(_png(index % 256))
    (tmp_path / "LOC_synset_mapping.txt").write_text("n01 tench\n")
    (tmp_path / "_checkpoints").mkdir()
    (tmp_path / "_checkpoints" / "x.png").write_bytes(_png(1))
    (tmp_path / ".hidden.png").write_bytes(_png(1))
    dataset, _ = read_source(load_config(None, [f"input={tmp_path}"]))
    materialized = dataset.materialize()
    assert materialized.num_blocks() == -(-200 // FILES_PER_READ_TASK)
    rows = sorted(materialized.take_all(), key=lambda row: row["image_id"])
    assert [row["image_id"] for row in rows] == [f"n01/ILSVRC2012_val_{index:08d}.JPEG" for index in range(200)]
    assert all(row["data"] == _png(index % 256) and row["label"] == 0 for index, row in enumerate(rows))


def test_classes_file_fixes_the_label_order(ray_local, tmp_path):
    images = tmp_path / "images"
    for synset in ("a", "b"):
        (images / synset).mkdir(parents=True)
        (images / synset / "x.png").write_bytes(_png(1))
    classes = tmp_path / "classes.txt"
    classes.write_text("b\na\n")
    rows, _ = _rows(load_config(None, [f"input={images}", f"classes={classes}"]))
    assert [(r["image_id"], r["label"]) for r in rows] == [("a/x.png", 1), ("b/x.png", 0)]


def test_webdataset_shards(ray_local, tmp_path):
    for shard in range(2):
        with tarfile.open(tmp_path / f"shard-{shard:03d}.tar", "w") as archive:
            for index in range(2):
                key = f"s{shard}_{index}"
                for extension, data in (("png", _png(index)), ("cls", str(index + 3).encode())):
                    info = tarfile.TarInfo(f"{key}.{extension}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    rows, kind = _rows(load_config(None, [f"input={tmp_path}"]))
    assert kind == "webdataset"
    assert [(r["image_id"], r["label"]) for r in rows] == [
        ("s0_0", 3), ("s0_1", 4), ("s1_0", 3), ("s1_1", 4),
    ]
    assert rows[0]["source_uri"].endswith("shard-000.tar#s0_0") and rows[1]["data"] == _png(1)


def test_parquet_bytes_plain_and_struct_columns(ray_local, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    pq.write_table(
        pa.table({"image_id": ["p0", "p1"], "image": [_png(0), _png(1)], "label": [5, None]}),
        plain / "part-0.parquet",
    )
    rows, kind = _rows(load_config(None, [f"input={plain}"]))
    assert kind == "parquet"
    assert [(r["image_id"], r["label"], r["data"]) for r in rows] == [("p0", 5, _png(0)), ("p1", None, _png(1))]

    struct = tmp_path / "hf"
    struct.mkdir()
    images = pa.array([{"bytes": _png(2), "path": "cat/1.png"}],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": images}), struct / "train.parquet")
    rows, _ = _rows(load_config(None, [f"input={struct}"]))
    assert [(r["image_id"], r["data"]) for r in rows] == [("cat/1.png", _png(2))]


def test_parquet_without_ids_is_a_clear_error(ray_local, tmp_path):
    pq.write_table(pa.table({"image": [_png(0)]}), tmp_path / "x.parquet")
    with pytest.raises(SourceError, match="no id column"):
        read_source(load_config(None, [f"input={tmp_path}"]))


def test_limit_and_annotations(ray_local, tmp_path):
    for index in range(5):
        (tmp_path / f"{index}.png").write_bytes(_png(index))
    pq.write_table(pa.table({"image_id": ["0.png"], "label": [2], "extra": ["x"]}),
                   tmp_path / "annotations.parquet")
    config = load_config(None, [f"input={tmp_path}", "limit=3"])
    dataset, kind = read_source(config)
    assert dataset.count() == 3
    annotations = read_annotations(config, kind)
    assert annotations.table.column_names == ["image_id", "label"]


def test_detect_format_errors(tmp_path):
    import pyarrow.fs as pafs

    with pytest.raises(SourceError, match="does not exist"):
        detect_format(pafs.LocalFileSystem(), str(tmp_path / "missing"))
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(SourceError, match="found no images"):
        detect_format(pafs.LocalFileSystem(), str(tmp_path))


def read(config, filesystem, root):
    """The reader of the ``lines`` format that the next test registers: one image per line of
    a text file, ``IMAGE_ID GREY_LEVEL``."""
    import ray

    with filesystem.open_input_stream(root) as stream:
        lines = [line.split() for line in stream.read().decode().splitlines() if line.strip()]
    return ray.data.from_arrow(pa.table({
        "image_id": [image_id for image_id, _ in lines],
        "source_uri": [f"{root}#{image_id}" for image_id, _ in lines],
        "label": pa.array([None] * len(lines), pa.int64()),
        "data": [_png(int(level)) for _, level in lines],
    }))


def test_a_new_format_is_one_module_and_one_registry_line(ray_local, tmp_path, monkeypatch):
    import pyarrow.fs as pafs

    monkeypatch.setitem(FORMATS, "lines", Format(__name__, ("lines",), ".lines files", single_file=True))
    (tmp_path / "images.lines").write_text("dark 10\nbright 240\n")
    rows, kind = _rows(load_config(None, [f"input={tmp_path / 'images.lines'}"]))
    assert kind == "lines"
    assert [(row["image_id"], Image.open(io.BytesIO(row["data"])).getpixel((0, 0))) for row in rows] == [
        ("bright", (240, 240, 240)), ("dark", (10, 10, 10))]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match=r"neither \.tar nor \.parquet nor \.lines"):
        detect_format(pafs.LocalFileSystem(), str(tmp_path / "notes.txt"))


def test_the_format_names_and_the_output_layout_import_neither_torch_nor_ray():
    """The config's input_format choices, the names ``legx show`` reads, the schema and the
    sink's layout come without the job's heavy stack; Ray loads only where a reader runs."""
    formats, heavy = json.loads(subprocess.check_output([sys.executable, "-c", """
import json, sys
from legx.pipeline.engine.sources import FORMATS, ID_COLUMNS, IMAGE_COLUMNS, IMAGE_EXTENSIONS
from legx.pipeline.engine.schema import output_schema
import legx.pipeline.engine.sink, legx.pipeline.engine.manifest
output_schema()
print(json.dumps([list(FORMATS), [name for name in ("torch", "ray") if name in sys.modules]]))
"""], text=True))
    assert formats == ["folder", "webdataset", "parquet"] and heavy == []
