"""One explanation job: the Ray Data graph from source to sink, resume, manifest, summary.

``run_job(config)`` connects to Ray (RAY_ADDRESS when set, e.g. on a cluster or in a RayJob;
else a local Ray), builds

    read -> decode (CPU tasks) -> explain (actor pool) -> finish (CPU tasks)
         -> [score (actor pool; CPU tasks when no metric needs the model)] -> write (Datasink)

runs it (Ray Data's progress bars show while it runs), then writes the run manifest and returns
the summary. Progress and warnings go to this module's logger (the CLI prints them).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from legx.pipeline.engine.allocator import ALLOCATOR_ENV
from legx.pipeline.engine.config import ConfigError, JobConfig
from legx.pipeline.engine.decode import decode_batch
from legx.pipeline.engine.explain import ExplainActor
from legx.pipeline.engine.finish import finish_batch
from legx.pipeline.engine.ground_truth import check_class_count, ground_truth_counts, job_classes, model_classes
from legx.pipeline.engine.manifest import (
    JobSummary, alive_node_ids, record_attempt, record_failure, recovery, top1_warning,
)
from legx.pipeline.engine.plan import Plan, load_job_model, make_plan
from legx.pipeline.engine.resources import ActorResources, ResourceError, actor_resources
from legx.pipeline.engine.schema import row_key
from legx.pipeline.engine.score import MetricsActor, needs_model, score_model_free_batch
from legx.pipeline.engine.sink import (
    SALIENCY_DIR, ParquetWriter, WriteCounts, read_run, run_location, supersede, written_state,
)
from legx.pipeline.engine.sources import SourceError, read_annotations, read_source, repeated_ids
from legx.pipeline.engine.storage import scheme_of
from legx.pipeline.engine.storage_retry import (
    RetryCounter, StorageError, describe, retried, retry_io_errors_in_ray_data, storage_failure,
)

logger = logging.getLogger(__name__)

# Decoding workers import no torch (~0.25 GiB peak: Ray, pyarrow, cvxpy); the declaration's job is
# to keep decode from being fused into the model actors (see ``_decode``).
DECODE_TASK_MEMORY = 512 * 1024**2


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster in RAY_ADDRESS, or start a local Ray (token auth off, as a local
    single-user Ray needs none). Ray's driver logger is no more verbose than legx's own
    (``legx -q`` quiets Ray's INFO lines too; ``ray.init`` would otherwise reset it to INFO)."""
    import ray

    if ray.is_initialized():
        return
    logging_level = max(logging.INFO, logging.getLogger("legx").getEffectiveLevel())
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False, logging_level=logging_level)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging_level)


def _use_gpu(config: JobConfig) -> bool:
    if config.gpu == "never":
        return False
    if config.gpu == "always":
        return True
    import ray

    return ray.cluster_resources().get("GPU", 0) >= 1


def _actor_resources(config: JobConfig, use_gpu: bool) -> ActorResources:
    """The actor pools' CPUs for this cluster (``legx.pipeline.engine.resources``); a setting
    the cluster cannot run is a ConfigError."""
    import ray

    node_cpus = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
    try:
        return actor_resources(2 if needs_model(tuple(config.metrics)) else 1, config.actors,
                               config.actor_cpus, ray.cluster_resources().get("CPU", 0), node_cpus, use_gpu)
    except ResourceError as error:
        raise ConfigError([str(error)]) from error


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


def run_job(config: JobConfig) -> JobSummary:
    """Run the job of ``config`` to completion (resuming its run id) and return the summary.

    A storage fault that outlives its retries (``legx.pipeline.engine.storage_retry``) ends the
    job with ``StorageError`` (one line: operation, object, cause), recorded in the run's
    manifest as this attempt's ``failure``."""
    ensure_ray()
    retry_io_errors_in_ray_data()
    nodes_at_start = alive_node_ids()
    check_shared_output(config, len(nodes_at_start))
    # The clock starts once Ray is up: on a cluster it already is, and the job's rate should
    # not depend on whether this process had to start a local Ray first.
    started_at = datetime.now(timezone.utc)
    try:
        return _attempt(config, nodes_at_start, started_at)
    except (ConfigError, SourceError):
        raise
    except Exception as error:
        failure = storage_failure(error)
        if failure is None:
            raise
        attempt = {"started_at_utc": started_at.strftime("%Y-%m-%d %H:%M:%S"),
                   "failed_at_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")}
        try:
            record_failure(config, attempt, failure.as_dict())
        except Exception as manifest_error:  # noqa: BLE001 - the job's own failure is the one to report
            logger.warning("the run manifest could not record this failure: %s", describe(manifest_error))
        raise failure from None


def _attempt(config: JobConfig, nodes_at_start: set[str], started_at: datetime) -> JobSummary:
    started, started_epoch = time.perf_counter(), time.time()
    driver_retries = RetryCounter.retries
    attempts = config.storage.max_attempts
    use_gpu = _use_gpu(config)
    resources, plan, model_id, declared_size = _prepare(config, use_gpu)
    warnings = []
    if declared_size and declared_size != config.image_size:
        warnings.append(f"WARNING: model {config.model} was trained on {declared_size} px images; this"
                        f" job resizes its inputs to image_size {config.image_size}")
        logger.warning(warnings[-1])

    dataset, source_format = retried("list", config.input, lambda: read_source(config), attempts)
    annotations = retried("read the annotations of", config.annotations or config.input,
                          lambda: _annotations(config, source_format), attempts)
    repeated = retried("read the image ids of", config.input,
                       lambda: repeated_ids(config, source_format), attempts)
    if repeated:
        logger.info("%d later occurrences of repeated image ids become 'duplicate id' error rows",
                    sum(map(len, repeated.values())))
    existing, retryable_rows = written_state(config.output, config.storage, config.run_id)
    if existing:
        logger.info("resuming run %s: %d rows already written", config.run_id, len(existing))

    job = _Job(config, plan, gpus=_actor_gpus(plan, use_gpu))
    dataset = _stages(dataset, job, annotations.table if annotations else None, repeated, existing)
    counts = _write(dataset, job, existing, attempt=started_at.strftime("%Y%m%dT%H%M%S.%fZ"))
    if counts.failure:
        failure = counts.failure
        raise StorageError(failure["operation"], failure["object"], failure["cause"], failure["attempts"],
                           failure["seconds"])
    # Only the retryable error rows of earlier attempts can be superseded: without any, the
    # pass would read every file of the run for nothing.
    superseded = supersede(config.output, config.storage, config.run_id) if retryable_rows else 0
    if superseded:
        logger.info("%d retryable error rows superseded by this attempt's rows", superseded)
    wall = time.perf_counter() - started

    try:
        run_rows = read_run(config.output, config.storage, config.run_id,
                            ["image_id", "status", "label", "target", "boxes"])
    except StorageError as error:
        # Every row is written: a read-back that outlives its retries costs the summary its
        # run-wide totals, not the job.
        run_rows = None
        warnings.append(f"WARNING: the run's rows were written but not read back for its totals: {error}")
        logger.warning(warnings[-1])
    summary = JobSummary.of(config, counts, run_rows, wall, started_epoch, warnings)
    summary.ground_truth = ground_truth_counts(annotations, run_rows) if run_rows is not None else None
    summary.resources = resources.describe()
    summary.superseded_rows = superseded
    warning = top1_warning(summary.top1, config.image_size, declared_size)
    if warning:
        summary.warnings.append(warning)
        logger.warning(warning)
    attempt = {
        # Naive UTC: DuckDB hands zoned timestamps to Python only with pytz installed.
        "started_at_utc": started_at.strftime("%Y-%m-%d %H:%M:%S"),
        "finished_at_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "source_format": source_format,
        "device": "cuda" if use_gpu else "cpu",
        "resumed_rows": len(existing),
        "actor_resources": resources.as_dict(),
        "recovery": recovery(nodes_at_start),
    }
    summary.storage_retries = counts.storage_retries + RetryCounter.retries - driver_retries
    summary.solver_fallbacks = counts.solver_fallbacks
    record_attempt(config, summary, attempt, model_id=model_id, model_input_size=declared_size,
                   methods=[{"name": s.name, "params": s.params} for s in plan.specs])
    return summary


def job_stages(dataset, config: JobConfig):
    """The job's stages from decode to score over ``dataset`` (``SOURCE_SCHEMA`` rows), ending in
    output rows (``output_schema``) of ``config.run_id``: the Ray program's way into legx
    (``legx.explain_dataset``). Lazy: the caller consumes or writes the Dataset. The model is
    loaded here once so that a bad spec fails now; annotations are the config's, if any."""
    from legx.pipeline.engine.sink import output_rows

    ensure_ray()
    retry_io_errors_in_ray_data()
    use_gpu = _use_gpu(config)
    _, plan, model_id, _ = _prepare(config, use_gpu)
    annotations = _annotations(config, "dataset") if config.annotations else None
    job = _Job(config, plan, gpus=_actor_gpus(plan, use_gpu))
    dataset = _stages(dataset, job, annotations.table if annotations else None, {}, set())
    return dataset.map_batches(output_rows, fn_kwargs={"run_id": config.run_id, "model_id": model_id},
                               batch_format="pyarrow", num_cpus=0.5)


def _actor_gpus(plan: Plan, use_gpu: bool) -> float:
    """GPUs of one model actor: a second pool of metric actors shares the GPU."""
    return (0.5 if needs_model(plan.metrics) else 1.0) if use_gpu else 0


def _stages(dataset, job: _Job, annotations, repeated: dict, existing: set[str]):
    dataset = _decode(dataset, job, annotations, repeated, existing)
    dataset = _explain(dataset, job)
    dataset = _finish(dataset, job)
    return _score(dataset, job)


def _annotations(config: JobConfig, source_format: str):
    """The annotations (``read_annotations``); a file that legx cannot read is a config error
    with the reason, in one line, before any work."""
    import pyarrow as pa

    try:
        return read_annotations(config, source_format)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        where = config.annotations or f"{config.input} ({source_format} annotations)"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError([f"annotations: cannot read {where!r}: {reason}"]) from error


def _prepare(config: JobConfig, use_gpu: bool) -> tuple[ActorResources, Plan, str, int | None]:
    """What both entry points settle before any stage runs: the actors' resources, the class
    list, the plan, and the model loaded once here (its id and declared input size), with the
    class list checked against the model's outputs."""
    resources = _actor_resources(config, use_gpu)
    logger.debug("resources: %s", resources.describe())
    classes = job_classes(config)
    plan = make_plan(config, use_gpu, list(classes.names) if classes and classes.names else None,
                     actor_cpus=resources.actor_cpus)
    model_id, declared_size, outputs = _inspect_model(plan, config)
    check_class_count(classes, outputs, config)
    return resources, plan, model_id, declared_size


def _inspect_model(plan: Plan, config: JobConfig) -> tuple[str, int | None, int]:
    """The model's id, declared input size and number of outputs, from loading it once here, so
    that a bad spec fails now with its reason, not in the actors."""
    try:
        model = load_job_model(plan, "cpu")
    except (ValueError, OSError) as error:
        raise ConfigError([f"model: {error}"]) from error
    return (getattr(model, "model_id", config.model), getattr(model, "input_size", None),
            model_classes(model, config.image_size))


@dataclass(frozen=True)
class _Job:
    """What every stage's Ray wiring reads: the config, the plan, and the GPUs of one model
    actor (a second pool of metric actors shares the GPU with the explain actors)."""

    config: JobConfig
    plan: Plan
    gpus: float


def _decode(dataset, job: _Job, annotations, repeated: dict, existing: set[str]):
    """Decode on CPU tasks into blocks of one model call, skipping the images already complete."""
    import ray

    config = job.config
    complete = _complete_images(existing, job.plan) if existing else frozenset()
    # Blocks of one model call from the read on: Ray Data's read blocks hold many images, and an
    # actor holds up to two blocks in flight, so losing its node would re-run two read blocks
    # (hundreds of images on a large input) instead of two model calls.
    call_rows = config.decode_batch_size or config.batch_size
    dataset = dataset.repartition(target_num_rows_per_block=call_rows)
    return dataset.map_batches(
        decode_batch,
        # Decoded blocks of one model call's size stream through the actor one by one, so that
        # LP solves and writes of one block overlap the forwards of the next.
        batch_size=call_rows,
        batch_format="pyarrow",
        fn_kwargs={
            "plan": job.plan,
            "annotations_ref": ray.put(annotations) if annotations is not None else None,
            "skip_ref": ray.put(complete) if complete else None,
            "repeated_ref": ray.put(repeated) if repeated else None,
        },
        # Ray fuses consecutive map stages whose remote args are equal; declaring the decode
        # tasks' memory keeps decoding on CPU tasks instead of inside the model actors.
        memory=DECODE_TASK_MEMORY,
    )


def _on_model_actors(dataset, actor_class: type, job: _Job):
    """``actor_class(plan)`` on a pool of ``actors`` model actors, one model call per batch."""
    import ray

    config = job.config
    return dataset.map_batches(
        actor_class,
        fn_constructor_args=(job.plan,),
        batch_size=config.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=config.actors),
        num_cpus=job.plan.actor_cpus,
        num_gpus=job.gpus,
        runtime_env={"env_vars": ALLOCATOR_ENV},
    )


def _explain(dataset, job: _Job):
    return _on_model_actors(dataset, ExplainActor, job)


def _finish(dataset, job: _Job):
    return dataset.map_batches(
        finish_batch, batch_size=job.config.solve_batch_size or job.config.batch_size, batch_format="pyarrow",
        num_cpus=1,
    )


def _score(dataset, job: _Job):
    """Metrics: on the model actors' pool when one needs forwards, else on CPU tasks."""
    if not job.config.metrics:
        return dataset
    if needs_model(job.plan.metrics):
        return _on_model_actors(dataset, MetricsActor, job)
    return dataset.map_batches(
        score_model_free_batch,
        fn_kwargs={"plan": job.plan},
        batch_size=job.config.batch_size,
        batch_format="pyarrow",
        num_cpus=0.5,
    )


def _write(dataset, job: _Job, existing: set[str], attempt: str) -> WriteCounts:
    """Write through the Datasink (this streams the whole graph); this invocation's counts.
    ``attempt`` names this attempt's files apart from an earlier attempt's."""
    import ray

    from legx.pipeline.engine.write import SaliencySink

    config, first = job.config, job.plan.specs[0]
    location = retried("look up the run's files in", f"{config.output}/{SALIENCY_DIR}",
                       lambda: run_location(config.output, config.storage, config.run_id)[1:],
                       config.storage.max_attempts)
    writer = ParquetWriter(
        config.output, config.storage, config.run_id, config.model,
        anchor=(first.name, first.outputs[0]), rows_per_file=config.rows_per_file,
        written_ref=ray.put(frozenset(existing)) if existing else None,
        attempt=attempt, location=location,
    )
    sink = SaliencySink(writer)
    dataset.write_datasink(sink, ray_remote_args={"num_cpus": 0.5})
    return sink.totals


def _complete_images(existing: set[str], plan: Plan) -> frozenset[str]:
    """Image ids whose every expected row is already written."""
    image_ids = {key.split("\x1f", 1)[0] for key in existing}
    return frozenset(
        image_id
        for image_id in image_ids
        if all(row_key(*key) in existing for key in plan.expected_keys(image_id))
    )
