"""The synthetic demo dataset: determinism, ground truth consistent with the pixels, Parquet schema."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from legx.pipeline.demo.data import (
    ANNOTATIONS_FILE,
    CLASS_NAMES,
    demo_image_name,
    make_demo_arrays,
    make_demo_sample,
    write_demo_dataset,
)


def test_image_depends_only_on_seed_and_index():
    first = make_demo_sample(seed=3, index=17)
    again = make_demo_sample(seed=3, index=17)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.mask, again.mask)
    assert (first.label, first.box) == (again.label, again.box)
    # Position in a batch does not matter: index 17 from a batch starting at 15.
    images, labels, masks = make_demo_arrays(4, seed=3, start=15)
    np.testing.assert_array_equal(images[2], first.image)
    np.testing.assert_array_equal(masks[2], first.mask)
    assert labels[2] == first.label
    assert not np.array_equal(make_demo_sample(seed=4, index=17).image, first.image)
    assert not np.array_equal(make_demo_sample(seed=3, index=18).image, first.image)


@pytest.mark.parametrize("image_size", [64, 40, 97])
def test_mask_box_and_pixels_agree(image_size):
    labels = []
    for index in range(60):
        sample = make_demo_sample(seed=11, index=index, image_size=image_size)
        labels.append(sample.label)
        assert sample.image.shape == (image_size, image_size, 3) and sample.image.dtype == np.uint8
        assert sample.mask.shape == (image_size, image_size) and sample.mask.dtype == bool
        # The object lies inside the image and has a real extent.
        assert 20 <= sample.mask.sum() <= 0.5 * image_size**2
        rows, cols = np.nonzero(sample.mask)
        assert sample.box == (cols.min(), rows.min(), cols.max(), rows.max())
        x_min, y_min, x_max, y_max = sample.box
        assert 0 <= x_min < x_max < image_size and 0 <= y_min < y_max < image_size
        # Painting the object changes pixels only inside the mask, and almost all of them.
        changed = (sample.image != sample.background).any(axis=2)
        assert not (changed & ~sample.mask).any()
        assert changed[sample.mask].mean() > 0.9
        # The object stands out from what lies under it.
        contrast = np.abs(
            sample.image[sample.mask].astype(float).mean(0) - sample.background[sample.mask].astype(float).mean(0)
        )
        assert np.linalg.norm(contrast) > 40
    assert set(labels) == set(range(len(CLASS_NAMES)))


def test_shapes_are_what_their_names_say():
    """Known answers on the geometry: fill ratio of the mask in its box, holes, convexity."""
    from scipy import ndimage
    from skimage.morphology import convex_hull_image

    by_class: dict[str, list] = {name: [] for name in CLASS_NAMES}
    index = 0
    while min(len(found) for found in by_class.values()) < 3:
        sample = make_demo_sample(seed=5, index=index, image_size=96)
        by_class[sample.class_name].append(sample.mask)
        index += 1
    for name, masks in by_class.items():
        for mask in masks:
            holes = ndimage.binary_fill_holes(mask) & ~mask
            solidity = mask.sum() / convex_hull_image(mask).sum()
            assert (holes.sum() > 10) == (name == "ring"), name
            if name in ("circle", "square", "triangle"):
                assert solidity > 0.9, (name, solidity)
            if name in ("star", "cross"):
                assert solidity < 0.8, (name, solidity)


def test_written_dataset_reads_back_with_duckdb_and_pyarrow(tmp_path):
    out = write_demo_dataset(tmp_path / "demo", count=12, seed=7, image_size=48)
    assert out == tmp_path / "demo"
    table = pq.read_table(out / ANNOTATIONS_FILE)
    assert table.schema.field("image_id").type == pa.string()
    assert table.schema.field("label").type == pa.int64()
    assert table.schema.field("class_name").type == pa.string()
    assert table.schema.field("box").type == pa.list_(pa.int32())
    assert table.schema.field("height").type == pa.int32()
    assert table.schema.field("width").type == pa.int32()
    assert table.schema.field("mask").type == pa.list_(pa.uint8())

    rows = duckdb.sql(
        f"select image_id, label, class_name, box, height, width, mask "
        f"from read_parquet('{out / ANNOTATIONS_FILE}') order by image_id"
    ).fetchall()
    assert [row[0] for row in rows] == [demo_image_name(i) for i in range(12)]
    assert rows[0][0] == "demo_000000.png"
    for index, (image_id, label, class_name, box, height, width, mask) in enumerate(rows):
        sample = make_demo_sample(seed=7, index=index, image_size=48)
        pixels = np.asarray(Image.open(out / image_id))
        np.testing.assert_array_equal(pixels, sample.image)  # PNG is lossless
        assert (label, class_name) == (sample.label, CLASS_NAMES[sample.label])
        assert tuple(box) == sample.box and (height, width) == (48, 48)
        np.testing.assert_array_equal(np.asarray(mask, dtype=bool).reshape(height, width), sample.mask)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="count"):
        write_demo_dataset(tmp_path, count=0)
    with pytest.raises(ValueError, match="image_size"):
        make_demo_sample(seed=0, index=0, image_size=8)
    with pytest.raises(ValueError, match=">= 0"):
        make_demo_sample(seed=0, index=-1)
