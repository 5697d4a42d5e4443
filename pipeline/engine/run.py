"""One explanation job: the Ray Data graph from source to sink, resume, manifest, summary.

``run_job(config)`` connects to Ray (RAY_ADDRESS when set, e.g. on a cluster or in a RayJob;
else a local Ray), builds

    read -> decode (CPU tasks) -> explain (actor pool) -> finish (CPU tasks)
         -> [score (actor pool; CPU tasks when no metric needs the model)] -> write (CPU tasks)

streams it (Ray Data's progress bars show while it runs), then writes the run manifest and
returns the summary.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pipeline.engine.allocator import ALLOCATOR_ENV
from pipeline.engine.config import ConfigError, JobConfig
from pipeline.engine.decode import decode_batch
from pipeline.engine.explain import ExplainActor
from pipeline.engine.finish import finish_batch
from pipeline.engine.manifest import (
    run_top1,
    versions,
    alive_node_ids,
    read_manifest,
    recovery,
    top1_reading,
    top1_warning,
    write_manifest,
)
from pipeline.engine.plan import Plan, load_job_model, make_plan
from pipeline.engine.score import MetricsActor, needs_model, score_model_free_batch
from pipeline.engine.sink import ParquetWriter, read_run, written_keys
from pipeline.engine.schema import row_key
from pipeline.engine.sources import read_annotations, read_source, repeated_ids
from pipeline.engine.storage import scheme_of


logger = logging.getLogger(__name__)


# Decoding workers import no torch (~0.25 GiB peak: Ray, pyarrow, cvxpy); the declaration's job is
# to keep decode from being fused into the model actors (see below).
DECODE_TASK_MEMORY = 512 * 1024**2


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
    total_images: int
    total_rows: int
    total_ok: int
    total_errors: int
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


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster in RAY_ADDRESS, or start a local Ray (token auth off, as a local
    single-user Ray needs none)."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def _use_gpu(config: JobConfig) -> bool:
    if config.gpu == "never":
        return False
    if config.gpu == "always":
        return True
    import ray

    return ray.cluster_resources().get("GPU", 0) >= 1


def _check_resources(config: JobConfig, use_gpu: bool) -> None:
    """Actors hold their CPUs for the whole job; leave at least one for the task stages."""
    import ray

    pools = 2 if needs_model(tuple(config.metrics)) else 1
    cpus = ray.cluster_resources().get("CPU", 0)
    needed = pools * config.actors * config.actor_cpus + 1
    if not use_gpu and cpus and needed > cpus:
        raise RuntimeError(
            f"{pools} actor pool(s) of {config.actors} actor(s) x {config.actor_cpus} CPU leave no CPU"
            f" for decoding and solving on this cluster ({cpus:g} CPUs); lower actors or actor_cpus"
        )


def check_shared_output(config: JobConfig, nodes: int) -> None:
    """Refuse a local output path on a multi-node cluster unless the config says every node
    mounts it: the write tasks run on every node, and each would write its files to its own
    disk. Decided by node count, since nodes on one machine share a disk that proves nothing."""
    if nodes > 1 and scheme_of(config.output) == "file" and not config.output_shared:
        raise ConfigError([
            f"output: {config.output!r} is a local path, but this Ray cluster has {nodes} nodes and"
            " each would write its part of the output to its own disk; write to object storage"
            " (s3://bucket/prefix or gs://bucket/prefix), or to a path that every node mounts"
            " (NFS, a shared volume) and set output_shared: true"
        ])


def run_job(config: JobConfig, log=print) -> JobSummary:
    """Run the job of ``config`` to completion (resuming its run id) and return the summary."""
    import ray

    ensure_ray()
    nodes_at_start = alive_node_ids()
    check_shared_output(config, len(nodes_at_start))
    # The clock starts once Ray is up: on a cluster it already is, and the job's rate should
    # not depend on whether this process had to start a local Ray first.
    started_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    started_epoch = time.time()
    use_gpu = _use_gpu(config)
    _check_resources(config, use_gpu)
    plan = make_plan(config, use_gpu)
    # Load the model once here so that a bad spec fails now with its reason, not in the actors.
    try:
        driver_model = load_job_model(plan, "cpu")
    except (ValueError, OSError) as error:
        raise ConfigError([f"model: {error}"]) from error
    model_id = getattr(driver_model, "model_id", config.model)
    declared_size = getattr(driver_model, "input_size", None)
    del driver_model
    warnings = []
    if declared_size and declared_size != config.image_size:
        warnings.append(f"WARNING: model {config.model} was trained on {declared_size} px images; this"
                        f" job resizes its inputs to image_size {config.image_size}")
        logger.warning(warnings[-1])
        log(warnings[-1])

    dataset, source_format = read_source(config)
    annotations = read_annotations(config, source_format)
    repeated = repeated_ids(config, source_format)
    if repeated:
        log(f"{sum(map(len, repeated.values()))} later occurrences of repeated image ids become"
            " 'duplicate id' error rows")

    existing = written_keys(config.output, config.storage, config.run_id)
    if existing:
        log(f"resuming run {config.run_id}: {len(existing)} rows already written")
    complete = _complete_images(existing, plan) if existing else frozenset()

    annotations_ref = ray.put(annotations) if annotations is not None else None
    skip_ref = ray.put(frozenset(complete)) if complete else None
    written_ref = ray.put(frozenset(existing)) if existing else None
    repeated_ref = ray.put(repeated) if repeated else None

    # Blocks of one model call from the read on: Ray Data's read blocks hold many images, and an
    # actor holds up to two blocks in flight, so losing its node would re-run two read blocks
    # (hundreds of images on a large input) instead of two model calls.
    dataset = dataset.repartition(target_num_rows_per_block=config.decode_batch_size or config.batch_size)
    model_metrics = needs_model(plan.metrics)
    gpus = (0.5 if model_metrics else 1.0) if use_gpu else 0
    dataset = dataset.map_batches(
        decode_batch,
        # Decoded blocks of one model call's size stream through the actor one by one, so that
        # LP solves and writes of one block overlap the forwards of the next.
        batch_size=config.decode_batch_size or config.batch_size,
        batch_format="pyarrow",
        fn_kwargs={"plan": plan, "annotations_ref": annotations_ref, "skip_ref": skip_ref,
                   "repeated_ref": repeated_ref},
        # Ray fuses consecutive map stages whose remote args are equal; declaring the decode
        # tasks' memory keeps decoding on CPU tasks instead of inside the model actors.
        memory=DECODE_TASK_MEMORY,
    )
    dataset = dataset.map_batches(
        ExplainActor,
        fn_constructor_args=(plan,),
        batch_size=config.batch_size,
        batch_format="pyarrow",
        compute=_pool(config.actors),
        num_cpus=config.actor_cpus,
        num_gpus=gpus,
        runtime_env={"env_vars": ALLOCATOR_ENV},
    )
    dataset = dataset.map_batches(
        finish_batch, batch_size=config.solve_batch_size, batch_format="pyarrow", num_cpus=1
    )
    if config.metrics and not model_metrics:
        dataset = dataset.map_batches(
            score_model_free_batch,
            fn_kwargs={"plan": plan},
            batch_size=config.batch_size,
            batch_format="pyarrow",
            num_cpus=0.5,
        )
    elif config.metrics:
        dataset = dataset.map_batches(
            MetricsActor,
            fn_constructor_args=(plan,),
            batch_size=config.batch_size,
            batch_format="pyarrow",
            compute=_pool(config.actors),
            num_cpus=config.actor_cpus,
            num_gpus=gpus,
            runtime_env={"env_vars": ALLOCATOR_ENV},
        )
    first = plan.specs[0]
    writer = ParquetWriter(
        config.output, config.storage, config.run_id, config.model,
        anchor=(first.name, first.outputs[0]), written_ref=written_ref,
    )
    dataset = dataset.map_batches(
        writer, batch_size=config.rows_per_file, batch_format="pyarrow", num_cpus=0.5
    )

    counts = {"rows": 0, "ok": 0, "errors": 0, "images": 0, "forwards": 0, "skipped": 0}
    model_s, model_starts, model_ends = 0.0, [], []
    labelled = correct = 0
    classes: int | None = None
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for name in counts:
            counts[name] += sum(value or 0 for value in batch.column(name).to_pylist())
        labelled += sum(value or 0 for value in batch.column("labelled").to_pylist())
        correct += sum(value or 0 for value in batch.column("correct").to_pylist())
        classes = max([value for value in batch.column("classes").to_pylist() if value] + [classes or 0]) or None
        model_s += sum(value or 0.0 for value in batch.column("model_s").to_pylist())
        model_starts += [value for value in batch.column("model_start").to_pylist() if value is not None]
        model_ends += [value for value in batch.column("model_end").to_pylist() if value is not None]
    wall = time.perf_counter() - started

    totals = read_run(config.output, config.storage, config.run_id, ["image_id", "status"])
    statuses = totals.column("status").to_pylist()
    summary = JobSummary(
        run_id=config.run_id,
        output=config.output,
        images=counts["images"],
        rows=counts["rows"],
        ok=counts["ok"],
        errors=counts["errors"],
        forwards=counts["forwards"],
        skipped_rows=counts["skipped"],
        wall_s=wall,
        total_images=len(set(totals.column("image_id").to_pylist())),
        total_rows=totals.num_rows,
        total_ok=statuses.count("ok"),
        total_errors=statuses.count("error"),
        labelled=labelled,
        correct=correct,
        classes=classes,
        warnings=warnings,
        **_model_timing(model_s, model_starts, model_ends, started_epoch),
    )
    warning = top1_warning(summary.top1, config.image_size, declared_size)
    if warning:
        summary.warnings.append(warning)
        logger.warning(warning)
        log(warning)
    previous = read_manifest(config.output, config.storage, config.run_id) or {}
    attempts = previous.get("attempts", []) + [
        {
            # Naive UTC: DuckDB hands zoned timestamps to Python only with pytz installed.
            "started_at_utc": started_at.strftime("%Y-%m-%d %H:%M:%S"),
            "finished_at_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "source_format": source_format,
            "device": "cuda" if use_gpu else "cpu",
            "resumed_rows": len(existing),
            "recovery": recovery(nodes_at_start),
            **{
                key: value
                for key, value in summary.as_dict().items()
                if not key.startswith("total_") and key not in ("run_id", "output")
            },
        }
    ]
    write_manifest(
        config.output,
        config.storage,
        config.run_id,
        {
            "run_id": config.run_id,
            "config": config.public_dict(),
            "model_id": model_id,
            "model_input_size": declared_size,
            "top1": run_top1(attempts),
            "methods": [{"name": s.name, "params": s.params} for s in plan.specs],
            "versions": versions(),
            "argv": sys.argv,
            "counts": {
                "images": summary.total_images,
                "rows": summary.total_rows,
                "ok": summary.total_ok,
                "errors": summary.total_errors,
            },
            "attempts": attempts,
        },
    )
    return summary


def _model_timing(busy_s: float, starts: list[float], ends: list[float], job_start: float) -> dict:
    """JobSummary's model fields from the calls' busy seconds and epoch start/end times (the
    actors' clocks: on a cluster, NTP keeps nodes within milliseconds of the driver)."""
    if not starts:
        return {}
    first, last = min(starts), max(ends)
    return {
        "model_busy_s": round(busy_s, 3),
        "startup_s": round(max(0.0, first - job_start), 3),
        "model_window_s": round(last - first, 3),
    }


def _pool(size: int):
    import ray

    return ray.data.ActorPoolStrategy(size=size)


def _complete_images(existing: set[str], plan: Plan) -> frozenset[str]:
    """Image ids whose every expected row is already written."""
    image_ids = {key.split("\x1f", 1)[0] for key in existing}
    return frozenset(
        image_id
        for image_id in image_ids
        if all(row_key(*key) in existing for key in plan.expected_keys(image_id))
    )
