"""The run manifest (OUTPUT/runs/RUN_ID.json): what ran, on what, with which result, attempt by
attempt; the readings it records (the model's top-1 against the labels, Ray's recoveries); and
``JobSummary``, what one invocation did, which ``run_job`` returns and the manifest's attempt
records."""

from __future__ import annotations

import json
import platform
import posixpath
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from legx.methods.metrics.intervals import wilson_interval
from legx.pipeline.engine.storage import StorageOptions, exists, resolve, write_bytes_atomic
from legx.pipeline.engine.storage_retry import retried

if TYPE_CHECKING:
    import pyarrow as pa

    from legx.pipeline.engine.config import JobConfig
    from legx.pipeline.engine.sink import WriteCounts

RUNS_DIR = "runs"
STATE_API_TIMEOUT_S = 30


@dataclass
class JobSummary:
    """What one invocation did (``images``..``forwards`` count this invocation's work) and the
    run's totals after it (``total_*``, read back from the output)."""

    run_id: str
    output: str
    images: int
    rows: int
    ok: int
    errors: int
    forwards: int
    skipped_rows: int
    wall_s: float
    # The run's rows after this invocation, read back; None where that read failed.
    total_images: int | None
    total_rows: int | None
    total_ok: int | None
    total_errors: int | None
    # The explain actors' calls: seconds spent in them (summed over actors), seconds from the
    # job's start to the first call, and from the first call's start to the last one's end.
    # None when no model call ran (a complete run resumed).
    model_busy_s: float | None = None
    startup_s: float | None = None
    model_window_s: float | None = None
    # The model's reading of the labels in this invocation: images with a label, those whose
    # clean top-1 class is the label, and the model's number of classes (None: no model call).
    labelled: int = 0
    correct: int = 0
    classes: int | None = None
    # What the user must see: the input size differs from the model's, the model reads the
    # labels no better than chance.
    warnings: list[str] = field(default_factory=list)
    # What the run's images got from the annotations, and what became of their boxes
    # (``legx.pipeline.engine.ground_truth.ground_truth_counts``); None without annotations.
    ground_truth: dict[str, Any] | None = None
    # The model actors' resources, as chosen or configured (``ActorResources.describe``).
    resources: str = ""
    # Retries of storage operations that met a transient fault (legx's own, on the driver and
    # in the write tasks), and the retryable error rows that this invocation's rows replaced.
    storage_retries: int = 0
    superseded_rows: int = 0
    # LEG-TV programs that the batched solver left to the exact one (Clarabel, then HiGHS).
    solver_fallbacks: int = 0

    @classmethod
    def of(cls, config: JobConfig, counts: WriteCounts, run_rows: pa.Table | None, wall_s: float,
           job_start: float, warnings: list[str]) -> JobSummary:
        """The summary of this invocation's write ``counts`` and the run's rows (image_id,
        status) after it (None: not read back); ``job_start`` is the job's start in epoch seconds
        (the actors' clocks: on a cluster, NTP keeps nodes within milliseconds of the driver)."""
        totals = dict.fromkeys(("total_images", "total_rows", "total_ok", "total_errors"))
        if run_rows is not None:
            statuses = run_rows.column("status").to_pylist()
            totals = {"total_images": len(set(run_rows.column("image_id").to_pylist())),
                      "total_rows": run_rows.num_rows, "total_ok": statuses.count("ok"),
                      "total_errors": statuses.count("error")}
        timing = {}
        if counts.model_start is not None:
            timing = {
                "model_busy_s": round(counts.model_s, 3),
                "startup_s": round(max(0.0, counts.model_start - job_start), 3),
                "model_window_s": round(counts.model_end - counts.model_start, 3),
            }
        return cls(
            run_id=config.run_id, output=config.output, images=counts.images, rows=counts.rows,
            ok=counts.ok, errors=counts.errors, forwards=counts.forwards, skipped_rows=counts.skipped,
            wall_s=wall_s, **totals, labelled=counts.labelled, correct=counts.correct,
            classes=counts.classes or None, warnings=warnings, **timing,
        )

    @property
    def top1(self) -> dict[str, Any] | None:
        """The model's top-1 accuracy against the labels (``top1_reading``); None without labels."""
        return top1_reading(self.labelled, self.correct, self.classes)

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def forwards_per_s(self) -> float:
        return self.forwards / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def serving_forwards_per_s(self) -> float | None:
        """Forwards per second between the first model call and the end of the last: the rate
        once the actors are up, without the job's fixed start-up and drain."""
        if not self.model_window_s:
            return None
        return self.forwards / self.model_window_s

    def as_dict(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["images_per_s"] = round(self.images_per_s, 3)
        data["forwards_per_s"] = round(self.forwards_per_s, 1)
        serving = self.serving_forwards_per_s
        data["serving_forwards_per_s"] = round(serving, 1) if serving is not None else None
        data["top1"] = self.top1
        return data


def record_attempt(config: JobConfig, summary: JobSummary, attempt: dict[str, Any], *, model_id: str,
                   model_input_size: int | None, methods: list[dict[str, Any]]) -> str:
    """Add this invocation to the run's manifest (made by its first attempt) and write it.
    ``attempt``: what only this invocation knows (its times, device, recoveries), recorded with
    the summary's own counts."""
    previous = read_manifest(config.output, config.storage, config.run_id) or {}
    attempts = previous.get("attempts", []) + [
        {
            **attempt,
            **{key: value for key, value in summary.as_dict().items()
               if not key.startswith("total_") and key not in ("run_id", "output")},
        }
    ]
    return write_manifest(config.output, config.storage, config.run_id, {
        "run_id": config.run_id,
        "config": config.public_dict(),
        "model_id": model_id,
        "model_input_size": model_input_size,
        "top1": run_top1(attempts),
        "methods": methods,
        "versions": versions(),
        "argv": sys.argv,
        "counts": {"images": summary.total_images, "rows": summary.total_rows,
                   "ok": summary.total_ok, "errors": summary.total_errors},
        "ground_truth": summary.ground_truth,
        "attempts": attempts,
    })


def write_manifest(output: str, storage: StorageOptions, run_id: str, manifest: dict[str, Any]) -> str:
    """Write OUTPUT/runs/RUN_ID.json; returns its URI-relative path."""
    filesystem, root = resolve(output, storage)
    path = posixpath.join(root, RUNS_DIR, f"{run_id}.json")
    data = json.dumps(manifest, indent=2, default=str).encode()
    retried("write", _manifest_uri(output, run_id), lambda: write_bytes_atomic(output, storage, path, data),
            storage.max_attempts)
    return path


def read_manifest(output: str, storage: StorageOptions, run_id: str) -> dict[str, Any] | None:
    filesystem, root = resolve(output, storage)
    path = posixpath.join(root, RUNS_DIR, f"{run_id}.json")

    def read() -> bytes | None:
        if not exists(filesystem, path):
            return None
        with filesystem.open_input_stream(path) as stream:
            return stream.read()

    data = retried("read", _manifest_uri(output, run_id), read, storage.max_attempts)
    return None if data is None else json.loads(data)


def _manifest_uri(output: str, run_id: str) -> str:
    return f"{output.rstrip('/')}/{RUNS_DIR}/{run_id}.json"


def record_failure(config: JobConfig, attempt: dict[str, Any], failure: dict[str, Any]) -> str:
    """Add a failed invocation to the run's manifest: what it knew (``attempt``) and why it
    ended (``failure``: the storage operation, object and cause). The run's counts stay those
    of the last attempt that finished."""
    previous = read_manifest(config.output, config.storage, config.run_id) or {
        "run_id": config.run_id, "config": config.public_dict(), "versions": versions(), "argv": sys.argv,
    }
    previous["attempts"] = previous.get("attempts", []) + [{**attempt, "failure": failure}]
    return write_manifest(config.output, config.storage, config.run_id, previous)


def top1_reading(labelled: int, correct: int, classes: int | None) -> dict[str, Any] | None:
    """Top-1 accuracy of ``correct`` out of ``labelled`` images, its 95% Wilson interval and the
    chance level 1 / ``classes``. ``near_chance`` is true when the interval reaches down to chance:
    the data cannot tell the model from one that guesses (or it reads worse than a guess, as when
    the labels do not follow the model's class order). None when no image carries a label."""
    if not labelled or not classes:
        return None
    low, high = wilson_interval(correct, labelled)
    chance = 1.0 / classes
    return {
        "labelled": labelled,
        "correct": correct,
        "accuracy": round(correct / labelled, 4),
        "interval_95": [round(low, 4), round(high, 4)],
        "chance": round(chance, 4),
        "classes": classes,
        "near_chance": bool(low <= chance),
    }


def top1_warning(reading: dict[str, Any] | None, image_size: int, declared_size: int | None) -> str | None:
    """The loud line for a model that reads the labelled inputs no better than chance."""
    if reading is None or not reading["near_chance"]:
        return None
    low, high = reading["interval_95"]
    causes = []
    if declared_size and declared_size != image_size:
        causes.append(f"it was trained on {declared_size} px images and this job resizes to {image_size} px")
    causes += ["the labels may not follow the model's class order", "or it was not trained for these images"]
    return (
        f"WARNING: the model's top-1 accuracy against the labels is {reading['accuracy']:.2f} "
        f"(95% interval {low:.2f}-{high:.2f}, {reading['labelled']} images), not above chance "
        f"({reading['chance']:.2f} = 1/{reading['classes']} classes): its maps explain a model that "
        f"does not recognise these images. Check the inputs: {'; '.join(causes)}."
    )


def run_top1(attempts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The model's top-1 reading over every attempt of the run (each attempt's images once)."""
    classes = max((attempt.get("classes") or 0 for attempt in attempts), default=0)
    return top1_reading(
        sum(attempt.get("labelled") or 0 for attempt in attempts),
        sum(attempt.get("correct") or 0 for attempt in attempts),
        classes or None,
    )


def alive_node_ids() -> set[str]:
    """Ids of the connected Ray cluster's live nodes (the head counts, CPUs or not)."""
    import ray

    return {node["NodeID"] for node in ray.nodes() if node.get("Alive")}


def recovery(nodes_at_start: set[str]) -> dict[str, Any]:
    """What Ray recovered from during this attempt: nodes that were alive at its start and are
    gone (Ray marks a killed node dead only after its health checks fail, so a loss just before
    the end may not count yet), nodes that joined, restarts of this job's actors and retried
    attempts of its tasks. The last two come from Ray's state API, which needs the dashboard
    (``ray[default]``; a local Ray started by legx runs without one): without it they are None
    and ``state_api`` says why."""
    import ray

    alive = alive_node_ids()
    report: dict[str, Any] = {
        "nodes_at_start": len(nodes_at_start),
        "nodes_lost": len(nodes_at_start - alive),
        "nodes_joined": len(alive - nodes_at_start),
        "actor_restarts": None,
        "task_retries": None,
        "state_api": "ok",
    }
    try:
        from ray.util.state import list_actors, list_tasks

        job = [("job_id", "=", ray.get_runtime_context().get_job_id())]
        actors = list_actors(filters=job, detail=True, limit=10_000, timeout=STATE_API_TIMEOUT_S,
                             raise_on_missing_output=False)
        retried = list_tasks(filters=job + [("attempt_number", "!=", 0)], limit=10_000,
                             timeout=STATE_API_TIMEOUT_S, raise_on_missing_output=False)
    except Exception as error:  # noqa: BLE001 - the counts are a report, never a job failure
        report["state_api"] = f"unavailable: {type(error).__name__}: {error}"[:300]
        return report
    report["actor_restarts"] = sum(actor.num_restarts or 0 for actor in actors)
    report["task_retries"] = len(retried)
    return report


def versions() -> dict[str, str]:
    import cvxpy
    import pyarrow
    import ray
    import torch

    from importlib.metadata import PackageNotFoundError, version

    try:
        legx = version("legx")
    except PackageNotFoundError:
        legx = "unknown"
    return {
        "legx": legx,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "pyarrow": pyarrow.__version__,
        "cvxpy": cvxpy.__version__,
    }
