"""The job on a real multi-node Ray cluster: ``ray.cluster_utils.Cluster`` runs a head (no CPUs)
and two one-CPU worker nodes, each its own raylet, on this machine; ``remove_node(node,
allow_graceful=False)`` kills a node the way a spot preemption does.

The job is driven only through its public entry points (``legx run`` with RAY_ADDRESS set, and
Ray's job submission API), reads its images from and writes its output to the moto S3 server,
and each test ends by reading the output back with DuckDB: exactly one row per image x method x
lambda, the expected statuses, no duplicate keys.

Every wait is on a real condition (a model call finished, a task's node known, a file written)
and bounded. Select these tests with ``pytest -m multinode``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from legx.pipeline.demo.data import write_demo_dataset
from legx.pipeline.analysis.query import connect
from legx.pipeline.engine.manifest import RUNS_DIR
from legx.pipeline.engine.storage import StorageOptions, read_bytes

pytestmark = pytest.mark.multinode

WORKER_NODES = 2
LAMBDAS = (0.1, 0.3)
EXPECTED_OUTPUTS = [("leg", None)] + [("leg-tv", lam) for lam in LAMBDAS]
# One image per model call, per decode block, per solve call, one image's rows per file: a
# node loss then costs a few images, and progress is visible file by file.
SMALL_JOB = [
    "--model", "demo", "--methods", "leg,leg-tv",
    "--set", "gpu=never", "--set", "image_size=64", "--set", "actors=1",
    "--set", "batch_size=1", "--set", "decode_batch_size=1", "--set", "solve_batch_size=1",
    "--set", f"rows_per_file={len(EXPECTED_OUTPUTS)}",
    "--set", "leg.grid_size=4", "--set", "leg-tv.grid_size=4",
    "--set", f"leg-tv.lambdas=[{', '.join(map(str, LAMBDAS))}]",
]
JOB_TIMEOUT_S = 300
WAIT_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(s3_endpoint):
    """Head with 0 CPUs (and the dashboard: job submission and the state API) + two one-CPU
    worker nodes. Started after the S3 fixture, so that every node's workers inherit its
    endpoint and dummy credentials."""
    from ray.cluster_utils import Cluster

    started = Cluster(
        initialize_head=True,
        # Ports of its own: other Ray instances on the machine may hold the default ones.
        head_node_args={"num_cpus": 0, "include_dashboard": True, "dashboard_port": _free_port(),
                        "dashboard_agent_listen_port": _free_port()},
    )
    for _ in range(WORKER_NODES):
        started.add_node(num_cpus=1)
    started.wait_for_nodes()
    yield started
    started.shutdown()


@pytest.fixture(scope="module")
def s3_images(s3_endpoint, tmp_path_factory):
    """Upload demo images once per module; returns a function bucket, count -> input URI."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    folder = tmp_path_factory.mktemp("images")

    def upload(bucket: str, count: int) -> str:
        images = folder / str(count)
        if not images.exists():
            write_demo_dataset(images, count, seed=count, image_size=64)
        for path in sorted(images.iterdir()):
            client.put_object(Bucket=bucket, Key=f"in/{path.name}", Body=path.read_bytes())
        return f"s3://{bucket}/in"

    return upload


def _dashboard(cluster) -> str:
    return f"http://{cluster.webui_url}"


def legx_on(cluster, log: Path, *args: str) -> subprocess.Popen:
    """`legx ARGS` as a driver of ``cluster`` (RAY_ADDRESS), in its own process group, its
    output in ``log`` (a pipe nobody reads would stall it)."""
    command = [shutil.which("legx")] if shutil.which("legx") else [sys.executable, "-m", "legx.pipeline.cli"]
    env = dict(os.environ, RAY_ADDRESS=cluster.address, RAY_AUTH_MODE="disabled")
    with open(log, "a") as stream:
        return subprocess.Popen(command + list(args), env=env, stdout=stream, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)


def finished(process: subprocess.Popen, log: Path, timeout: float = JOB_TIMEOUT_S) -> str:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"the job did not finish in {timeout} s:\n{log.read_text()[-4000:]}")
    text = log.read_text()
    assert process.returncode == 0, text[-4000:]
    return text


def wait_for(condition, what: str, process: subprocess.Popen | None = None, timeout: float = WAIT_TIMEOUT_S):
    """The first truthy value of ``condition()``, polled until ``timeout``; fails if the job
    ends first (the event it waits for can then no longer happen mid-job)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the job ended (rc {process.returncode}) before {what}")
        time.sleep(0.5)
    pytest.fail(f"waited {timeout} s for {what}")


def _state(cluster, kind: str, **options) -> list:
    """Ray's state API on the cluster's dashboard; [] while it does not answer yet."""
    from ray.util import state

    try:
        return getattr(state, f"list_{kind}")(address=_dashboard(cluster), limit=10_000,
                                               raise_on_missing_output=False, **options)
    except Exception:  # noqa: BLE001 - the dashboard starts after the nodes; polled again
        return []


def _earlier_jobs(cluster) -> set[str]:
    """Ids of the Ray jobs that already ran tasks: the tests share one cluster."""
    return {task.job_id for task in _state(cluster, "tasks")}


def _tasks_named(cluster, fragment: str, status: str, earlier: set[str]) -> list:
    return [task for task in _state(cluster, "tasks")
            if fragment in task.name and task.state == status and task.job_id not in earlier]


def _model_actor_node(cluster, earlier: set[str]):
    """The worker node whose explain actor (of a job not in ``earlier``) is alive, after at
    least one model call finished (so the job is under way), or None."""
    if not _tasks_named(cluster, "ExplainActor)).submit", "FINISHED", earlier):
        return None
    actors = [a for a in _state(cluster, "actors")
              if "ExplainActor" in a.class_name and a.state == "ALIVE" and a.job_id not in earlier]
    nodes = {node.node_id: node for node in cluster.worker_nodes}
    return next((nodes[a.node_id] for a in actors if a.node_id in nodes), None)


def _solve_or_write_node(cluster, earlier: set[str]):
    """A live worker node that is running a LEG-TV solve or a Parquet write of a job not in
    ``earlier``, once its first write finished; None before. Running, not only ran: a node whose
    tasks had all finished and whose outputs were consumed can go without costing the job a
    retry, and then the loss would test nothing."""
    if not _tasks_named(cluster, "Write", "FINISHED", earlier):
        return None
    nodes = {node.node_id: node for node in cluster.worker_nodes}
    for fragment in ("finish_batch", "Write"):
        for task in _tasks_named(cluster, fragment, "RUNNING", earlier):
            if task.node_id in nodes:
                return nodes[task.node_id]
    return None


def _replace(cluster, node) -> None:
    """Kill ``node`` without warning, then add a fresh one-CPU node, as an autoscaler would."""
    cluster.remove_node(node, allow_graceful=False)
    cluster.add_node(num_cpus=1)


def _files(output: str, run_id: str) -> int:
    from legx.pipeline.engine.sink import run_files

    return len(run_files(output, StorageOptions(), run_id)[1])


def assert_exactly_once(output: str, run_id: str, images: int) -> None:
    """DuckDB over the output: one 'ok' row per image x method x lambda, no key twice."""
    connection = connect(output, StorageOptions())
    rows = connection.execute(
        "select image_id, method, lam, status, count(*) over (partition by image_id, method, lam) "
        f"from saliency where run_id = '{run_id}' order by image_id, method, lam nulls first"
    ).fetchall()
    assert max(row[4] for row in rows) == 1, "a key was written twice"
    assert len(rows) == images * len(EXPECTED_OUTPUTS)
    per_image: dict[str, list] = {}
    for image_id, method, lam, status, _ in rows:
        assert status == "ok", (image_id, method, lam, status)
        per_image.setdefault(image_id, []).append((method, lam))
    assert len(per_image) == images
    assert all(outputs == EXPECTED_OUTPUTS for outputs in per_image.values())


def _manifest(output: str, run_id: str) -> dict:
    return json.loads(read_bytes(f"{output}/{RUNS_DIR}/{run_id}.json", StorageOptions()))


def _recovery(output: str, run_id: str) -> dict:
    """The manifest's last attempt's recovery record, which saw the node go and its replacement
    join."""
    recovery = _manifest(output, run_id)["attempts"][-1]["recovery"]
    assert recovery["state_api"] == "ok", recovery
    # Ray marks the killed node dead only once its health checks fail: it may still count as
    # alive when a quick job ends. The replacement has joined by then.
    assert recovery["nodes_joined"] == 1 and recovery["nodes_lost"] in (0, 1), recovery
    return recovery


def _work_redone(recovery: dict) -> bool:
    return recovery["actor_restarts"] + recovery["task_retries"] >= 1


# ---------------------------------------------------------------------------------------------


def test_local_output_is_refused_on_a_multinode_cluster_unless_shared(cluster, s3_bucket, s3_images, tmp_path):
    source = s3_images(s3_bucket, 2)
    local = tmp_path / "out"
    job = ["run", "--input", source, "--output", str(local), "--run-id", "local", *SMALL_JOB,
           "--samples", "16"]
    log = tmp_path / "refused.log"
    process = legx_on(cluster, log, *job)
    process.wait(timeout=JOB_TIMEOUT_S)
    text = log.read_text()
    assert process.returncode == 2, text[-4000:]
    assert "local path" in text and f"{WORKER_NODES + 1} nodes" in text
    assert "s3://" in text and "gs://" in text and "output_shared: true" in text
    assert not local.exists(), "the refused job wrote something"

    shared = tmp_path / "shared.log"
    finished(legx_on(cluster, shared, *job, "--set", "output_shared=true"), shared)
    assert_exactly_once(str(local), "local", 2)


def _lose_a_node_mid_job(cluster, s3_bucket, s3_images, tmp_path, run_id: str, find_node, waiting_for: str,
                         images: int = 8):
    """Run an ``images``-image job on the cluster, kill the node ``find_node`` names once it
    names one (not gracefully) and add a fresh node; return the attempt's recovery record after
    checking that the job finished by itself with every row exactly once."""
    source = s3_images(s3_bucket, images)
    output = f"s3://{s3_bucket}/out"
    log = tmp_path / f"{run_id}.log"
    earlier = _earlier_jobs(cluster)
    process = legx_on(cluster, log, "run", "--input", source, "--output", output, "--run-id", run_id,
                      *SMALL_JOB, "--samples", "192")
    node = wait_for(lambda: find_node(cluster, earlier), waiting_for, process)
    assert process.poll() is None
    assert _files(output, run_id) < images, "the job was nearly done before the loss"
    _replace(cluster, node)
    finished(process, log)

    assert_exactly_once(output, run_id, images)
    return _recovery(output, run_id)


def test_losing_the_model_actors_node(cluster, s3_bucket, s3_images, tmp_path):
    recovery = _lose_a_node_mid_job(cluster, s3_bucket, s3_images, tmp_path, "actor-loss",
                                    _model_actor_node, "a model call finished on a known node")
    assert recovery["actor_restarts"] >= 1 and _work_redone(recovery), recovery


def test_losing_the_node_of_the_solves_and_writes(cluster, s3_bucket, s3_images, tmp_path):
    # The state API reports running tasks seconds late: long enough for the solves and writes
    # of eight images to end before the loss (32 keep the job under way), and for the task it
    # names as running on a node to have ended there, so that the loss costs no work. Every
    # job must end with its rows exactly once; at least one of up to three must have had work
    # redone, or the loss tested nothing.
    recoveries = []
    for attempt in range(3):
        recoveries.append(_lose_a_node_mid_job(cluster, s3_bucket, s3_images, tmp_path, f"task-loss-{attempt}",
                                               _solve_or_write_node, "a write finished and a solve's node known",
                                               images=32))
        if _work_redone(recoveries[-1]):
            break
    assert _work_redone(recoveries[-1]), recoveries


def test_driver_killed_on_the_cluster_then_rerun_resumes(cluster, s3_bucket, s3_images, tmp_path):
    images = 8
    source = s3_images(s3_bucket, images)
    output = f"s3://{s3_bucket}/out"
    job = ["run", "--input", source, "--output", output, "--run-id", "driver-loss", *SMALL_JOB,
           "--samples", "192"]
    first_log = tmp_path / "first.log"
    first = legx_on(cluster, first_log, *job)
    wait_for(lambda: _files(output, "driver-loss") >= 1, "a first file written", first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    written_before = _files(output, "driver-loss")
    assert 0 < written_before < images

    second_log = tmp_path / "second.log"
    text = finished(legx_on(cluster, second_log, *job), second_log)
    assert "resuming run driver-loss" in text
    assert_exactly_once(output, "driver-loss", images)
    attempts = _manifest(output, "driver-loss")["attempts"]
    # The killed driver never wrote its attempt: the manifest holds the rerun only.
    assert len(attempts) == 1
    assert attempts[0]["resumed_rows"] >= written_before * len(EXPECTED_OUTPUTS)
    assert attempts[0]["rows"] == images * len(EXPECTED_OUTPUTS) - attempts[0]["resumed_rows"]


def _submitted(client, entrypoint: str, runtime_env: dict) -> str | None:
    """The submitted job's id, or None while the head's job agent is not up yet."""
    try:
        return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    except RuntimeError as error:
        if "No available agent" in str(error):
            return None
        raise


def test_job_submission_api_runs_the_readme_entrypoint(cluster, s3_endpoint, s3_bucket, s3_images):
    from ray.job_submission import JobStatus, JobSubmissionClient

    images = 3
    source = s3_images(s3_bucket, images)
    output = f"s3://{s3_bucket}/out"
    client = JobSubmissionClient(_dashboard(cluster))
    entrypoint = " ".join(["legx", "run", "--input", source, "--output", output, "--run-id", "submitted",
                           *[f"'{word}'" if " " in word else word for word in SMALL_JOB],
                           "--samples", "32"])
    # The submitted driver runs on the head under Ray's job supervisor: the runtime_env gives it
    # the legx console script's folder and the object store's endpoint, as a user's would.
    runtime_env = {"env_vars": {
        "PATH": os.path.dirname(shutil.which("legx") or sys.executable) + os.pathsep + os.environ["PATH"],
        "AWS_ENDPOINT_URL": s3_endpoint,
    }}
    job_id = wait_for(lambda: _submitted(client, entrypoint, runtime_env), "the job server to accept the job")
    final = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    status = wait_for(lambda: (lambda s: s if s in final else None)(client.get_job_status(job_id)),
                      "the submitted job to end", timeout=JOB_TIMEOUT_S)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    assert "legx: run submitted finished" in logs
    assert_exactly_once(output, "submitted", images)
