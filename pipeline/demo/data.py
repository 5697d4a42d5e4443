"""The bundled demo dataset: synthetic shapes on cluttered backgrounds, with ground truth.

Each image holds exactly one object of one of ``CLASS_NAMES`` (random colour, size, rotation
and position) painted over a cluttered background: a smooth random colour field, a faint
grating of random orientation and period, pixel noise, thin line segments and short bars. The
clutter is built from elongated strokes only, so it never contains a class shape and the label
stays unambiguous; because the object can sit anywhere on the clutter, a classifier that does
well must look at the object, which is what the saliency metrics (pointing game, mass in box)
check against the stored mask.

Image ``i`` of a dataset depends only on ``(seed, i)`` (its own ``numpy`` generator seeded
with both), so any slice of a dataset can be regenerated on its own, in any order.

``legx demo-data DIR --count N`` calls ``write_demo_dataset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

CLASS_NAMES: list[str] = ["circle", "square", "triangle", "star", "cross", "ring"]

ANNOTATIONS_FILE = "annotations.parquet"

ANNOTATIONS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("label", pa.int64()),
        ("class_name", pa.string()),
        ("box", pa.list_(pa.int32())),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("mask", pa.list_(pa.uint8())),
    ]
)

# Object radius as a fraction of the image side: 9 to 17 px at 64 px.
_RADIUS_RANGE = (0.14, 0.27)
# Minimum RGB distance (on [0, 1]) between the object colour and the background under it.
_MIN_CONTRAST = 0.35


@dataclass(frozen=True)
class DemoSample:
    """One generated image with its ground truth.

    ``background`` is the same image without the object, so ``image != background`` only
    inside ``mask``. ``box`` is (x_min, y_min, x_max, y_max), inclusive pixel indices of the
    mask's bounding box.
    """

    image: np.ndarray  # uint8 (H, W, 3)
    background: np.ndarray  # uint8 (H, W, 3)
    label: int
    mask: np.ndarray  # bool (H, W)
    box: tuple[int, int, int, int]

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]


def _polygon_inside(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon test of points (u, v) against closed ``vertices`` (K, 2)."""
    inside = np.zeros(u.shape, dtype=bool)
    x0, y0 = vertices[:, 0], vertices[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for ax, ay, bx, by in zip(x0, y0, x1, y1):
        if ay == by:
            continue
        crosses = (ay > v) != (by > v)
        x_cross = ax + (v - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (u < x_cross)
    return inside


def _regular_star(points: int, inner: float) -> np.ndarray:
    angles = np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_TRIANGLE = np.stack(
    [np.cos(np.pi / 2 + np.arange(3) * 2 * np.pi / 3), np.sin(np.pi / 2 + np.arange(3) * 2 * np.pi / 3)],
    axis=1,
)
_SQUARE = np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])
_STAR = _regular_star(5, 0.45)
_ARM = 0.32
_CROSS = np.array(
    [
        [-_ARM, -1], [_ARM, -1], [_ARM, -_ARM], [1, -_ARM], [1, _ARM], [_ARM, _ARM],
        [_ARM, 1], [-_ARM, 1], [-_ARM, _ARM], [-1, _ARM], [-1, -_ARM], [-_ARM, -_ARM],
    ]
)


def _shape_mask(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of the unit-radius shape ``label`` at local coordinates (u, v)."""
    name = CLASS_NAMES[label]
    if name == "circle":
        return u * u + v * v <= 1.0
    if name == "ring":
        rho2 = u * u + v * v
        return (rho2 <= 1.0) & (rho2 >= 0.36)
    polygon = {"square": _SQUARE, "triangle": _TRIANGLE, "star": _STAR, "cross": _CROSS}[name]
    return _polygon_inside(u, v, polygon)


def _segments_mask(
    rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, count: int, size: int,
    length: tuple[float, float], half_width: tuple[float, float],
) -> list[np.ndarray]:
    """Masks of ``count`` random straight strokes (capsules) of the given length and width."""
    strokes = []
    for _ in range(count):
        cx, cy = rng.uniform(0, size, 2)
        angle = rng.uniform(0, np.pi)
        half = rng.uniform(*length) * size / 2
        dx, dy = np.cos(angle) * half, np.sin(angle) * half
        ax, ay = cx - dx, cy - dy
        along = np.clip(((xs - ax) * 2 * dx + (ys - ay) * 2 * dy) / (4 * half * half), 0.0, 1.0)
        dist2 = (xs - ax - along * 2 * dx) ** 2 + (ys - ay - along * 2 * dy) ** 2
        strokes.append(dist2 <= rng.uniform(*half_width) ** 2)
    return strokes


def _background(rng: np.random.Generator, size: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A cluttered float background (H, W, 3) in [0, 1] without any class shape."""
    # Smooth colour field: a coarse random colour grid, bilinearly upsampled.
    cells = int(rng.integers(2, 5))
    coarse = rng.uniform(0.0, 1.0, (cells + 1, cells + 1, 3))
    gx = xs[0] * cells / (size - 1)
    gy = ys[:, 0] * cells / (size - 1)
    ix, iy = np.minimum(gx.astype(int), cells - 1), np.minimum(gy.astype(int), cells - 1)
    fx, fy = (gx - ix)[None, :, None], (gy - iy)[:, None, None]
    top = coarse[iy][:, ix] * (1 - fx) + coarse[iy][:, ix + 1] * fx
    bottom = coarse[iy + 1][:, ix] * (1 - fx) + coarse[iy + 1][:, ix + 1] * fx
    canvas = top * (1 - fy) + bottom * fy

    # Faint grating.
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4.0, 16.0)
    phase = (xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period
    canvas += rng.uniform(0.0, 0.15) * np.sin(phase)[..., None] * rng.uniform(-1, 1, 3)

    # Thin line segments and short thick bars in random colours.
    lines = _segments_mask(rng, xs, ys, int(rng.integers(2, 7)), size, (0.2, 0.8), (0.5, 0.9))
    bars = _segments_mask(rng, xs, ys, int(rng.integers(0, 4)), size, (0.15, 0.35), (1.0, 1.6))
    for stroke in lines + bars:
        canvas[stroke] = rng.uniform(0.0, 1.0, 3)

    canvas += rng.normal(0.0, rng.uniform(0.0, 0.06), canvas.shape)
    return np.clip(canvas, 0.0, 1.0)


def make_demo_sample(seed: int, index: int, image_size: int = 64) -> DemoSample:
    """Image ``index`` of the demo dataset with ``seed`` (a pure function of both)."""
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if index < 0 or seed < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([seed, index])
    size = image_size
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    label = int(rng.integers(len(CLASS_NAMES)))
    background = _background(rng, size, xs, ys)

    radius = rng.uniform(*_RADIUS_RANGE) * size
    margin = radius + 1.0
    cx, cy = rng.uniform(margin, size - 1 - margin, 2)
    angle = rng.uniform(0, 2 * np.pi)
    cos, sin = np.cos(angle), np.sin(angle)
    u = ((xs - cx) * cos + (ys - cy) * sin) / radius
    v = (-(xs - cx) * sin + (ys - cy) * cos) / radius
    mask = _shape_mask(label, u, v)

    # The colour farthest from the background under the object among a few draws; redraws
    # until the contrast is clear so that no object is invisible.
    under = background[mask].mean(axis=0)
    colour = rng.uniform(0.0, 1.0, 3)
    for _ in range(16):
        if np.linalg.norm(colour - under) >= _MIN_CONTRAST:
            break
        colour = rng.uniform(0.0, 1.0, 3)
    shading = 1.0 + rng.uniform(-0.15, 0.15) * u  # a mild gradient across the object
    image = background.copy()
    image[mask] = np.clip(colour[None, :] * shading[mask][:, None], 0.0, 1.0)

    image_u8 = np.round(image * 255).astype(np.uint8)
    background_u8 = np.round(background * 255).astype(np.uint8)
    rows, cols = np.nonzero(mask)
    box = (int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max()))
    return DemoSample(image=image_u8, background=background_u8, label=label, mask=mask, box=box)


def make_demo_arrays(
    count: int, seed: int = 0, image_size: int = 64, start: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images ``start .. start+count-1`` as arrays: uint8 (N, H, W, 3), int64 labels (N,),
    bool masks (N, H, W)."""
    samples = [make_demo_sample(seed, start + i, image_size) for i in range(count)]
    images = np.stack([s.image for s in samples]) if samples else np.zeros((0, image_size, image_size, 3), np.uint8)
    labels = np.array([s.label for s in samples], dtype=np.int64)
    masks = np.stack([s.mask for s in samples]) if samples else np.zeros((0, image_size, image_size), bool)
    return images, labels, masks


def demo_image_name(index: int) -> str:
    """File name of image ``index``: demo_000000.png, demo_000001.png, ..."""
    return f"demo_{index:06d}.png"


def write_demo_dataset(directory: str | Path, count: int, seed: int = 0, image_size: int = 64) -> Path:
    """Write ``count`` PNG images and ``annotations.parquet`` into ``directory``; return it.

    The annotations hold one row per image: image_id (the file name), label, class_name,
    box (x_min, y_min, x_max, y_max, inclusive), height, width, and mask (row-major
    height*width uint8, 1 on the object).
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {name: [] for name in ANNOTATIONS_SCHEMA.names}
    for index in range(count):
        sample = make_demo_sample(seed, index, image_size)
        name = demo_image_name(index)
        Image.fromarray(sample.image).save(directory / name, compress_level=1)
        rows["image_id"].append(name)
        rows["label"].append(sample.label)
        rows["class_name"].append(sample.class_name)
        rows["box"].append(list(sample.box))
        rows["height"].append(image_size)
        rows["width"].append(image_size)
        rows["mask"].append(sample.mask.reshape(-1).astype(np.uint8))
    table = pa.table(rows, schema=ANNOTATIONS_SCHEMA)
    pq.write_table(table, directory / ANNOTATIONS_FILE)
    return directory


IMAGENET_LOC_FILE = "LOC_val_solution.csv"
IMAGENET_MAPPING_FILE = "LOC_synset_mapping.txt"


def demo_synset(label: int) -> str:
    """A synset-style id for demo class ``label`` (n00000000, n00000001, ...): the demo classes
    have no WordNet synsets, so these stand in for them in the ImageNet layout."""
    return f"n{label:08d}"


def imagenet_image_stem(index: int) -> str:
    """The ImageNet-style name (without extension) of demo image ``index``:
    ILSVRC2012_val_00000001 for index 0, as ImageNet numbers its validation images from 1."""
    return f"ILSVRC2012_val_{index + 1:08d}"


def write_imagenet_layout(directory: str | Path, count: int, seed: int = 0, image_size: int = 64) -> Path:
    """Write the demo set as ImageNet's validation set ships: a flat folder of
    ``ILSVRC2012_val_XXXXXXXX.JPEG`` files (JPEG, quality 95), ``LOC_val_solution.csv`` (one box
    per image: the bounding box of the object's mask, as ``annotations.parquet`` holds it) and
    ``LOC_synset_mapping.txt`` naming the classes (``demo_synset``) in label order. The images
    are those of ``write_demo_dataset`` with the same seed, index for index."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    solution = ["ImageId,PredictionString"]
    for index in range(count):
        sample = make_demo_sample(seed, index, image_size)
        stem = imagenet_image_stem(index)
        Image.fromarray(sample.image).save(directory / f"{stem}.JPEG", "JPEG", quality=95)
        x_min, y_min, x_max, y_max = sample.box
        solution.append(f"{stem},{demo_synset(sample.label)} {x_min} {y_min} {x_max} {y_max} ")
    (directory / IMAGENET_LOC_FILE).write_text("\n".join(solution) + "\n")
    (directory / IMAGENET_MAPPING_FILE).write_text(
        "".join(f"{demo_synset(label)} {name}\n" for label, name in enumerate(CLASS_NAMES)))
    return directory
