"""What losing a node costs a legx job: the same job twice on one multi-node Ray cluster, once
undisturbed and once with the node of its model actor killed mid-job (and a fresh node added,
as an autoscaler would), side by side.

    python scripts/bench_node_loss.py --images 24 --samples 256 --batch-size 2

The cluster is ``ray.cluster_utils.Cluster`` on this machine: a head without CPUs (with the
dashboard, for Ray's state API) and two one-CPU worker nodes; the demo images and model; the
output in a temporary folder (``output_shared``: the nodes share this machine's disk). Printed
per run: wall seconds, the explain actor's tasks (Ray Data hands an actor one block per task)
and how many of them ran again after the loss, and the forwards that re-running cost (images in
the re-run blocks x forwards per image). The undisturbed job runs before and after the one with
the loss, so that the first run's cold start is not counted as the loss's cost. Ray Data keeps up
to two tasks in flight per actor: a loss should cost about two blocks.
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

MODEL_CALL = "ExplainActor)).submit"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tasks(dashboard: str) -> list:
    from ray.util.state import list_tasks

    try:
        return list_tasks(address=dashboard, limit=10_000, raise_on_missing_output=False)
    except Exception:  # noqa: BLE001 - the dashboard may not answer yet; polled again
        return []


def _actor_node(cluster, dashboard: str, job_id: str | None):
    from ray.util.state import list_actors

    try:
        actors = list_actors(address=dashboard, limit=10_000, raise_on_missing_output=False)
    except Exception:  # noqa: BLE001
        return None
    nodes = {node.node_id: node for node in cluster.worker_nodes}
    for actor in actors:
        if "ExplainActor" in actor.class_name and actor.state == "ALIVE" and actor.job_id == job_id:
            return nodes.get(actor.node_id)
    return None


def start_cluster(workers: int = 2):
    """A head without CPUs (with the dashboard, for the state API) and ``workers`` one-CPU worker
    nodes on this machine; returns the cluster and its dashboard's URL."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_port": _free_port(),
        "dashboard_agent_listen_port": _free_port()})
    for _ in range(workers):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster, f"http://{cluster.webui_url}"


def run_once(cluster, dashboard: str, job: list[str], output: Path, run_id: str, kill_after: int | None,
             seen_jobs: set[str]) -> dict:
    command = [shutil.which("legx") or sys.executable, *([] if shutil.which("legx") else ["-m", "legx.pipeline.cli"])]
    env = dict(os.environ, RAY_ADDRESS=cluster.address, RAY_AUTH_MODE="disabled")
    log = output / f"{run_id}.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(command + job + ["--run-id", run_id], env=env, stdout=stream,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    killed_at = None
    deadline = time.monotonic() + 900
    job_id = None
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        if kill_after is None or killed_at is not None:
            continue
        calls = [t for t in _tasks(dashboard) if MODEL_CALL in t.name and t.job_id not in seen_jobs]
        job_id = next((t.job_id for t in calls), None)
        if sum(1 for t in calls if t.state == "FINISHED") >= kill_after:
            node = _actor_node(cluster, dashboard, job_id)
            if node is not None:
                cluster.remove_node(node, allow_graceful=False)
                killed_at = time.monotonic()
                cluster.add_node(num_cpus=1)
    if process.poll() is None:
        process.kill()
        raise SystemExit(f"{run_id}: did not finish; see {log}")
    if process.returncode != 0:
        raise SystemExit(f"{run_id}: rc {process.returncode}; see {log}")
    if kill_after is not None and killed_at is None:
        raise SystemExit(f"{run_id}: the job ended before {kill_after} actor tasks finished")
    calls = [t for t in _tasks(dashboard) if MODEL_CALL in t.name and t.job_id not in seen_jobs]
    seen_jobs.update(t.job_id for t in calls)
    attempt = json.loads((output / "runs" / f"{run_id}.json").read_text())["attempts"][-1]
    blocks = {t.task_id for t in calls}
    rerun = {t.task_id for t in calls if t.state == "FINISHED" and t.attempt_number > 0}
    images_per_block = attempt["images"] / max(1, len(blocks))
    forwards_per_image = attempt["forwards"] / max(1, attempt["images"])
    return {
        "run": run_id,
        "wall_s": round(attempt["wall_s"], 1),
        "actor_tasks": len(blocks),
        "images_per_task": round(images_per_block, 2),
        "tasks_rerun": len(rerun),
        "forwards_recomputed": round(len(rerun) * images_per_block * forwards_per_image),
        "forwards_written": attempt["forwards"],
        "recovery": attempt["recovery"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--kill-after", type=int, default=2, help="actor tasks finished before the loss")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from legx.pipeline.demo.data import write_demo_dataset

    work = Path(tempfile.mkdtemp(prefix="legx-node-loss-"))
    write_demo_dataset(work / "images", args.images, seed=0, image_size=64)
    cluster, dashboard = start_cluster()
    job = ["run", "--input", str(work / "images"), "--output", str(work / "out"), "--model", "demo",
           "--methods", "leg,leg-tv", "--samples", str(args.samples),
           "--set", "gpu=never", "--set", "image_size=64", "--set", "actors=1", "--set", "output_shared=true",
           "--set", f"batch_size={args.batch_size}", "--set", "leg.grid_size=4", "--set", "leg-tv.grid_size=4"]
    (work / "out").mkdir()
    seen: set[str] = set()
    try:
        for run_id, kill_after in (("undisturbed", None), ("node-lost", args.kill_after),
                                   ("undisturbed-again", None)):
            print(json.dumps(run_once(cluster, dashboard, job, work / "out", run_id, kill_after, seen)), flush=True)
    finally:
        cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
