"""Repeated image ids in WebDataset shards and Parquet files, through ``run_job`` on a local Ray:
the first occurrence (by shard path, then by the bytes' SHA-256 within a Parquet file) is explained,
every other one becomes 'duplicate id' error rows under ``ID@SHARD``, and no key is written twice,
also after a rerun of the run id.

The model says class 0 for a bright image and class 1 for a dark one, so the explained
occurrence of an id is known from the row's target.
"""

from __future__ import annotations

import io
import tarfile

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from legx.pipeline.engine.config import load_config
from legx.pipeline.engine.run import run_job
from legx.pipeline.engine.images import image_digest
from legx.pipeline.engine.sources import DUPLICATE_ID_ERROR, SourceError

BRIGHT, DARK = 0, 1


class BrightnessModel(torch.nn.Module):
    """Class 0's logit grows with the image's mean brightness, class 1's falls with it."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        score = 6.0 * (images.mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([score, -score], dim=1)


@pytest.fixture(scope="module")
def brightness_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "brightness.pt"
    torch.jit.script(BrightnessModel()).save(str(path))
    return str(path)


def _png(level: int, seed: int) -> bytes:
    """A 16 px image around ``level`` (noise makes every seed's bytes differ)."""
    noise = np.random.default_rng(seed).integers(-20, 21, (16, 16, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(level + noise, 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _shard(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _job(tmp_path, source, model: str, run_id: str):
    return load_config(None, [f"input={source}", f"output={tmp_path / 'out'}", f"model={model}",
                              "methods=[leg]", "leg.n_samples=16", "leg.grid_size=2", "image_size=16",
                              f"run_id={run_id}"])


def _rows(tmp_path, run_id: str) -> dict[str, tuple]:
    rows = duckdb.sql(
        "select image_id, status, error, target, count(*) over (partition by image_id, method, lam) "
        f"from read_parquet('{tmp_path / 'out'}/saliency/{run_id}-part-*.parquet')"
    ).fetchall()
    assert all(row[4] == 1 for row in rows), "a key was written twice"
    return {image_id: (status, error, target) for image_id, status, error, target, _ in rows}


def test_repeated_webdataset_keys_first_occurrence_wins(ray_local, tmp_path, brightness_model):
    """Keys repeated across shards (Ray's reader refuses a key repeated within one tar)."""
    shards = tmp_path / "shards"
    shards.mkdir()
    a_first = _png(230, 1)
    _shard(shards / "shard-0.tar", [("a.png", a_first), ("b.png", _png(230, 4))])
    _shard(shards / "shard-1.tar", [("b.png", _png(20, 5)), ("c.png", _png(20, 2))])
    _shard(shards / "shard-2.tar", [("a.png", a_first)])

    config = _job(tmp_path, shards, brightness_model, "repeated")
    summary = run_job(config)
    assert (summary.images, summary.rows, summary.ok, summary.errors) == (5, 5, 3, 2)
    rows = _rows(tmp_path, "repeated")
    assert set(rows) == {"a", "b", "c", "b@shard-1.tar", "a@shard-2.tar"}
    # The first shard's b (bright) wins over shard-1's dark b.
    assert rows["a"][::2] == ("ok", BRIGHT) and rows["b"][::2] == ("ok", BRIGHT)
    assert rows["c"][::2] == ("ok", DARK)
    for name in ("b@shard-1.tar", "a@shard-2.tar"):
        status, error, target = rows[name]
        assert status == "error" and target is None
        assert error.startswith(f"{DUPLICATE_ID_ERROR}: ") and "in shard-0.tar" in error

    again = run_job(config)
    assert (again.rows, again.total_rows) == (0, 5)
    assert _rows(tmp_path, "repeated") == rows


def _parquet(folder, name: str, ids: list[str], images: list[bytes]) -> None:
    pq.write_table(pa.table({"image_id": ids, "image": pa.array(images, pa.binary())}), folder / name)


def test_repeated_parquet_ids_across_and_within_files(ray_local, tmp_path, brightness_model):
    folder = tmp_path / "parquet"
    folder.mkdir()
    z_bright, z_dark = _png(230, 12), _png(20, 13)
    _parquet(folder, "part-1.parquet", ["x"], [_png(230, 7)])
    _parquet(folder, "part-0.parquet", ["x", "z", "y", "z"], [_png(20, 8), z_bright, _png(230, 9), z_dark])
    z_wins_bright = image_digest(z_bright) < image_digest(z_dark)
    z_loser = z_dark if z_wins_bright else z_bright

    run_job(_job(tmp_path, folder, brightness_model, "parquet"))
    rows = _rows(tmp_path, "parquet")
    assert set(rows) == {"x", "y", "z", "x@part-1.parquet", f"z@part-0.parquet#{image_digest(z_loser)[:12]}"}
    assert rows["x"][::2] == ("ok", DARK)  # part-0.parquet sorts first
    # Within one file, the occurrence whose bytes' digest sorts first.
    assert rows["z"][::2] == ("ok", BRIGHT if z_wins_bright else DARK)
    assert rows["x@part-1.parquet"][0] == "error"


def test_identical_copies_in_one_file_are_refused(ray_local, tmp_path, brightness_model):
    folder = tmp_path / "parquet"
    folder.mkdir()
    same = _png(230, 10)
    _parquet(folder, "part-0.parquet", ["a", "b", "a"], [same, _png(20, 11), same])
    with pytest.raises(SourceError, match="holds id 'a' more than once with identical bytes"):
        run_job(_job(tmp_path, folder, brightness_model, "copies"))
    assert not (tmp_path / "out" / "saliency").exists()
