"""Decoding real-world image files to the job's RGB arrays (pipeline.engine.images), no Ray."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from legx.pipeline.engine.images import DecodeError, decode_image, fit_boxes, fit_mask


def test_odd_inputs_decode_or_fail_with_a_reason(odd_files):
    for name, (data, expected) in odd_files.items():
        if expected == "ok":
            image = decode_image(data, 16)
            assert image.shape == (16, 16, 3) and image.dtype == np.uint8, name
        else:
            with pytest.raises(DecodeError) as error:
                decode_image(data, 16)
            assert str(error.value), name


def test_error_reasons_are_readable():
    with pytest.raises(DecodeError, match="empty file"):
        decode_image(b"", 8)
    with pytest.raises(DecodeError, match="not a recognised image format"):
        decode_image(b"hello world", 8)


def test_exif_orientation_is_applied():
    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:, :10] = (255, 0, 0)  # left half red
    stored[:, 10:] = (0, 0, 255)  # right half blue
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif)
    decoded = decode_image(buffer.getvalue(), 8, mode="stretch")
    # Displayed upright, the left half of the stored pixels is on top.
    assert decoded[0, :, 0].min() > 200 and decoded[0, :, 2].max() < 50
    assert decoded[-1, :, 2].min() > 200 and decoded[-1, :, 0].max() < 50


def test_sixteen_bit_is_scaled_by_bit_depth():
    values = np.full((4, 4), 32768, np.uint16)  # half of the 16-bit range
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    decoded = decode_image(buffer.getvalue(), 4)
    assert np.all(np.abs(decoded.astype(int) - 128) <= 1)


def test_crop_keeps_the_centre_and_geometry_matches_for_masks_and_boxes():
    # A 20 x 40 (h x w) image whose centre 20 x 20 square is white; crop -> all white.
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 10:30] = 255
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    # (Stretching would leave the outer quarters black.)
    assert decode_image(buffer.getvalue(), 10, mode="crop").mean(axis=(0, 2)).min() > 200
    mask = np.zeros((20, 40), np.uint8)
    mask[5:15, 15:25] = 1
    fitted = fit_mask(mask, 10, "crop")
    assert fitted.shape == (10, 10)
    rows, cols = np.nonzero(fitted)
    (fitted_box,) = fit_boxes([{"x_min": 15, "y_min": 5, "x_max": 24, "y_max": 14, "label": None}],
                              None, (20, 40), 10, "crop")
    box = [fitted_box[key] for key in ("x_min", "y_min", "x_max", "y_max")]
    assert box[0] == pytest.approx(cols.min(), abs=1) and box[2] == pytest.approx(cols.max(), abs=1)
    assert box[1] == pytest.approx(rows.min(), abs=1) and box[3] == pytest.approx(rows.max(), abs=1)
