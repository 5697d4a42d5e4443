"""Synthetic job outputs for the report and compare tests: rows of known values written with
pyarrow in the job's own output schema (``legx.pipeline.engine.schema.output_schema``), without
running the job or its sink."""

from __future__ import annotations

import json
import os
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from legx.methods.metrics.catalogue import metric_names
from legx.pipeline.engine.schema import REGION_SHARE, output_schema

VARIANTS = (("leg", None), ("leg-tv", 0.1))
# Every image's ground-truth region covers this share of it (the localisation metrics' chance).
CHANCE = 0.125
GRID = 4
IMAGE_SIZE = 16


def write_images(folder: str, count: int, seed: int = 0) -> list[str]:
    """``count`` small RGB PNGs; returns their paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index in range(count):
        pixels = rng.integers(0, 256, size=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        path = os.path.join(folder, f"img{index}.png")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def base_maps(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, GRID, GRID)).astype(np.float32)


def write_output(
    output: str,
    image_paths: list[str],
    maps: dict[tuple[str, float | None], np.ndarray],
    run_id: str = "run-a",
    metric_offset: float = 0.0,
    targets: np.ndarray | None = None,
    error_images: tuple[str, ...] = (),
    with_manifest: bool = True,
) -> str:
    """One Parquet file under OUTPUT/saliency/run_id=RUN/ with a row per image and variant
    (maps[variant][i] is image i's map), metric k of image i = 0.1 k + 0.01 i + metric_offset,
    and one 'error' row per name in ``error_images``; plus OUTPUT/runs/RUN.json."""
    rows = []
    # Naive UTC, as the sink writes it.
    created = datetime(2024, 1, 1)
    for (method, lam), variant_maps in maps.items():
        for index, path in enumerate(image_paths):
            row = {
                "run_id": run_id,
                "image_id": path.rsplit("/", 1)[-1],
                "source_uri": path,
                "label": index % 3,
                "target": int(targets[index]) if targets is not None else index % 3,
                "target_score": 0.9,
                "model_id": "toy",
                "method": method,
                "lam": lam,
                "params": json.dumps({"n_samples": 10}),
                "height": variant_maps[index].shape[0],
                "width": variant_maps[index].shape[1],
                "saliency": variant_maps[index].ravel().tolist(),
                "status": "ok",
                "error": None,
                "elapsed_s": 0.1,
                "created_at": created,
            }
            for k, name in enumerate(metric_names()):
                row[name] = min(0.1 * k + 0.01 * index + metric_offset, 1.0)
            # ROAD at the default nine fractions: the MoRF curve falls, the LeRF curve is flat.
            row["road_morf"] = 0.2 + 0.01 * index + metric_offset
            row["road_lerf"] = 0.7 + 0.01 * index + metric_offset
            row["road_combined"] = (row["road_lerf"] - row["road_morf"]) / 2
            row["road_morf_curve"] = [0.9 - 0.1 * step - 0.01 * index + metric_offset for step in range(9)]
            row["road_lerf_curve"] = [0.9 - 0.01 * index + metric_offset] * 9
            row[REGION_SHARE] = CHANCE
            rows.append(row)
        for image_id in error_images:
            rows.append(
                {
                    "run_id": run_id, "image_id": image_id, "source_uri": f"/missing/{image_id}",
                    "label": None, "target": None, "target_score": None, "model_id": "toy",
                    "method": method, "lam": lam, "params": "{}", "height": None, "width": None,
                    "saliency": None, "status": "error",
                    "error": "DecodeError: not a recognised image format (12 bytes)",
                    "elapsed_s": 0.0, "created_at": created,
                    **{name: None for name in metric_names()},
                }
            )
    folder = os.path.join(output, "saliency", f"run_id={run_id}")
    os.makedirs(folder, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=output_schema())
    pq.write_table(table, os.path.join(folder, "part-0.parquet"))
    if with_manifest:
        os.makedirs(os.path.join(output, "runs"), exist_ok=True)
        manifest = {"run_id": run_id, "config": {"image_size": IMAGE_SIZE, "resize": "crop", "model": "toy"}}
        with open(os.path.join(output, "runs", f"{run_id}.json"), "w") as handle:
            json.dump(manifest, handle)
    return output
