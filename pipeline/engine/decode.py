"""The decode stage: source rows (encoded bytes) -> uint8 images at the job's size, ground truth
fitted to the same crop, or an error row with the reason."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from legx.pipeline.engine.broadcast import annotation_index, shared
from legx.pipeline.engine.images import DecodeError, decode_image, fit_box, fit_mask, image_digest
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
    """Source rows -> DECODED_SCHEMA rows; images already complete (resume) are dropped, and
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
            "_mask": None,
            "_box": None,
        }
        if duplicate is not None:
            row["status"], row["error"] = "error", duplicate[1]
            row["decode_s"] = time.perf_counter() - started
            rows.append(row)
            continue
        annotation = annotations.get(image_id)
        if annotation is not None and annotation.get("label") is not None:
            row["label"] = int(annotation["label"])
        try:
            encoded = data[position].as_py() or b""
            row["_image"] = decode_image(encoded, plan.image_size, plan.resize).tobytes()
        except DecodeError as error:
            row["status"], row["error"] = "error", f"decode: {error}"
        if row["status"] == "ok" and annotation is not None:
            row["_mask"], row["_box"] = _fit_annotation(annotation, plan)
        row["decode_s"] = time.perf_counter() - started
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)


def _fit_annotation(annotation: dict[str, Any], plan: Plan) -> tuple[bytes | None, list | None]:
    height, width = annotation.get("height"), annotation.get("width")
    mask, box = annotation.get("mask"), annotation.get("box")
    fitted_mask = fitted_box = None
    if mask is not None and height and width and len(mask) == height * width:
        array = np.asarray(mask, dtype=np.uint8).reshape(height, width)
        fitted_mask = fit_mask(array, plan.image_size, plan.resize).tobytes()
    if box is not None and height and width and len(box) == 4:
        fitted_box = fit_box(np.asarray(box), height, width, plan.image_size, plan.resize).tolist()
    return fitted_mask, fitted_box
