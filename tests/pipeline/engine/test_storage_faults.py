"""The job against a flaky object store: `legx run` (its own local Ray) reads and writes S3
through a fault-injecting proxy in front of the moto server (``tests/fault_proxy.py``), which
answers a share of requests with 503 SlowDown and drops a share of connections, on reads,
writes and listings. The job completes in one attempt with exactly one row per key; a fault
that outlives the retry budget ends it with one line, recorded in the run manifest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import boto3
import duckdb

from legx.pipeline.demo.data import write_demo_dataset
from legx.pipeline.engine.storage import StorageOptions, fsspec_filesystem

SMALL = ["--set", "image_size=32", "--set", "batch_size=4", "--set", "leg.grid_size=4",
         "--set", "leg.n_samples=16", "--set", "leg-tv.grid_size=4", "--set", "leg-tv.n_samples=16",
         "--set", "leg-tv.lambdas=[0.1, 0.3]"]
ROWS_PER_IMAGE = 3  # leg + leg-tv at two lambdas


def _legx(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    command = [shutil.which("legx")] if shutil.which("legx") else [sys.executable, "-m", "legx.pipeline.cli"]
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    return subprocess.run(command + list(args), env=env, capture_output=True, text=True, timeout=timeout)


def _run_through(proxy, bucket: str, run_id: str, methods: str, *extra: str) -> subprocess.CompletedProcess:
    """``legx run`` from s3://BUCKET/in to s3://BUCKET/out, its storage reached through ``proxy``."""
    return _legx("run", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out", "--methods", methods,
                 "--run-id", run_id, *SMALL, "--set", f"storage.endpoint_url={proxy.url}", *extra)


def _upload_demo(tmp_path, bucket: str, endpoint: str, count: int) -> None:
    demo = tmp_path / "demo"
    write_demo_dataset(str(demo), count, seed=3, image_size=32)
    client = boto3.client("s3", endpoint_url=endpoint)
    for path in sorted(demo.iterdir()):
        client.put_object(Bucket=bucket, Key=f"in/{path.name}", Body=path.read_bytes())


def _manifest(bucket: str, run_id: str) -> dict:
    filesystem = fsspec_filesystem(f"s3://{bucket}", StorageOptions())
    return json.loads(filesystem.cat_file(f"{bucket}/out/runs/{run_id}.json"))


def test_a_job_through_a_flaky_object_store_completes_in_one_attempt(s3_endpoint, s3_bucket, tmp_path,
                                                                      fault_proxy):
    images = 8
    _upload_demo(tmp_path, s3_bucket, s3_endpoint, images)
    proxy = fault_proxy(slowdown=0.25, drop=0.08, seed=7, first_each=True)
    result = _run_through(proxy, s3_bucket, "flaky", "leg,leg-tv")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "Traceback" not in result.stderr
    # The faults met every kind of request: reads, writes and listings.
    assert proxy.faults() > 0
    kinds = {name.rsplit("_", 1)[-1] for name in proxy.counts if name.startswith(("slowdown", "drop"))}
    assert kinds == {"read", "write", "list"}, dict(proxy.counts)

    # Read back past the proxy (DuckDB over the moto server directly).
    connection = duckdb.connect()
    connection.register_filesystem(fsspec_filesystem(f"s3://{s3_bucket}", StorageOptions()))
    rows = connection.execute(
        f"select image_id, method, lam, status, count(*) over (partition by image_id, method, lam) "
        f"from read_parquet('s3://{s3_bucket}/out/saliency/**/*.parquet')"
    ).fetchall()
    assert len(rows) == images * ROWS_PER_IMAGE
    assert all(row[4] == 1 and row[3] == "ok" for row in rows)
    manifest = _manifest(s3_bucket, "flaky")
    assert len(manifest["attempts"]) == 1 and "failure" not in manifest["attempts"][0]
    assert manifest["counts"]["rows"] == images * ROWS_PER_IMAGE


def test_a_fault_that_outlives_the_budget_ends_the_job_in_one_line(s3_endpoint, s3_bucket, tmp_path,
                                                                   fault_proxy):
    _upload_demo(tmp_path, s3_bucket, s3_endpoint, 2)
    # Every write of the run's Parquet files (in the job's write tasks) is throttled; the rest
    # of the bucket answers.
    proxy = fault_proxy(slowdown=1.0, only=("/out/saliency/",), operations=("write",))
    result = _run_through(proxy, s3_bucket, "throttled", "leg", "--set", "storage.max_attempts=2")
    assert result.returncode == 1, (result.stdout + result.stderr)[-4000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"legx: storage: write s3://{s3_bucket}/out/saliency/throttled-part-"), last
    assert "failed after 2 attempts" in last and "Please reduce your request rate" in last, last
    [attempt] = _manifest(s3_bucket, "throttled")["attempts"]
    assert attempt["failure"]["object"].startswith(f"s3://{s3_bucket}/out/saliency/throttled")
    assert attempt["failure"]["cause"] in last


def test_a_read_back_that_outlives_the_budget_does_not_end_a_finished_job(s3_endpoint, s3_bucket, tmp_path,
                                                                         fault_proxy):
    """Every read of the run's Parquet files is throttled, its writes and listings answer: the
    rows are all written, the driver's read-back for the summary fails, and the job still ends
    with status 0, a warning, and a manifest without run totals."""
    images = 2
    _upload_demo(tmp_path, s3_bucket, s3_endpoint, images)
    proxy = fault_proxy(slowdown=1.0, only=("/out/saliency/unread-part-",), operations=("read",))
    result = _run_through(proxy, s3_bucket, "unread", "leg", "--set", "storage.max_attempts=2")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "Traceback" not in result.stderr
    assert proxy.counts["slowdown_read"] >= 2
    assert "written but not read back" in result.stdout + result.stderr
    assert "run totals: not read back" in result.stdout
    [attempt] = _manifest(s3_bucket, "unread")["attempts"]
    assert any("not read back" in warning for warning in attempt["warnings"])
    assert _manifest(s3_bucket, "unread")["counts"]["rows"] is None
    connection = duckdb.connect()
    connection.register_filesystem(fsspec_filesystem(f"s3://{s3_bucket}", StorageOptions()))
    statuses = connection.execute(
        f"select status, count(*) from read_parquet('s3://{s3_bucket}/out/saliency/*.parquet') group by all"
    ).fetchall()
    assert statuses == [("ok", images)]
