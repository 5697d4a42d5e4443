"""What transient object-storage faults cost a legx job: the same job (demo images in S3, LEG and
LEG-TV, output to S3) through a reverse proxy in front of a moto S3 server, once with no faults
and once with a share of requests answered ``503 SlowDown`` and a share of connections dropped
(``tests/fault_proxy.py``), side by side.

    python scripts/bench_storage_faults.py --images 16 --slowdown 0.25 --drop 0.08

Each job is ``legx run`` in its own process (its own local Ray). Printed per job: wall seconds,
requests the proxy saw, faults it injected (each one a request that some layer retried),
legx's own retried operations (the manifest's ``storage_retries``: driver and write tasks),
attempts in the manifest, and whether every key has exactly one row. The fault-free job runs
first and last, so that its cold start is not counted as the faults' cost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fault_proxy import FaultProxy  # noqa: E402 - the tests' proxy, one definition


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _job(bucket: str, run_id: str, proxy: FaultProxy, args) -> dict:
    command = [shutil.which("legx") or sys.executable, *([] if shutil.which("legx") else ["-m", "legx.pipeline.cli"]),
               "-q", "run", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out",
               "--methods", "leg,leg-tv", "--run-id", run_id,
               "--set", "image_size=32", "--set", "batch_size=4", "--set", f"leg.n_samples={args.samples}",
               "--set", "leg.grid_size=4", "--set", f"leg-tv.n_samples={args.samples}",
               "--set", "leg-tv.grid_size=4", "--set", "leg-tv.lambdas=[0.1, 0.3]",
               "--set", f"storage.endpoint_url={proxy.url}"]
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    before = dict(proxy.counts)
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    counts = {key: value - before.get(key, 0) for key, value in proxy.counts.items()}
    return {"run_id": run_id, "exit": result.returncode, "wall_s": round(wall, 1),
            "requests": counts.get("requests", 0),
            "faults": sum(v for k, v in counts.items() if k.startswith(("slowdown", "drop"))),
            "fault_kinds": {k: v for k, v in sorted(counts.items()) if k.startswith(("slowdown", "drop")) and v},
            "stderr_tail": result.stderr.strip().splitlines()[-1:] if result.returncode else []}


def _check(bucket: str, run_id: str, endpoint: str, images: int) -> dict:
    import duckdb
    import s3fs

    filesystem = s3fs.S3FileSystem(endpoint_url=endpoint)
    manifest = json.loads(filesystem.cat_file(f"{bucket}/out/runs/{run_id}.json"))
    connection = duckdb.connect()
    connection.register_filesystem(filesystem)
    rows, most = connection.execute(
        f"select count(*), max(n) from (select count(*) as n from read_parquet("
        f"'s3://{bucket}/out/saliency/{run_id}-part-*.parquet') group by image_id, method, lam)"
    ).fetchall()[0]
    attempts = manifest["attempts"]
    return {"attempts": len(attempts), "storage_retries": attempts[-1].get("storage_retries"),
            "keys": rows, "one_row_per_key": most == 1 and rows == images * 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--slowdown", type=float, default=0.25)
    parser.add_argument("--drop", type=float, default=0.08)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    from legx.pipeline.demo.data import write_demo_dataset

    # moto's convention for dummy credentials, set for this process and its children only.
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    bucket = "legx-bench-faults"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=bucket)
    with tempfile.TemporaryDirectory() as scratch:
        write_demo_dataset(scratch, args.images, seed=0, image_size=32)
        for path in sorted(Path(scratch).iterdir()):
            client.put_object(Bucket=bucket, Key=f"in/{path.name}", Body=path.read_bytes())

    proxy = FaultProxy(endpoint, seed=args.seed)
    proxy.start()
    results = []
    try:
        for label, slowdown, drop in (("clean", 0.0, 0.0), ("faults", args.slowdown, args.drop),
                                      ("clean-again", 0.0, 0.0)):
            proxy.slowdown, proxy.drop = slowdown, drop
            result = {"job": label, "slowdown": slowdown, "drop": drop, **_job(bucket, label, proxy, args)}
            if result["exit"] == 0:
                result.update(_check(bucket, label, endpoint, args.images))
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        proxy.stop()
        server.stop()
    clean = min(r["wall_s"] for r in results if r["job"].startswith("clean"))
    faulty = next(r for r in results if r["job"] == "faults")
    print(f"\n{args.images} images, LEG + LEG-TV, {args.samples} samples; faults: {args.slowdown:.0%} SlowDown,"
          f" {args.drop:.0%} dropped connections")
    print(f"{'job':12} {'wall s':>7} {'requests':>9} {'faults':>7} {'legx retries':>13} {'attempts':>9} {'1 row/key':>10}")
    for r in results:
        print(f"{r['job']:12} {r['wall_s']:7.1f} {r['requests']:9d} {r['faults']:7d} "
              f"{str(r.get('storage_retries')):>13} {str(r.get('attempts')):>9} {str(r.get('one_row_per_key')):>10}")
    print(f"faults added {faulty['wall_s'] - clean:+.1f} s to the fastest fault-free job ({clean:.1f} s)")


if __name__ == "__main__":
    main()
