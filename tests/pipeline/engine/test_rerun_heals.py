"""Failures that heal: error rows are classified permanent (a fact about the input) or retryable
(an accident of the attempt); a rerun of the run id redoes the retryable ones, and afterwards
every reader (DuckDB with and without hive partitioning, pandas, pyarrow.dataset) sees exactly
one row per key, the new result.

The accident is caused on the CPU: a TorchScript model, loaded through the model loader like any
user's, that runs out of memory on forward batches of more than 40 images when a bright image
is among them; the rerun uses smaller forward batches, as an operator would after an OOM."""

from __future__ import annotations

import io
import os

import duckdb
import numpy as np
import pyarrow.dataset as pads
import torch
from PIL import Image

from legx.pipeline.engine.config import load_config
from legx.pipeline.engine.error_classes import PERMANENT, RETRYABLE, error_class

MEMORY_ROWS = 40


class BrightImagesOutOfMemory(torch.nn.Module):
    """Class 0's logit follows the top-left quadrant's mean; a forward of more than
    ``memory_rows`` images that holds a bright one (mean > 0.8) runs out of memory."""

    def __init__(self) -> None:
        super().__init__()
        self.memory_rows = MEMORY_ROWS

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[0] > self.memory_rows and bool((images.mean(dim=(1, 2, 3)) > 0.8).any()):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        half_height, half_width = images.shape[2] // 2, images.shape[3] // 2
        score = 6.0 * (images[:, :, :half_height, :half_width].mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([score, -score, torch.zeros_like(score)], dim=1)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _inputs(folder) -> tuple[list[str], list[str]]:
    """Dark images, bright ones and one file that is not an image."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    dark = [f"dark_{index}.png" for index in range(3)]
    bright = [f"bright_{index}.png" for index in range(2)]
    for name in dark:
        (folder / name).write_bytes(_png(rng.integers(0, 100, (16, 16, 3), dtype=np.uint8)))
    for name in bright:
        (folder / name).write_bytes(_png(rng.integers(230, 256, (16, 16, 3), dtype=np.uint8)))
    (folder / "not_an_image.png").write_bytes(b"plain text, not a PNG\n")
    return dark, bright


def _rows(output: str, hive: str = "") -> dict[str, tuple]:
    rows = duckdb.sql(
        "select image_id, status, error_class, params, count(*) over (partition by image_id, method, lam) "
        f"from read_parquet('{output}/saliency/**/*.parquet'{hive})"
    ).fetchall()
    assert all(row[4] == 1 for row in rows), "a key has more than one row"
    return {image_id: (status, klass, params) for image_id, status, klass, params, _ in rows}


def test_error_classes_read_from_the_error_text():
    assert error_class("decode: cannot identify image file (21 bytes)") == PERMANENT
    assert error_class("duplicate id: 'a.png' occurs 2 times; the first occurrence ...") == PERMANENT
    assert error_class("map has non-finite values") == PERMANENT
    assert error_class("explain: ValueError: target out of range") == PERMANENT
    assert error_class("sample: OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB") == RETRYABLE
    assert error_class("solve: SolverError: time limit reached") == RETRYABLE
    assert error_class("sample: RayActorError: The actor died unexpectedly") == RETRYABLE


def test_a_rerun_retries_the_retryable_rows_and_every_reader_sees_one_row_per_key(ray_local, tmp_path):
    from legx.pipeline.engine.run import run_job

    dark, bright = _inputs(tmp_path / "in")
    model = tmp_path / "bright_oom.pt"
    torch.jit.script(BrightImagesOutOfMemory()).save(str(model))
    output = str(tmp_path / "out")

    def job(forward_batch: int):
        return run_job(load_config(None, [
            f"input={tmp_path / 'in'}", f"output={output}", f"model={model}", "image_size=16",
            "methods=[leg]", "leg.grid_size=4", "leg.n_samples=16", f"leg.batch_size={forward_batch}",
            "batch_size=8", "run_id=heal",
        ]))

    # 16 antithetic samples x 3 channels = 48 forwards per image: over the limit in one batch.
    first = job(forward_batch=256)
    assert (first.images, first.ok, first.errors) == (6, 3, 3)
    rows = _rows(output)
    assert {image_id: row[:2] for image_id, row in rows.items()} == {
        **{name: ("ok", None) for name in dark},
        **{name: ("error", RETRYABLE) for name in bright},
        "not_an_image.png": ("error", PERMANENT),
    }

    second = job(forward_batch=32)
    # Only the bright images were redone; their error rows are gone from the files.
    assert (second.images, second.ok, second.errors, second.superseded_rows) == (2, 2, 0, 2)
    expected = {**{name: "ok" for name in dark + bright}, "not_an_image.png": "error"}
    for hive in ("", ", hive_partitioning = true", ", hive_partitioning = false"):
        rows = _rows(output, hive)
        assert {image_id: row[0] for image_id, row in rows.items()} == expected
    assert all('"batch_size": 32' in rows[name][2] for name in bright)
    assert all('"batch_size": 256' in rows[name][2] for name in dark)

    import pandas

    frame = pandas.read_parquet(os.path.join(output, "saliency"))
    assert sorted(frame["image_id"]) == sorted(expected)
    assert dict(zip(frame["image_id"], frame["status"])) == expected
    table = pads.dataset(os.path.join(output, "saliency"), format="parquet").to_table()
    assert dict(zip(table.column("image_id").to_pylist(), table.column("status").to_pylist())) == expected
    assert table.num_rows == len(expected)

    # Nothing retryable is left: a third run redoes nothing, the permanent error included.
    third = job(forward_batch=32)
    assert (third.images, third.rows, third.superseded_rows, third.total_rows) == (0, 0, 0, 6)
