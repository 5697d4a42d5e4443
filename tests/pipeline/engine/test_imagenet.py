"""ImageNet's own files as they ship: LOC_val_solution.csv, ILSVRC XML folders (local and in S3)
and LOC_synset_mapping.txt, written by the tests in the exact real formats; boxes through the
resize and crop; the union of the explained class's boxes as ground truth; jobs on a flat folder
and on WebDataset shards."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from legx.methods.metrics.localisation import mask_energy, pointing_game
from legx.pipeline.engine.config import ConfigError, load_config
from legx.pipeline.engine.images import fit_boxes, fit_image, open_image
from legx.pipeline.engine.score import target_region
from legx.pipeline.engine.sources import read_annotations
from legx.pipeline.engine.sources.imagenet import parse_class_list

MAPPING = (
    "n01440764 tench, Tinca tinca\n"
    "n01443537 goldfish, Carassius auratus\n"
    "n01484850 great white shark, white shark, man-eater\n"
)
# Image 1: two tench boxes and a goldfish box; image 2: one shark box; image 3: a box with
# min > max (dropped) next to a good one.
LOC_CSV = (
    "ImageId,PredictionString\n"
    "ILSVRC2012_val_00000001,n01440764 10 12 40 44 n01440764 50 8 70 30 n01443537 0 0 5 5 \n"
    "ILSVRC2012_val_00000002,n01484850 3 4 60 62 \n"
    "ILSVRC2012_val_00000003,n01443537 30 5 10 20 n01443537 1 2 3 4 \n"
)


def voc_xml(filename: str, width: int, height: int, objects: list[tuple[str, tuple]]) -> str:
    """An ILSVRC2012 bounding-box file, laid out as ImageNet ships them."""
    parts = [
        "<annotation>",
        "\t<folder>val</folder>",
        f"\t<filename>{filename}</filename>",
        "\t<source>\n\t\t<database>ILSVRC_2012</database>\n\t</source>",
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for name, (x_min, y_min, x_max, y_max) in objects:
        parts.append(
            f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>"
            f"\n\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x_min}</xmin>\n\t\t\t<ymin>{y_min}</ymin>"
            f"\n\t\t\t<xmax>{x_max}</xmax>\n\t\t\t<ymax>{y_max}</ymax>\n\t\t</bndbox>\n\t</object>"
        )
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


# The pitfalls: a box partly outside <size> (clipped), one wholly outside (dropped), one with
# min > max (dropped), an object that is not a synset (dropped), and a good one in each file.
XML_FILES = {
    "ILSVRC2012_val_00000001": voc_xml("ILSVRC2012_val_00000001", 80, 60, [
        ("n01440764", (10, 12, 40, 44)), ("n01440764", (50, 8, 95, 30)), ("n01443537", (100, 70, 120, 80)),
    ]),
    "ILSVRC2012_val_00000002": voc_xml("ILSVRC2012_val_00000002", 80, 60, [
        ("n01484850", (3, 4, 60, 55)), ("n01484850", (40, 30, 20, 50)), ("background", (1, 1, 5, 5)),
    ]),
}


def _config(tmp_path, annotations: str, classes: str | None, **more):
    overrides = [f"input={tmp_path}", f"annotations={annotations}"] + ([f"classes={classes}"] if classes else [])
    return load_config(None, overrides + [f"{key}={value}" for key, value in more.items()])


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_synset_mapping_and_plain_class_lists():
    mapping = parse_class_list(MAPPING)
    assert mapping.keys == ("n01440764", "n01443537", "n01484850")
    assert mapping.names == ("tench", "goldfish", "great white shark")
    plain = parse_class_list("n01440764\nn01443537\n\n")
    assert plain.keys == ("n01440764", "n01443537") and plain.names is None


def test_loc_csv_several_boxes_per_image_recognised_by_content(tmp_path):
    classes = _write(tmp_path / "LOC_synset_mapping.txt", MAPPING)
    # Named as nothing in particular: the header tells what it is.
    solution = _write(tmp_path / "solution.dat", LOC_CSV)
    annotations = read_annotations(_config(tmp_path, solution, classes), "folder")
    rows = {row["image_id"]: row for row in annotations.table.to_pylist()}
    assert [(b["x_min"], b["y_min"], b["x_max"], b["y_max"], b["label"]) for b in rows["ILSVRC2012_val_00000001"]["boxes"]] == [
        (10, 12, 40, 44, 0), (50, 8, 70, 30, 0), (0, 0, 5, 5, 1)]
    assert rows["ILSVRC2012_val_00000001"]["label"] == 0
    assert rows["ILSVRC2012_val_00000002"]["label"] == 2
    assert [b["x_min"] for b in rows["ILSVRC2012_val_00000003"]["boxes"]] == [1]
    assert rows["ILSVRC2012_val_00000003"]["height"] is None  # the CSV gives no image size
    counts = annotations.counts.as_dict()
    assert counts == {"format": "loc_csv", "images": 3, "images_with_label": 3, "images_with_boxes": 3,
                      "boxes": 5, "boxes_clipped": 0, "boxes_dropped": 1, "objects_not_synset": 0}


def _xml_folder_checks(annotations) -> None:
    rows = {row["image_id"]: row for row in annotations.table.to_pylist()}
    first, second = rows["ILSVRC2012_val_00000001"], rows["ILSVRC2012_val_00000002"]
    assert (first["height"], first["width"]) == (60, 80)
    # The second tench box reaches past the 80 px width: clipped to x 79; the goldfish box lies
    # wholly outside the image: dropped.
    assert [(b["x_min"], b["y_min"], b["x_max"], b["y_max"], b["label"]) for b in first["boxes"]] == [
        (10, 12, 40, 44, 0), (50, 8, 79, 30, 0)]
    assert [(b["x_min"], b["x_max"], b["label"]) for b in second["boxes"]] == [(3, 60, 2)]
    assert annotations.counts.as_dict() == {
        "format": "xml_folder", "images": 2, "images_with_label": 2, "images_with_boxes": 2, "boxes": 3,
        "boxes_clipped": 1, "boxes_dropped": 2, "objects_not_synset": 1}


def test_xml_folder_with_the_pitfalls(tmp_path):
    classes = _write(tmp_path / "LOC_synset_mapping.txt", MAPPING)
    folder = tmp_path / "val_xml"
    folder.mkdir()
    for stem, text in XML_FILES.items():
        _write(folder / f"{stem}.xml", text)
    _xml_folder_checks(read_annotations(_config(tmp_path, str(folder), classes), "folder"))


def test_xml_folder_in_object_storage(tmp_path, s3_endpoint, s3_bucket):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for stem, text in XML_FILES.items():
        client.put_object(Bucket=s3_bucket, Key=f"bbox/val/{stem}.xml", Body=text.encode())
    client.put_object(Bucket=s3_bucket, Key="LOC_synset_mapping.txt", Body=MAPPING.encode())
    config = load_config(None, [f"input={tmp_path}", f"annotations=s3://{s3_bucket}/bbox/val",
                                f"classes=s3://{s3_bucket}/LOC_synset_mapping.txt",
                                f"storage.endpoint_url={s3_endpoint}"])
    _xml_folder_checks(read_annotations(config, "folder"))


def test_bad_annotation_files_are_config_errors_before_work(tmp_path):
    classes = _write(tmp_path / "classes.txt", MAPPING)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(ConfigError, match="cannot read"):
        read_annotations(_config(tmp_path, str(tmp_path / "broken.parquet"), classes), "folder")
    text = _write(tmp_path / "notes.txt", "image,box\n1,2\n")
    with pytest.raises(ConfigError, match="expected Parquet"):
        read_annotations(_config(tmp_path, text, classes), "folder")
    solution = _write(tmp_path / "LOC_val_solution.csv", LOC_CSV)
    with pytest.raises(ConfigError, match="set classes"):
        read_annotations(_config(tmp_path, solution, None), "folder")
    # A synset missing from the class list: its index is unknown, so the job cannot start.
    short = _write(tmp_path / "short.txt", MAPPING.splitlines()[0] + "\n")
    with pytest.raises(ConfigError, match="2 synset.*n01443537, n01484850"):
        read_annotations(_config(tmp_path, solution, short), "folder")
    ragged = _write(tmp_path / "ragged.csv", "ImageId,PredictionString\nimg,n01440764 1 2 3\n")
    with pytest.raises(ConfigError, match="groups of five"):
        read_annotations(_config(tmp_path, ragged, classes), "folder")
    bad_xml = tmp_path / "bad_xml"
    bad_xml.mkdir()
    _write(bad_xml / "a.xml", "<annotation><size><width>4</width>")
    with pytest.raises(ConfigError, match="not well-formed"):
        read_annotations(_config(tmp_path, str(bad_xml), classes), "folder")


def _box_image(width: int, height: int, box: tuple[int, int, int, int]) -> bytes:
    """A black PNG with a white rectangle over ``box`` (inclusive pixel indices)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    x_min, y_min, x_max, y_max = box
    pixels[y_min : y_max + 1, x_min : x_max + 1] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["crop", "stretch"])
def test_a_box_through_resize_and_crop_lands_on_its_pixels(mode):
    """Known answer: the fitted box covers the fitted image's white pixels, and only them (a
    pixel of bilinear blur at the edges aside). The image is 200 x 100, fitted to 50: the crop
    cuts 25 px off each side; the second box lies in the cut and is dropped."""
    box = (60, 10, 99, 69)
    image = open_image(_box_image(200, 100, box))
    fitted = fit_image(image, 50, mode)
    white = fitted[..., 0] > 127
    kept = fit_boxes([{"x_min": 60, "y_min": 10, "x_max": 99, "y_max": 69, "label": 4},
                      {"x_min": 0, "y_min": 0, "x_max": 40, "y_max": 40, "label": 4}],
                     None, (100, 200), 50, mode)
    expected_kept = 1 if mode == "crop" else 2
    assert len(kept) == expected_kept
    region = target_region(kept[:1], 4, 50)
    inside = np.argwhere(region)
    rows, cols = inside[:, 0], inside[:, 1]
    interior = region.copy()
    interior[[rows.min(), rows.max()], :] = False
    interior[:, [cols.min(), cols.max()]] = False
    assert white[interior].all()
    # One pixel of blur around the box at most: nothing white beyond it.
    grown = np.zeros_like(region)
    grown[max(rows.min() - 1, 0) : rows.max() + 2, max(cols.min() - 1, 0) : cols.max() + 2] = True
    assert white.any() and not white[~grown].any()
    if mode == "crop":
        # scale 0.5 then 25 px off the left: x 60..99 -> 5..24, y 10..69 -> 5..34.
        assert (cols.min(), cols.max(), rows.min(), rows.max()) == (5, 24, 5, 34)
    else:
        # x scaled by 0.25, y by 0.5: x 60..99 -> 15..24, y 10..69 -> 5..34.
        assert (cols.min(), cols.max(), rows.min(), rows.max()) == (15, 24, 5, 34)


def test_boxes_of_an_xml_whose_size_differs_from_the_image_are_scaled():
    """The XML says 100 x 50, the image decodes at 200 x 100: the box is scaled by two
    first: (60, 10, 98, 68), then halved and 25 px cut off the left."""
    kept = fit_boxes([{"x_min": 30, "y_min": 5, "x_max": 49, "y_max": 34, "label": None}],
                     (50, 100), (100, 200), 50, "crop")
    assert [(b["x_min"], b["y_min"], b["x_max"], b["y_max"]) for b in kept] == [(5.0, 5.0, 24.0, 34.0)]


def test_the_ground_truth_is_the_union_of_the_explained_class_boxes():
    """Known answers: a map peaking in the second box of the explained class hits; a map
    peaking in a box of another class misses; no box of the class leaves NaN."""
    boxes = [
        {"x_min": 1.0, "y_min": 1.0, "x_max": 4.0, "y_max": 4.0, "label": 3},
        {"x_min": 10.0, "y_min": 10.0, "x_max": 13.0, "y_max": 13.0, "label": 3},
        {"x_min": 1.0, "y_min": 10.0, "x_max": 4.0, "y_max": 13.0, "label": 7},
    ]
    peak_second = np.zeros((1, 16, 16))
    peak_second[0, 12, 11] = 1.0
    peak_other = np.zeros((1, 16, 16))
    peak_other[0, 12, 2] = 1.0
    region = target_region(boxes, 3, 16)[None]
    assert region.sum() == 32
    assert pointing_game(peak_second, region)[0] == 1.0
    assert mask_energy(peak_second, region)[0] == 1.0
    assert pointing_game(peak_other, region)[0] == 0.0
    assert np.isnan(pointing_game(peak_other, target_region(boxes, 5, 16)[None])[0])
    # A box of no stated class (legx's single-box Parquet) is the evidence of any target.
    unstated = [dict(boxes[2], label=None)]
    assert pointing_game(peak_other, target_region(unstated, 5, 16)[None])[0] == 1.0


def _imagenet_images(folder, sizes: dict[str, tuple[int, int]]) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, (width, height) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"{stem}.JPEG", "JPEG")


DEMO_MAPPING = "".join(f"n{index:08d} class {index}, a demo class\n" for index in range(6))


def _job(tmp_path, source: str, annotations: str, classes: str, run_id: str):
    from legx.pipeline.engine.run import run_job

    config = load_config(None, [
        f"input={source}", f"output={tmp_path / 'out'}", "model=demo", "image_size=32", f"run_id={run_id}",
        f"annotations={annotations}", f"classes={classes}", "methods=[grad-cam]",
        "metrics=[pointing_game,mask_energy]", "target=label",
    ])
    return run_job(config)


def _rows(tmp_path, run_id: str) -> dict:
    import duckdb

    query = (f"select image_id, label, label_name, target, target_name, boxes, pointing_game, mask_energy,"
             f" region_share from read_parquet('{tmp_path / 'out'}/saliency/*.parquet') where run_id = '{run_id}'")
    return {row[0]: row[1:] for row in duckdb.sql(query).fetchall()}


def test_flat_folder_and_webdataset_jobs_on_loc_annotations(ray_local, tmp_path):
    """A flat folder of ILSVRC-named JPEGs with a LOC_val_solution.csv (several boxes, one
    image wider than tall so that the crop cuts a box away) gets labels, names and boxes by file
    stem; the same images as WebDataset shards get the same rows."""
    sizes = {"ILSVRC2012_val_00000001": (64, 64), "ILSVRC2012_val_00000002": (96, 48),
             "ILSVRC2012_val_00000003": (40, 40), "ILSVRC2012_val_00000004": (96, 48)}
    _imagenet_images(tmp_path / "val", sizes)
    solution = _write(tmp_path / "LOC_val_solution.csv", (
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000001,n00000002 2 2 20 20 n00000002 40 40 60 60 n00000004 30 0 40 10 \n"
        "ILSVRC2012_val_00000002,n00000001 0 0 10 47 n00000001 40 10 60 40 \n"
        "ILSVRC2012_val_00000003,n00000005 0 0 8 8 \n"
        "ILSVRC2012_val_00000004,n00000003 80 0 95 47 \n"))
    classes = _write(tmp_path / "LOC_synset_mapping.txt", DEMO_MAPPING)
    summary = _job(tmp_path, str(tmp_path / "val"), solution, classes, "flat")
    assert (summary.images, summary.ok, summary.errors) == (4, 4, 0)
    rows = _rows(tmp_path, "flat")
    first = rows["ILSVRC2012_val_00000001.JPEG"]
    assert first[:4] == (2, "class 2", 2, "class 2")
    # 64 -> 32: every coordinate halves.
    assert [(b["x_min"], b["y_min"], b["x_max"], b["y_max"], b["label"]) for b in first[4]] == [
        (1, 1, 10, 10, 2), (20, 20, 30, 30, 2), (15, 0, 20, 5, 4)]
    assert first[7] == pytest.approx((10 * 10 + 11 * 11) / 32**2)  # the union of the class-2 boxes
    # 96 x 48 -> 64 x 32, 16 px cut off each side: the first box (x 0..10 -> 0..6.7) is gone.
    second = rows["ILSVRC2012_val_00000002.JPEG"]
    assert [(b["x_min"], b["x_max"]) for b in second[4]] == [pytest.approx((40 * 2 / 3 - 16, 60 * 2 / 3 - 16))]
    # The fourth image's only box lies in the cut: no ground truth, counted with its reason.
    assert rows["ILSVRC2012_val_00000004.JPEG"][4:7] == ([], None, None)
    assert summary.ground_truth["images_with_label"] == summary.ground_truth["images_with_boxes"] == 4
    assert summary.ground_truth["boxes_cropped_away"] == 2
    assert summary.ground_truth["boxes_in_crop"] == 5
    assert summary.ground_truth["maps_without_target_box"] == {"every_box_cropped_away": 1,
                                                               "boxes_of_other_classes_only": 0}
    assert summary.ground_truth["read"]["boxes"] == 7
    manifest = json.loads((tmp_path / "out" / "runs" / "flat.json").read_text())
    assert manifest["ground_truth"] == summary.ground_truth

    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "val-000000.tar", "w") as archive:
        for stem in sizes:
            archive.add(tmp_path / "val" / f"{stem}.JPEG", arcname=f"{stem}.jpg")
    _job(tmp_path, str(shards), solution, classes, "shards")
    shard_rows = _rows(tmp_path, "shards")
    assert {key: value for key, value in shard_rows.items()} == {
        key.removesuffix(".JPEG"): value for key, value in rows.items()}


class FirstClassModel(torch.nn.Module):
    """Six classes; the top-1 class is always 0 (a little of the image moves its logit)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(images.shape[0], 6)
        logits[:, 0] = 5.0 + images.mean(dim=(1, 2, 3))
        return logits


def test_maps_of_a_class_without_boxes_are_counted(ray_local, tmp_path):
    """Explaining the top-1 class when no box is of it: the maps get no ground truth (NaN), and
    the manifest says why, apart from the image whose only box the crop cut away."""
    from legx.pipeline.engine.run import run_job

    sizes = {"ILSVRC2012_val_00000001": (32, 32), "ILSVRC2012_val_00000002": (32, 32),
             "ILSVRC2012_val_00000003": (64, 32)}
    _imagenet_images(tmp_path / "val", sizes)
    solution = _write(tmp_path / "LOC_val_solution.csv", (
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000001,n00000002 2 2 20 20 n00000004 1 1 5 5 \n"
        "ILSVRC2012_val_00000002,n00000001 0 0 10 10 \n"
        "ILSVRC2012_val_00000003,n00000003 0 0 4 31 \n"))
    classes = _write(tmp_path / "LOC_synset_mapping.txt", DEMO_MAPPING)
    model = tmp_path / "first.pt"
    torch.jit.script(FirstClassModel()).save(str(model))
    summary = run_job(load_config(None, [
        f"input={tmp_path / 'val'}", f"output={tmp_path / 'out'}", f"model={model}", "image_size=16",
        "run_id=top1", f"annotations={solution}", f"classes={classes}", "methods=[leg]", "leg.n_samples=16",
        "leg.grid_size=4", "metrics=[pointing_game,mask_energy]"]))
    assert summary.ground_truth["maps_without_target_box"] == {"every_box_cropped_away": 1,
                                                               "boxes_of_other_classes_only": 2}
    rows = _rows(tmp_path, "top1")
    assert {row[2] for row in rows.values()} == {0}
    assert all(row[5] is None and row[6] is None for row in rows.values())


def test_a_class_list_that_does_not_match_the_model_is_an_error_before_work(ray_local, tmp_path):
    _imagenet_images(tmp_path / "val", {"ILSVRC2012_val_00000001": (32, 32)})
    solution = _write(tmp_path / "LOC_val_solution.csv", "ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 1 5 5\n")
    classes = _write(tmp_path / "LOC_synset_mapping.txt", MAPPING)
    with pytest.raises(ConfigError, match="lists 3 classes, but the model 'demo' has 6 outputs"):
        _job(tmp_path, str(tmp_path / "val"), solution, classes, "mismatch")
    assert not (tmp_path / "out" / "saliency").exists()


def test_imagenet_layout_of_the_demo_set_gives_the_numbers_of_its_parquet(ray_local, tmp_path):
    """`legx demo-data --layout imagenet`: the same job on its LOC_val_solution.csv and on legx's
    Parquet annotations of the same boxes (the masks' bounding boxes) gives the same per-image
    pointing game and mask energy."""
    from legx.pipeline.cli.main import main
    from legx.pipeline.demo.data import imagenet_image_stem, write_demo_dataset

    layout = tmp_path / "imagenet"
    assert main(["demo-data", "--layout", "imagenet", "--count", "6", "--image-size", "32", str(layout)]) == 0
    demo = write_demo_dataset(tmp_path / "demo", 6, image_size=32)
    own = pq.read_table(demo / "annotations.parquet", columns=["image_id", "label", "box", "height", "width"])
    renamed = own.set_column(0, "image_id", pa.array(
        [imagenet_image_stem(int(name[len("demo_"):-len(".png")])) + ".JPEG" for name in own.column("image_id").to_pylist()]))
    pq.write_table(renamed, tmp_path / "boxes.parquet")
    classes = str(layout / "LOC_synset_mapping.txt")
    _job(tmp_path, str(layout), str(layout / "LOC_val_solution.csv"), classes, "loc")
    _job(tmp_path, str(layout), str(tmp_path / "boxes.parquet"), classes, "parquet")
    import duckdb

    output = tmp_path / "out" / "saliency"
    pairs = duckdb.sql(f"""
        select l.image_id, l.pointing_game, p.pointing_game, l.mask_energy, p.mask_energy
        from (select * from read_parquet('{output}/*.parquet') where run_id = 'loc') l
        join (select * from read_parquet('{output}/*.parquet') where run_id = 'parquet') p using (image_id)
    """).fetchall()
    assert len(pairs) == 6
    # A Grad-CAM map with no mass (all zero) scores NaN (null) in both.
    assert sum(pair[1] is not None for pair in pairs) >= 4
    for _, pointing_loc, pointing_parquet, energy_loc, energy_parquet in pairs:
        assert pointing_loc == pointing_parquet and energy_loc == energy_parquet


def test_class_folders_take_their_order_from_the_synset_mapping(ray_local, tmp_path):
    """ROOT/SYNSET/ folders with LOC_synset_mapping.txt as the classes file: a folder's label is
    its synset's line in the mapping, not its place among the folders."""
    from legx.pipeline.engine.sources import read_source

    for synset in ("n01484850", "n01440764"):
        _imagenet_images(tmp_path / "val" / synset, {"ILSVRC2012_val_00000001": (8, 8)})
    classes = _write(tmp_path / "LOC_synset_mapping.txt", MAPPING)
    dataset, _ = read_source(load_config(None, [f"input={tmp_path / 'val'}", f"classes={classes}"]))
    labels = sorted((row["image_id"], row["label"]) for row in dataset.take_all())
    assert labels == [("n01440764/ILSVRC2012_val_00000001.JPEG", 0), ("n01484850/ILSVRC2012_val_00000001.JPEG", 2)]
