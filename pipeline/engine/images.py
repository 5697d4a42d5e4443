"""Image bytes -> RGB uint8 arrays of the job's size, and the same geometry for ground truth.

Handles what real datasets contain: EXIF orientation, grayscale, palette, CMYK, alpha and
16-bit images. Anything PIL cannot decode raises ``DecodeError`` with a readable reason, which
the pipeline turns into an error row.
"""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class DecodeError(ValueError):
    """The bytes are not a usable image; the message says why."""


def image_digest(data: bytes | None) -> str:
    """The SHA-256 of an image's encoded bytes: what tells copies of a repeated id in one shard
    apart (``legx.pipeline.engine.sources.repeated_ids``)."""
    return hashlib.sha256(data or b"").hexdigest()


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB.

    16-bit and 32-bit integer grayscale are scaled by their bit depth (PIL's own conversion
    clips them to 255 instead). Alpha is dropped as torchvision's loaders do, so that a model
    sees pixels the way it saw them in training.
    """
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def fit(image: Image.Image, size: int, mode: str, resample: int) -> Image.Image:
    """Resize to size x size: 'crop' scales the shorter side to ``size`` and takes the centre;
    'stretch' scales each side on its own."""
    if mode == "stretch":
        return image.resize((size, size), resample)
    width, height = image.size
    scale = size / min(width, height)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    resized = image.resize((new_width, new_height), resample)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def open_image(data: bytes) -> Image.Image:
    """Encoded image bytes -> an 8-bit RGB PIL image at its own size (EXIF orientation
    applied). Raises DecodeError."""
    if len(data) == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL warns on odd EXIF; an error would surface below if it mattered.
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except UnidentifiedImageError:
        raise DecodeError(f"not a recognised image format ({len(data)} bytes)") from None
    except Image.DecompressionBombError as error:
        raise DecodeError(f"image too large: {error}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise DecodeError(f"cannot decode image: {error}") from None


def fit_image(image: Image.Image, size: int, mode: str = "crop") -> np.ndarray:
    """An RGB image -> uint8 (size, size, 3) through the job's geometry."""
    return np.asarray(fit(image, size, mode, Image.BILINEAR), dtype=np.uint8)


def decode_image(data: bytes, size: int, mode: str = "crop") -> np.ndarray:
    """Encoded image bytes -> uint8 (size, size, 3). Raises DecodeError."""
    return fit_image(open_image(data), size, mode)


def fit_mask(mask: np.ndarray, size: int, mode: str) -> np.ndarray:
    """A ground-truth mask (h, w) through the same geometry as its image: uint8 (size, size)."""
    image = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)
    return (np.asarray(fit(image, size, mode, Image.NEAREST)) > 127).astype(np.uint8)


def map_box(box: np.ndarray, height: int, width: int, size: int, mode: str) -> np.ndarray:
    """A box (x_min, y_min, x_max, y_max) in pixels of an (height, width) image, mapped to the
    fitted size x size image as ``fit`` maps the pixels, unclipped: float64 (4,)."""
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    if mode == "stretch":
        scale_x, scale_y, left, top = size / width, size / height, 0.0, 0.0
    else:
        scale = size / min(width, height)
        scale_x = scale_y = scale
        left = (max(size, round(width * scale)) - size) // 2
        top = (max(size, round(height * scale)) - size) // 2
    return np.array(
        [x_min * scale_x - left, y_min * scale_y - top, x_max * scale_x - left, y_max * scale_y - top]
    )


def fit_boxes(boxes: list[dict], annotated: tuple[int, int] | None, decoded: tuple[int, int],
              size: int, mode: str) -> list[dict]:
    """Ground-truth boxes (dicts of ``schema.BOX_TYPE``) through the geometry of their image.

    ``annotated`` is the (height, width) the boxes' coordinates refer to (an XML's ``<size>``),
    None when they are in the decoded image's pixels; where it differs from the ``decoded``
    (height, width), the boxes are scaled to the decoded image first. Each box is clipped to the
    image, mapped as ``fit`` maps the pixels and clipped to the fitted image; a box that lies
    wholly outside the image or the crop is dropped (the caller counts what is missing)."""
    height, width = decoded
    scale_y, scale_x = (1.0, 1.0) if not annotated else (height / annotated[0], width / annotated[1])
    kept = []
    for box in boxes:
        corners = np.array([box["x_min"] * scale_x, box["y_min"] * scale_y,
                            box["x_max"] * scale_x, box["y_max"] * scale_y])
        corners = np.clip(corners, 0, [width - 1, height - 1, width - 1, height - 1])
        if corners[0] > corners[2] or corners[1] > corners[3]:
            continue
        mapped = map_box(corners, height, width, size, mode)
        if mapped[2] < 0 or mapped[3] < 0 or mapped[0] > size - 1 or mapped[1] > size - 1:
            continue
        x_min, y_min, x_max, y_max = np.clip(mapped, 0, size - 1).tolist()
        kept.append({"x_min": x_min, "y_min": y_min, "x_max": x_max, "y_max": y_max, "label": box.get("label")})
    return kept
