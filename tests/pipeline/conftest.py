"""Inputs shared by the pipeline tests: odd-but-valid and undecodable image files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def odd_inputs() -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, expected status). Valid files are 'ok' however odd; the rest
    'error'."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
    gray16 = Image.fromarray((rng.integers(0, 65536, (24, 24))).astype(np.uint16))
    jpeg = _encode(rgb, "JPEG", quality=90)
    return {
        "bad_truncated.jpg": (jpeg[: len(jpeg) // 2], "error"),
        "bad_text.jpg": (b"this is not an image, just text\n" * 4, "error"),
        "bad_empty.jpg": (b"", "error"),
        "odd_one_pixel.png": (_encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), "ok"),
        "odd_gray.png": (_encode(rgb.convert("L"), "PNG"), "ok"),
        "odd_cmyk.jpg": (_encode(rgb.convert("CMYK"), "JPEG"), "ok"),
        "odd_sixteen_bit.png": (_encode(gray16, "PNG"), "ok"),
        "odd_rgba.png": (_encode(rgb.convert("RGBA"), "PNG"), "ok"),
    }


@pytest.fixture
def odd_files():
    return odd_inputs()
