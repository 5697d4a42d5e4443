"""A load figure: one job of many demo images (small budgets, so that it fits a small machine),
S3 in and out through the fault-injecting proxy (``tests/fault_proxy.py``: a share of requests
answered 503 SlowDown, a share of connections dropped), on a multi-node
``ray.cluster_utils.Cluster`` that loses two worker nodes during the job (the explain actor's
node each time, replaced by a fresh node as an autoscaler would).

    python scripts/bench_load_faults.py --images 10000 --slowdown 0.25 --drop 0.08

Printed: wall seconds, requests and faults at the proxy, the nodes lost, the manifest's
attempts, recovery and storage retries, and the check that counts: every key (image, method,
lam) has exactly one row, every row 'ok'.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_node_loss import MODEL_CALL, _actor_node, _free_port, _tasks, start_cluster  # noqa: E402 - one definition
from fault_proxy import FaultProxy  # noqa: E402

ROWS_PER_IMAGE = 3  # leg + leg-tv at two lambdas


def _files(client, bucket: str, run_id: str) -> int:
    paginator = client.get_paginator("list_objects_v2")
    return sum(1 for page in paginator.paginate(Bucket=bucket, Prefix=f"out/saliency/{run_id}-part-")
               for _ in page.get("Contents", []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rows-per-file", type=int, default=300)
    parser.add_argument("--slowdown", type=float, default=0.25)
    parser.add_argument("--drop", type=float, default=0.08)
    parser.add_argument("--losses", default="0.3,0.6",
                        help="share of the model calls finished before each node loss")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import boto3
    import duckdb
    import s3fs
    from moto.server import ThreadedMotoServer

    from legx.pipeline.demo.data import write_demo_dataset

    # moto's convention for dummy credentials, for this process and its children only.
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    bucket, run_id = "legx-load", "load"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=bucket)
    work = Path(tempfile.mkdtemp(prefix="legx-load-"))
    write_demo_dataset(str(work / "images"), args.images, seed=0, image_size=32)
    paths = sorted((work / "images").iterdir())
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda path: client.put_object(Bucket=bucket, Key=f"in/{path.name}", Body=path.read_bytes()),
                      paths))
    print(f"uploaded {len(paths)} files", flush=True)

    proxy = FaultProxy(endpoint, slowdown=args.slowdown, drop=args.drop, seed=0)
    proxy.start()
    cluster, dashboard = start_cluster()
    command = [shutil.which("legx") or sys.executable, *([] if shutil.which("legx") else ["-m", "legx.pipeline.cli"]),
               "run", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out", "--model", "demo",
               "--methods", "leg,leg-tv", "--samples", str(args.samples), "--run-id", run_id,
               "--set", "gpu=never", "--set", "image_size=32", "--set", f"batch_size={args.batch_size}",
               "--set", "leg.grid_size=4", "--set", "leg-tv.grid_size=4", "--set", "leg-tv.lambdas=[0.1, 0.3]",
               "--set", f"rows_per_file={args.rows_per_file}", "--set", f"storage.endpoint_url={proxy.url}"]
    expected_calls = args.images / args.batch_size
    thresholds = [float(share) for share in args.losses.split(",") if share]
    log = work / "job.log"
    lost = []
    started = time.monotonic()
    try:
        with open(log, "w") as stream:
            process = subprocess.Popen(command, env=dict(os.environ, RAY_ADDRESS=cluster.address), stdout=stream,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        job_id = None
        while process.poll() is None:
            time.sleep(2)
            if not thresholds:
                continue
            calls = [t for t in _tasks(dashboard) if MODEL_CALL in t.name]
            finished = sum(1 for t in calls if t.state == "FINISHED")
            if finished >= thresholds[0] * expected_calls:
                job_id = job_id or next((t.job_id for t in calls), None)
                node = _actor_node(cluster, dashboard, job_id)
                if node is None:
                    continue
                cluster.remove_node(node, allow_graceful=False)
                cluster.add_node(num_cpus=1)
                written = _files(client, bucket, run_id)
                lost.append({"after_s": round(time.monotonic() - started, 1), "model_calls_finished": finished,
                             "files_written": written})
                print(f"lost the explain actor's node after {finished} model calls", flush=True)
                thresholds.pop(0)
        wall = time.monotonic() - started
        tail = log.read_text().strip().splitlines()[-12:]
        filesystem = s3fs.S3FileSystem(endpoint_url=endpoint)
        manifest = json.loads(filesystem.cat_file(f"{bucket}/out/runs/{run_id}.json")) if process.returncode == 0 else {}
        connection = duckdb.connect()
        connection.register_filesystem(filesystem)
        keys, most, not_ok = connection.execute(
            "select count(*), max(n), sum(bad) from (select count(*) as n, sum((status <> 'ok')::int) as bad"
            f" from read_parquet('s3://{bucket}/out/saliency/{run_id}-part-*.parquet') group by image_id, method, lam)"
        ).fetchall()[0]
        attempts = manifest.get("attempts", [])
        result = {
            "images": args.images, "samples": args.samples, "exit": process.returncode, "wall_s": round(wall, 1),
            "requests": proxy.counts["requests"], "faults": proxy.faults(),
            "fault_kinds": {k: v for k, v in sorted(proxy.counts.items()) if k.startswith(("slowdown", "drop"))},
            "nodes_lost": lost, "attempts": len(attempts),
            "recovery": attempts[-1].get("recovery") if attempts else None,
            "storage_retries": attempts[-1].get("storage_retries") if attempts else None,
            "keys": keys, "expected_keys": args.images * ROWS_PER_IMAGE, "max_rows_per_key": most,
            "rows_not_ok": not_ok, "log_tail": tail if process.returncode else [],
        }
        print(json.dumps(result, indent=2), flush=True)
    finally:
        cluster.shutdown()
        proxy.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
