"""The decode stage: source rows (encoded bytes) -> uint8 images at the job's size, ground truth
fitted to the same crop, or an error row with the reason."""

from __future__ import annotations

import posixpath
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from legx.pipeline.engine.broadcast import annotation_index, shared
from legx.pipeline.engine.images import DecodeError, fit_boxes, fit_image, fit_mask, image_digest, open_image
from legx.pipeline.engine.schema import DECODED_SCHEMA

if TYPE_CHECKING:
    from legx.pipeline.engine.plan import Plan


def decode_batch(
    batch: pa.Table,
    plan: Plan,
    annotations_ref=None,
    skip_ref=None,
    repeated_ref=None,
) -> pa.Table:
    """Source rows -> DECODED_SCHEMA rows, with the annotation of the image id (else of its file
    stem, ``image_stem``); images already complete (resume) are dropped, and
    the later occurrences of a repeated id (``legx.pipeline.engine.sources.repeated_ids``) become error
    rows under their unique names."""
    skip = shared(skip_ref) if skip_ref is not None else frozenset()
    repeated = shared(repeated_ref) if repeated_ref is not None else {}
    annotations = annotation_index(annotations_ref) if annotations_ref is not None else {}
    rows = []
    ids = batch.column("image_id").to_pylist()
    uris = batch.column("source_uri").to_pylist()
    labels = batch.column("label").to_pylist()
    data = batch.column("data")
    for position, image_id in enumerate(ids):
        duplicate = None
        if uris[position] in repeated:
            duplicate = repeated[uris[position]].get(image_digest(data[position].as_py()))
            if duplicate is not None:
                image_id = duplicate[0]
        if image_id in skip:
            continue
        started = time.perf_counter()
        row = {
            "image_id": image_id,
            "source_uri": uris[position],
            "label": labels[position],
            "status": "ok",
            "error": None,
            "_image": None,
            "boxes": None,
            "_mask": None,
        }
        if duplicate is not None:
            row["status"], row["error"] = "error", duplicate[1]
            row["decode_s"] = time.perf_counter() - started
            rows.append(row)
            continue
        annotation = annotations.get(image_id) or annotations.get(image_stem(image_id))
        if annotation is not None and annotation.get("label") is not None:
            row["label"] = int(annotation["label"])
        try:
            encoded = data[position].as_py() or b""
            image = open_image(encoded)
            row["_image"] = fit_image(image, plan.image_size, plan.resize).tobytes()
        except DecodeError as error:
            row["status"], row["error"] = "error", f"decode: {error}"
        if row["status"] == "ok" and annotation is not None:
            row["_mask"], row["boxes"] = _fit_annotation(annotation, plan, (image.height, image.width))
        row["decode_s"] = time.perf_counter() - started
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)


def image_stem(image_id: str) -> str:
    """An image id's file stem, the key of ImageNet's annotation files: a folder's
    ``n01440764/ILSVRC2012_val_00000293.JPEG`` is ``ILSVRC2012_val_00000293``."""
    return posixpath.splitext(posixpath.basename(image_id))[0]


def _fit_annotation(annotation: dict[str, Any], plan: Plan,
                    decoded: tuple[int, int]) -> tuple[bytes | None, list[dict] | None]:
    """The annotation's mask and boxes fitted to the job's crop. Boxes come from ``boxes``
    (several, each with its class) or from the single ``box`` of legx's own Parquet (no class:
    the evidence of whichever class is explained); their coordinates refer to the annotation's
    height x width where it gives one, else to the decoded image."""
    height, width = annotation.get("height"), annotation.get("width")
    mask, box, boxes = annotation.get("mask"), annotation.get("box"), annotation.get("boxes")
    fitted_mask = fitted_boxes = None
    if mask is not None and height and width and len(mask) == height * width:
        array = np.asarray(mask, dtype=np.uint8).reshape(height, width)
        fitted_mask = fit_mask(array, plan.image_size, plan.resize).tobytes()
    if boxes is None and box is not None and len(box) == 4:
        boxes = [dict(zip(("x_min", "y_min", "x_max", "y_max"), box), label=None)]
    if boxes is not None:
        annotated = (int(height), int(width)) if height and width else None
        fitted_boxes = fit_boxes(boxes, annotated, decoded, plan.image_size, plan.resize)
    return fitted_mask, fitted_boxes
