"""The job end to end, with real parts: `legx run` in a subprocess (its own local Ray), a moto
S3 server on 127.0.0.1, Parquet read back with DuckDB.

The model is a TorchScript file whose score depends only on the top-left quadrant of the image,
so the right LEG map is known: its mass belongs in that quadrant.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from legx.pipeline.demo.data import write_demo_dataset
from legx.pipeline.analysis.query import connect
from legx.pipeline.engine.storage import StorageOptions

GRID = 4
SMALL_JOB = [
    "--set", "image_size=16",
    "--set", "batch_size=4",
    "--set", f"leg.grid_size={GRID}",
    "--set", "leg.n_samples=256",
    "--set", f"leg-tv.grid_size={GRID}",
    "--set", "leg-tv.n_samples=256",
    "--set", "leg-tv.lambdas=[0.1, 0.3]",
]
ROWS_PER_IMAGE = 3  # leg + leg-tv at two lambdas


class TopLeftModel(torch.nn.Module):
    """Class 0's logit grows with the mean of the top-left quadrant; nothing else matters."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        half_height, half_width = images.shape[2] // 2, images.shape[3] // 2
        region = images[:, :, :half_height, :half_width].mean(dim=(1, 2, 3))
        score = 6.0 * (region - 0.5)
        return torch.stack([score, -score, torch.zeros_like(score)], dim=1)


@pytest.fixture(scope="module")
def top_left_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "top_left.pt"
    torch.jit.script(TopLeftModel()).save(str(path))
    return str(path)


def legx(*args: str, **options) -> subprocess.Popen:
    """`legx ARGS` as a new process group (so a test can kill it with its local Ray)."""
    command = [shutil.which("legx")] if shutil.which("legx") else [sys.executable, "-m", "legx.pipeline.cli"]
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    return subprocess.Popen(
        command + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True, **options,
    )


def finish(process: subprocess.Popen, timeout: float = 400) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def _upload(directory: Path, bucket: str, prefix: str, endpoint: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(directory).as_posix()}",
                              Body=path.read_bytes())


def test_s3_in_s3_out_with_odd_inputs(s3_endpoint, s3_bucket, tmp_path, top_left_model, odd_files):
    demo = tmp_path / "demo"
    write_demo_dataset(str(demo), 4, seed=0, image_size=32)
    odd = odd_files
    for name, (data, _) in odd.items():
        (demo / name).write_bytes(data)
    _upload(demo, s3_bucket, "in", s3_endpoint)
    output = f"s3://{s3_bucket}/out"

    log = finish(legx("run", "--input", f"s3://{s3_bucket}/in", "--output", output,
                      "--model", top_left_model, "--methods", "leg,leg-tv", "--run-id", "e2e",
                      *SMALL_JOB, "--set", "metrics=[gini,pointing_game,mask_energy]",
                      "--set", "actor_cpus=0.5"))
    assert "images/s" in log and "forwards/s" in log

    connection = connect(output, StorageOptions())
    rows = connection.execute(
        "select image_id, method, lam, status, error, label, height, width, saliency, run_id, "
        "target, target_score, gini, pointing_game, mask_energy, region_share "
        "from saliency order by image_id, method, lam"
    ).fetchall()
    demo_ids = [f for f in os.listdir(demo) if f.endswith(".png") and not f.startswith(("bad_", "odd_"))]
    n_images = len(demo_ids) + len(odd)
    assert len(rows) == n_images * ROWS_PER_IMAGE
    by_image: dict[str, list] = {}
    for row in rows:
        by_image.setdefault(row[0], []).append(row)
    assert set(by_image) == set(demo_ids) | set(odd)

    import pyarrow.parquet as pq

    labels = dict(zip(*pq.read_table(demo / "annotations.parquet", columns=["image_id", "label"])
                      .to_pydict().values()))
    # The chance level stored beside the localisation metrics: the mask's share of the image.
    mask_shares = {row["image_id"]: float(np.mean(row["mask"]))
                   for row in pq.read_table(demo / "annotations.parquet").to_pylist()}
    quadrant_shares = []
    for image_id, image_rows in by_image.items():
        assert [(r[1], r[2]) for r in image_rows] == [("leg", None), ("leg-tv", 0.1), ("leg-tv", 0.3)]
        expected = odd[image_id][1] if image_id in odd else "ok"
        for (_, method, lam, status, error, label, height, width, saliency, run_id, target, score,
             gini, pointing, energy, share) in image_rows:
            assert status == expected, (image_id, method, error)
            assert run_id == "e2e"
            if status == "error":
                assert error.startswith("decode: ") and saliency is None
                assert gini is None and pointing is None
                continue
            assert 0 <= gini < 1
            # Only the demo images have masks (annotations.parquet): localisation needs one.
            if image_id in labels:
                assert 0 <= pointing <= 1 and 0 <= energy <= 1
                assert share == pytest.approx(mask_shares[image_id], abs=0.02)  # resized mask
            else:
                assert pointing is None and energy is None and share is None
            assert error is None and target in (0, 1) and 1 / 3 < score < 1  # top-1 of 3 classes
            assert (height, width) == (GRID, GRID) and len(saliency) == GRID * GRID
            values = np.asarray(saliency)
            assert np.isfinite(values).all() and values.max() > 0
            if method == "leg":
                grid = np.abs(values.reshape(GRID, GRID))
                quadrant_shares.append(grid[: GRID // 2, : GRID // 2].sum() / grid.sum())
            if image_id in labels:
                assert label == labels[image_id]
    # Known answer: the score only sees the top-left quadrant (a quarter of the map).
    assert np.median(quadrant_shares) > 0.6

    manifest = json.loads(_read_s3(f"{output}/runs/e2e.json"))
    assert manifest["counts"]["images"] == n_images
    assert manifest["counts"]["errors"] == 3 * ROWS_PER_IMAGE
    assert "secret" not in json.dumps(manifest).lower()

    from legx.pipeline.cli.main import main

    query_out = io.StringIO()
    with _stdout(query_out):
        assert main(["query", output, "select status, count(*) as n from saliency group by 1 order by 1",
                     "--format", "csv"]) == 0
    assert query_out.getvalue().splitlines()[1:] == [
        f"error,{3 * ROWS_PER_IMAGE}", f"ok,{(n_images - 3) * ROWS_PER_IMAGE}"
    ]
    picture = tmp_path / "show.png"
    with _stdout(io.StringIO()):
        assert main(["show", output, demo_ids[0], "--method", "leg-tv", "--lam", "0.3",
                     "-o", str(picture)]) == 0
    from PIL import Image

    assert Image.open(picture).size[0] > 100


def _read_s3(uri: str) -> bytes:
    from legx.pipeline.engine.storage import read_bytes

    return read_bytes(uri, StorageOptions())


class _stdout:
    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        self.saved, sys.stdout = sys.stdout, self.stream

    def __exit__(self, *exc):
        sys.stdout = self.saved


def _run_rows(output: Path, run_id: str):
    import pyarrow.dataset as pads

    from legx.pipeline.engine.sink import run_files

    _, paths = run_files(str(output), StorageOptions(), run_id)
    if not paths:
        return []
    table = pads.dataset(paths, format="parquet").to_table(columns=["image_id", "method", "lam"])
    return list(zip(*table.to_pydict().values()))


def test_resume_after_killing_the_driver(tmp_path, top_left_model):
    images = tmp_path / "images"
    write_demo_dataset(str(images), 24, seed=1, image_size=32)
    output = tmp_path / "out"
    job = ["run", "--input", str(images), "--output", str(output), "--model", top_left_model,
           "--methods", "leg,leg-tv", "--run-id", "resume", *SMALL_JOB,
           "--set", "rows_per_file=3", "--set", "batch_size=1", "--set", "decode_batch_size=1",
           "--set", "solve_batch_size=1", "--set", "leg.n_samples=1000", "--set", "leg-tv.n_samples=1000"]
    expected = 24 * ROWS_PER_IMAGE

    first = legx(*job)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None and len(_run_rows(output, "resume")) < 3:
        time.sleep(0.2)
    assert first.poll() is None, "the job ended before it could be interrupted"
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    written_before = len(_run_rows(output, "resume"))
    assert 0 < written_before < expected

    finish(legx(*job))
    keys = _run_rows(output, "resume")
    assert len(keys) == expected and len(set(keys)) == expected
    per_image: dict[str, int] = {}
    for image_id, _, _ in keys:
        per_image[image_id] = per_image.get(image_id, 0) + 1
    assert len(per_image) == 24 and set(per_image.values()) == {ROWS_PER_IMAGE}

    manifest = json.loads((output / "runs" / "resume.json").read_text())
    resumed = manifest["attempts"][-1]
    assert resumed["resumed_rows"] >= written_before
    assert resumed["rows"] == expected - resumed["resumed_rows"]


def test_webdataset_job_in_process_and_rerun_of_a_complete_run(ray_local, tmp_path, top_left_model, caplog):
    """run_job on the session's Ray: tar shards in, one row per image; a rerun of the finished
    run id writes nothing and logs that it resumes."""
    import tarfile

    from legx.pipeline.engine.config import load_config
    from legx.pipeline.engine.run import run_job

    demo = tmp_path / "demo"
    write_demo_dataset(str(demo), 6, seed=2, image_size=32)
    shards = tmp_path / "shards"
    shards.mkdir()
    names = sorted(p.name for p in demo.glob("*.png"))
    for shard, part in enumerate((names[:4], names[4:])):
        with tarfile.open(shards / f"shard-{shard}.tar", "w") as archive:
            for name in part:
                archive.add(demo / name, arcname=name)
    config = load_config(None, [f"input={shards}", f"output={tmp_path / 'out'}", f"model={top_left_model}",
                                "methods=[leg]", "leg.n_samples=64", f"leg.grid_size={GRID}",
                                "image_size=16", "run_id=wds"])
    first = run_job(config)
    assert (first.images, first.rows, first.ok, first.errors) == (6, 6, 6, 0)
    assert first.forwards == 6 * 3 * 64  # channels perturbed separately
    # One actor: busy no longer than the span of its calls, which lies inside the job's wall time.
    assert 0 < first.model_busy_s <= first.model_window_s + 1e-3
    assert 0 <= first.startup_s and first.startup_s + first.model_window_s <= first.wall_s + 0.05
    assert first.serving_forwards_per_s >= first.forwards_per_s
    keys = _run_rows(tmp_path / "out", "wds")
    assert sorted(k[0] for k in keys) == sorted(n[: -len(".png")] for n in names)

    with caplog.at_level(logging.INFO, logger="legx.pipeline.engine.run"):
        again = run_job(config)
    assert (again.images, again.rows, again.total_rows) == (0, 0, 6)
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "legx.pipeline.engine.run"] == [
        (logging.INFO, "resuming run wds: 6 rows already written")]
    assert again.model_busy_s is None and again.serving_forwards_per_s is None
    assert len(_run_rows(tmp_path / "out", "wds")) == 6


def test_embedded_default_runs_from_an_empty_folder(tmp_path):
    """`legx run` with no input: demo images generated in the working folder, bundled demo
    model, LEG and LEG-TV (here limited to 4 images and 16 samples to stay quick)."""
    process = legx("run", "--limit", "4", "--samples", "16", "--run-id", "embedded", cwd=tmp_path)
    log = finish(process)
    assert (tmp_path / "legx-demo-data" / "annotations.parquet").exists()
    assert "this invocation: 4 images, 12 rows (12 ok, 0 errors)" in log
    assert "  model:      first call " in log
    manifest = json.loads((tmp_path / "legx-output" / "runs" / "embedded.json").read_text())
    assert manifest["model_id"].startswith("demo@")
    attempt = manifest["attempts"][-1]
    assert 0 < attempt["model_busy_s"] <= attempt["model_window_s"] + 1e-3
    assert attempt["startup_s"] + attempt["model_window_s"] <= attempt["wall_s"] + 0.05
    assert attempt["serving_forwards_per_s"] == round(attempt["forwards"] / attempt["model_window_s"], 1)
    rows = _run_rows(tmp_path / "legx-output", "embedded")
    assert sorted({(method, lam) for _, method, lam in rows}) == [("leg", None), ("leg-tv", 0.1), ("leg-tv", 0.3)]


def test_any_subset_of_methods_runs_by_name(ray_local, tmp_path):
    """Methods other than LEG run through the same job by name, each writing its own rows; the
    bundled demo model (hookable, unlike TorchScript) explains 32 px demo images, run in bf16
    and channels_last by the actors (the wrapper keeps Grad-CAM's layer lookup working)."""
    import duckdb

    from legx.pipeline.engine.config import load_config
    from legx.pipeline.engine.run import run_job

    demo = tmp_path / "demo"
    write_demo_dataset(str(demo), 3, seed=5, image_size=32)
    names = ["grad-cam", "lime", "expected-gradients", "leg"]
    config = load_config(None, [
        f"input={demo}", f"output={tmp_path / 'out'}", "model=demo", "image_size=32", "run_id=subset",
        f"methods=[{','.join(names)}]", "lime.n_samples=32", "lime.n_segments=8",
        "expected-gradients.n_samples=8", "leg.n_samples=32", "leg.grid_size=4",
        "metrics=[pointing_game]", "precision=bf16", "channels_last=true",
    ])
    summary = run_job(config)
    assert (summary.images, summary.rows, summary.ok, summary.errors) == (3, 12, 12, 0)
    manifest = json.loads((tmp_path / "out" / "runs" / "subset.json").read_text())
    assert (manifest["config"]["precision"], manifest["config"]["channels_last"]) == ("bf16", True)
    rows = duckdb.sql(
        f"select method, height, width, saliency "
        f"from read_parquet('{tmp_path / 'out'}/saliency/**/*.parquet', hive_partitioning=true) "
        f"where status = 'ok' and pointing_game is not null"
    ).fetchall()
    per_method: dict[str, int] = {}
    for method, height, width, saliency in rows:
        values = np.asarray(saliency)
        assert values.shape == (height * width,) and np.isfinite(values).all(), method
        per_method[method] = per_method.get(method, 0) + 1
    assert per_method == {name: 3 for name in names}
    # Without a classes file the rows take their class names from the model (the demo
    # checkpoint's class_names).
    from legx.pipeline.demo.data import CLASS_NAMES

    named = duckdb.sql(
        f"select distinct label, label_name, target, target_name "
        f"from read_parquet('{tmp_path / 'out'}/saliency/**/*.parquet', hive_partitioning=true)"
    ).fetchall()
    assert named and all(label_name == CLASS_NAMES[label] and target_name == CLASS_NAMES[target]
                         for label, label_name, target, target_name in named)


def test_demo_data_then_run_reads_at_the_model_input_size_and_reports_its_accuracy(tmp_path):
    """`legx demo-data ./d` then `legx -q run --input ./d`, as a new user types them: the job runs
    at the demo model's declared 64 px (not 224, where it reads the shapes at chance) and prints
    and records its top-1 accuracy against the demo labels, with no warning; `-q` leaves the
    summary and nothing of Ray's or Ray Data's INFO lines and progress bars."""
    finish(legx("demo-data", "d", "--count", "12", cwd=tmp_path))
    log = finish(legx("-q", "run", "--input", "d", "--methods", "leg", "--samples", "16",
                      "--set", "leg.grid_size=4", "--run-id", "fresh", cwd=tmp_path))
    assert "top-1:      12 of 12 labelled images (1.00, 95% interval 0.76-1.00; chance 0.17 = 1/6)" in log
    assert "WARNING" not in log
    assert "finished in" in log and "\tINFO " not in log and "Started a local Ray" not in log
    assert "Running Dataset" not in log and "Progress bars" not in log
    manifest = json.loads((tmp_path / "legx-output" / "runs" / "fresh.json").read_text())
    assert manifest["config"]["image_size"] == 64 and manifest["model_input_size"] == 64
    assert manifest["top1"] == {"labelled": 12, "correct": 12, "accuracy": 1.0, "interval_95": [0.7575, 1.0],
                                "chance": 0.1667, "classes": 6, "near_chance": False}
    assert manifest["attempts"][-1]["warnings"] == []


def test_a_model_that_misreads_its_inputs_is_flagged(ray_local, tmp_path, caplog):
    """Forced to 16 px, the demo model reads 64 px shapes at about chance (1/6): the job says
    so in its summary, its manifest and its log, and names the input size as a cause."""
    from legx.pipeline.engine.config import load_config
    from legx.pipeline.engine.run import run_job

    demo = tmp_path / "demo"
    write_demo_dataset(str(demo), 24, seed=0, image_size=64)
    config = load_config(None, [f"input={demo}", f"output={tmp_path / 'out'}", "image_size=16",
                                "methods=[leg]", "leg.n_samples=16", "leg.grid_size=4", "run_id=small"])
    with caplog.at_level(logging.INFO, logger="legx.pipeline.engine.run"):
        summary = run_job(config)
    messages = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    reading = summary.top1
    assert reading["labelled"] == 24 and reading["near_chance"]
    assert reading["interval_95"][0] <= 1 / 6 <= reading["interval_95"][1]
    assert any("trained on 64 px images; this job resizes its inputs to image_size 16" in m for m in messages)
    assert any("not above chance (0.17 = 1/6 classes)" in m for m in summary.warnings)
    manifest = json.loads((tmp_path / "out" / "runs" / "small.json").read_text())
    assert manifest["top1"]["near_chance"] and manifest["attempts"][-1]["warnings"] == summary.warnings
