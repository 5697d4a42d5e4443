"""What the stages need from the config, in a picklable form: the methods, the model, sizes.

``make_plan(config, use_gpu)`` is built once on the driver and shipped to every stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from legx import methods
from legx.pipeline.engine.storage import StorageOptions

if TYPE_CHECKING:
    from legx.pipeline.engine.config import JobConfig


@dataclass(frozen=True)
class MethodSpec:
    """One requested method: its registry name, constructor parameters and its outputs per
    image (the ``lam`` of each of its rows, as the explainer's ``outputs()`` lists them)."""

    name: str
    params: dict[str, Any]
    outputs: tuple[float | None, ...]

    def build(self):
        return methods.get_explainer(self.name, **self.params)


@dataclass(frozen=True)
class Plan:
    """What the stages need from the config, in a picklable form."""

    model: str
    specs: tuple[MethodSpec, ...]
    image_size: int
    resize: str
    target: str
    use_gpu: bool
    actor_cpus: float
    torch_threads: int = 1
    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    metrics: tuple[str, ...] = ()
    metric_options: dict[str, Any] = field(default_factory=dict)
    storage: StorageOptions = field(default_factory=StorageOptions)
    # The names of the classes from the ``classes`` file (a synset mapping's descriptions);
    # None: the model's own names, where it has them, name the rows' classes.
    class_names: tuple[str, ...] | None = None

    def expected_keys(self, image_id: str) -> list[tuple[str, str, float | None]]:
        return [(image_id, spec.name, lam) for spec in self.specs for lam in spec.outputs]


def load_job_model(plan: Plan, device: str):
    """The job's model on ``device``, prepared for inference as the plan asks (precision,
    channels_last, compile); weights in object storage are read with the job's storage options."""
    from legx.methods.models.inference import prepare_model
    from legx.methods.models.loading import load_model

    spec = plan.model
    weights = spec.partition("@")[2] if spec.startswith("torchvision:") else spec
    options = None
    if weights.startswith("s3://"):
        endpoint = plan.storage.resolved_endpoint()
        options = {"anon": plan.storage.anonymous}
        if endpoint:
            options["endpoint_url"] = endpoint
        if plan.storage.region:
            options["client_kwargs"] = {"region_name": plan.storage.region}
    elif weights.startswith("gs://") and plan.storage.anonymous:
        options = {"token": "anon"}
    model = load_model(spec, device=device, storage_options=options)
    return prepare_model(model, plan.precision, plan.channels_last, plan.compile)


def method_spec(name: str, params: dict[str, Any]) -> MethodSpec:
    """The spec of a method, with its full parameter set as the explainer reports it."""
    explainer = methods.get_explainer(name, **params)
    return MethodSpec(name, json.loads(json.dumps(explainer.params())), tuple(explainer.outputs()))


def make_plan(config: JobConfig, use_gpu: bool, class_names: list[str] | None = None,
              actor_cpus: float | None = None) -> Plan:
    """The plan of ``config``; ``class_names``: the classes' names where known; ``actor_cpus``:
    the CPUs each model actor holds, as chosen for the cluster when the config leaves them unset
    (``legx.pipeline.engine.resources``)."""
    actor_cpus = config.actor_cpus if actor_cpus is None else actor_cpus
    if actor_cpus is None:
        raise ValueError("actor_cpus: unset in the config and not chosen for the cluster")
    specs = tuple(method_spec(name, config.method_params(name)) for name in config.methods)
    return Plan(
        model=config.model,
        specs=specs,
        image_size=config.image_size,
        resize=config.resize,
        target=config.target,
        use_gpu=use_gpu,
        actor_cpus=actor_cpus,
        torch_threads=config.actor_threads or max(1, int(actor_cpus)),
        precision=config.precision,
        channels_last=config.channels_last,
        compile=config.compile,
        metrics=tuple(config.metrics),
        metric_options=dict(config.metric_options),
        storage=config.storage,
        class_names=tuple(class_names) if class_names else None,
    )

