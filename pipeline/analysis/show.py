"""Render one stored map with its image, in the reference's three styles.

* ``overlay``: the image with the map in colour on top (half transparent);
* ``heatmap``: the map alone, in colour;
* ``gray``: the map alone, in grey levels.

Absolute values by default (|map|, sequential colour map); ``signed`` keeps the sign and uses a
diverging colour map centred on 0. Maps are upsampled (bilinear) to the image size.
``significant`` greys out the cells not distinguishable from zero: those whose interval from the
stored standard errors (``saliency_se``) contains zero, with the false-discovery rate over the
map's cells held at ``fdr`` (Benjamini-Hochberg, ``legx.methods.leg.uncertainty.significant_cells``).
"""

from __future__ import annotations

import io
import posixpath
import tarfile

import numpy as np

from legx.methods.resize import upsample_maps
from legx.pipeline.engine.images import DecodeError, decode_image
from legx.pipeline.analysis.query import connect
from legx.pipeline.engine.manifest import read_manifest
from legx.pipeline.engine.sources import IMAGE_EXTENSIONS
from legx.pipeline.engine.sources.common import parquet_ids_and_bytes, parquet_image_columns
from legx.pipeline.engine.storage import StorageOptions, read_bytes, resolve

STYLES = ("overlay", "heatmap", "gray")


def find_row(output: str, image_id: str, storage: StorageOptions, method: str | None = None,
             lam: float | None = None, run_id: str | None = None) -> dict:
    """The newest stored row of ``image_id`` (optionally of a method, lambda and run)."""
    conditions, values = ["image_id = ?"], [image_id]
    for column, value in (("method", method), ("lam", lam), ("run_id", run_id)):
        if value is not None:
            conditions.append(f"{column} = ?")
            values.append(value)
    connection = connect(output, storage)
    result = connection.execute(
        "select * from saliency where " + " and ".join(conditions)
        + " order by (status = 'ok') desc, created_at desc, lam nulls first limit 1",
        values,
    )
    columns = [description[0] for description in result.description]
    row = result.fetchone()
    if row is None:
        wanted = ", ".join(f"{c}={v!r}" for c, v in (("method", method), ("lam", lam), ("run_id", run_id)) if v is not None)
        raise LookupError(f"no row for image {image_id!r}{' with ' + wanted if wanted else ''} in {output!r}")
    return dict(zip(columns, row))


def load_source_image(source_uri: str, storage: StorageOptions, config: dict) -> np.ndarray:
    """The image a row was computed from, decoded as the job (``config``, from the run
    manifest) decoded it: uint8 (size, size, 3). Handles plain files and the ``SHARD#KEY`` /
    ``FILE#ID`` URIs of tar and Parquet inputs."""
    location, _, key = source_uri.partition("#")
    if key and location.endswith(".parquet"):
        data = _parquet_member(location, key, storage, config)
    else:
        data = read_bytes(location, storage)
        if key:
            data = _tar_member(data, key)
    return decode_image(data, int(config.get("image_size", 224)), config.get("resize", "crop"))


def _tar_member(data: bytes, key: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive.getmembers():
            stem, extension = posixpath.splitext(member.name)
            if stem == key and extension.lower().lstrip(".") in IMAGE_EXTENSIONS:
                return archive.extractfile(member).read()
    raise LookupError(f"no image for key {key!r} in the tar shard")


def _parquet_member(location: str, key: str, storage: StorageOptions, config: dict) -> bytes:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    filesystem, path = resolve(location, storage)
    with filesystem.open_input_file(path) as handle:
        table = pq.read_table(handle)
    image_column, id_column = parquet_image_columns(table.column_names, table.schema.types,
                                                    config.get("image_column"), config.get("id_column"))
    ids, data = parquet_ids_and_bytes(table, image_column, id_column)
    matches = pc.indices_nonzero(pc.equal(ids, key)).to_pylist()
    if not matches:
        raise LookupError(f"no image for id {key!r} in {location!r}")
    return data[matches[0]].as_py()


def _cells_to_pixels(cells: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour block upsampling of a grid, as LEG's perturbations cover the image."""
    rows = np.arange(height) * cells.shape[0] // height
    cols = np.arange(width) * cells.shape[1] // width
    return cells[rows][:, cols]


def class_text(index: int | None, name: str | None) -> str:
    """A class as the user reads it: its name and index where the name is known."""
    if index is None:
        return "none"
    return f"{name} ({index})" if name else str(index)


def render(image: np.ndarray | None, saliency: np.ndarray, style: str, signed: bool, title: str, path: str,
           insignificant: np.ndarray | None = None, boxes: list[dict] | None = None,
           target: int | None = None) -> None:
    """Write a PNG of the map in ``style`` (see module docstring); cells where ``insignificant``
    (bool, the map's shape) is True are drawn in flat grey. ``boxes`` (the row's, in the
    explained image's pixels) are outlined over the image: white those of the ``target`` class
    (the ground truth scored), dashed grey the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if style == "overlay" and image is None:
        raise ValueError("the overlay style needs the source image, which could not be read")
    size = image.shape[:2] if image is not None else (max(saliency.shape) * 8,) * 2
    full = upsample_maps(saliency, *size)
    values = full if signed else np.abs(full)
    limit = float(np.abs(values).max()) or 1.0
    if signed:
        colour_map, low, high = ("gray" if style == "gray" else "RdBu_r"), -limit, limit
    else:
        colour_map, low, high = ("gray" if style == "gray" else "jet"), 0.0, limit
    figure, axes = plt.subplots(figsize=(4.2, 4))
    if style == "overlay":
        axes.imshow(image)
        shown = axes.imshow(values, cmap=colour_map, vmin=low, vmax=high, alpha=0.5)
    else:
        shown = axes.imshow(values, cmap=colour_map, vmin=low, vmax=high)
    if insignificant is not None and insignificant.any():
        grey = np.zeros((*size, 4))
        grey[..., :3] = 0.6
        grey[..., 3] = _cells_to_pixels(insignificant, *size) * 0.85
        axes.imshow(grey)
    # The boxes are in the explained image's pixels: drawn where that image is.
    for box in boxes or [] if image is not None else []:
        own = box["label"] is None or box["label"] == target
        width, height = box["x_max"] - box["x_min"] + 1, box["y_max"] - box["y_min"] + 1
        axes.add_patch(plt.Rectangle((box["x_min"] - 0.5, box["y_min"] - 0.5), width, height,
                                     fill=False, linewidth=1.2, edgecolor="white" if own else "0.6",
                                     linestyle="-" if own else "--"))
    axes.set_axis_off()
    axes.set_title(title, fontsize=8)
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def show(output: str, image_id: str, path: str, storage: StorageOptions | None = None,
         method: str | None = None, lam: float | None = None, run_id: str | None = None,
         style: str = "overlay", signed: bool = False, significant: bool = False,
         fdr: float = 0.05) -> dict:
    """Render the map of ``image_id`` to ``path``; returns the row shown (without the map).
    ``significant`` greys out the cells not distinguishable from zero (module docstring)."""
    storage = storage or StorageOptions()
    row = find_row(output, image_id, storage, method, lam, run_id)
    if row["status"] != "ok":
        raise LookupError(f"{image_id!r} {row['method']} has no map: {row['error']}")
    saliency = np.asarray(row["saliency"], dtype=np.float32).reshape(row["height"], row["width"])
    insignificant = None
    if significant:
        if row.get("saliency_se") is None:
            raise LookupError(f"{image_id!r} {row['method']} has no standard errors (saliency_se);"
                              " --significant needs a LEG map")
        from legx.methods.leg.uncertainty import significant_cells

        errors = np.asarray(row["saliency_se"], dtype=np.float32).reshape(saliency.shape)
        insignificant = ~significant_cells(saliency, errors, fdr)
    manifest = read_manifest(output, storage, row["run_id"]) or {}
    config = manifest.get("config", {})
    image = None
    try:
        image = load_source_image(row["source_uri"], storage, config)
    except (OSError, LookupError, DecodeError, ValueError):
        if style == "overlay":
            raise
    lam_text = f" lam={row['lam']:g}" if row["lam"] is not None else ""
    title = (f"{image_id}  {row['method']}{lam_text}  target {class_text(row['target'], row.get('target_name'))}"
             f" (p={row['target_score']:.2f})")
    if row.get("label") is not None and row["label"] != row["target"]:
        title += f"  label {class_text(row['label'], row.get('label_name'))}"
    if insignificant is not None:
        title += f"  {int((~insignificant).sum())}/{insignificant.size} cells significant (FDR {fdr:g})"
    render(image, saliency, style, signed, title, path, insignificant, boxes=row.get("boxes"),
           target=row["target"])
    shown = {key: value for key, value in row.items() if key not in ("saliency", "saliency_se")}
    if insignificant is not None:
        shown["significant_cells"] = int((~insignificant).sum())
    return shown
