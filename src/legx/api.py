"""The Python API: legx in a notebook, in a Ray program, and as a whole job.

Three ways in, each over the same code the ``legx`` command runs:

* ``explain(model, images, method=..., **params)``: maps of a batch of images in this process
  (any registered method; parameters as in a job config), and ``evaluate`` to score them with the
  job's metrics. Nothing here starts Ray.
* ``explain_dataset(dataset, config)``: a ``ray.data.Dataset`` of images (the columns the job's
  readers produce: ``image_id``, ``source_uri``, ``label``, ``data`` with the encoded image) in,
  a lazy ``ray.data.Dataset`` of output rows (``legx.pipeline.engine.schema.output_schema``) out,
  through the job's own stages (decode, explain on model actors, finish, score). Read and write
  it with Ray Data's own readers and writers.
* ``run(config)``: the whole job, exactly as ``legx run`` does it (resume, manifest, summary).

A ``config`` is a ``JobConfig``, a mapping of its fields (method parameters under the method's
name, as in a config file), or a path to a YAML config; it is checked up front and every problem
is listed in one ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import ray
    import torch

    from legx.pipeline.engine.config import JobConfig
    from legx.pipeline.engine.manifest import JobSummary

# A placeholder input for configs of ``explain_dataset``, whose images come from the dataset.
DATASET_INPUT = "ray-dataset"


def explain(
    model: torch.nn.Module | str,
    images: Any,
    method: str = "leg",
    targets: Sequence[int] | None = None,
    *,
    device: str | None = None,
    **params: Any,
) -> np.ndarray:
    """Saliency maps of ``images`` for ``model`` with one registered method.

    ``model`` is a classifier mapping a float batch (N, 3, H, W) in [0, 1] to logits (input
    normalisation inside it), or a model spec as a job config takes it (``"demo"``,
    ``"torchvision:resnet50"``, a checkpoint path or URI), loaded on ``device`` (default: CUDA
    when available). ``images`` is a float tensor (N, 3, H, W) in [0, 1], a numpy array of
    (N, H, W, 3) or (H, W, 3) pixels (uint8, or float in [0, 1]), or a PIL image or a list of
    them, all of one size. ``targets`` are the explained classes (default: each image's top-1).
    ``params`` are the method's constructor parameters (``legx.methods.get_explainer``).

    Returns float32 maps (N, h, w) at the method's own resolution (LEG's grid, Grad-CAM's
    feature map; ``legx.methods.upsample_maps`` resizes them to the image), or (N, L, h, w)
    for a method with several outputs per image (LEG-TV: one per lambda). Sampled methods (LEG, LEG-TV) run their forwards and their finish
    step here, giving the maps a job gives for the same parameters.

    >>> maps = legx.explain("demo", images, method="leg-tv", n_samples=200, grid_size=8, lambdas=[0.1])
    """
    from legx import methods

    explainer = methods.get_explainer(method, **params)
    network = _model(model, device)
    batch = as_image_batch(images, _device_of(network))
    return explainer.explain(network, batch, None if targets is None else list(targets))


def evaluate(
    model: torch.nn.Module | str,
    images: Any,
    maps: np.ndarray,
    metrics: Sequence[str],
    targets: Sequence[int] | None = None,
    *,
    masks: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    device: str | None = None,
    **options: Any,
) -> dict[str, np.ndarray]:
    """The job's metrics of ``maps`` (N, h, w) for ``images``: {metric name: float64 (N,)}.

    ``metrics`` are names from ``legx.methods.metrics.catalogue`` (as a job config's
    ``metrics`` lists them); ``masks`` (N, H, W) or ``boxes`` (N, 4) give the ground truth of the
    localisation metrics; ``options`` are the job's ``metric_options``. ``targets`` default to
    each image's top-1 class. A metric that does not apply to an image is NaN.
    """
    from legx.methods.base import resolve_targets
    from legx.methods.metrics.compute import compute_metrics

    network = _model(model, device)
    batch = as_image_batch(images, _device_of(network))
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3 or maps.shape[0] != batch.shape[0]:
        raise ValueError(f"maps: expected one (h, w) map per image, shape ({batch.shape[0]}, h, w); got {maps.shape}")
    chosen, _ = resolve_targets(network, batch, None if targets is None else list(targets), options.get("batch_size", 256))
    return compute_metrics(network, batch, maps, chosen, list(metrics), masks=masks, boxes=boxes, **options)


def explain_dataset(dataset: ray.data.Dataset, config: JobConfig | Mapping[str, Any] | str) -> ray.data.Dataset:
    """The job's stages over a Dataset of images: output rows, lazily (nothing runs until the
    returned Dataset is consumed, by ``write_parquet``, ``take`` or ``iter_batches``).

    ``dataset`` has the columns the job's readers produce (``legx.pipeline.engine.sources.SOURCE_SCHEMA``:
    ``image_id`` string, ``source_uri`` string, ``label`` int64 or null, ``data`` the encoded image
    bytes); ``config`` gives the model, methods, metrics and execution settings (its ``input``
    may be left out). Rows come out in the output schema with the config's ``run_id``: one per
    image and method output, status 'ok' with a map or 'error' with the reason. Ray starts (or
    connects to RAY_ADDRESS) when needed.
    """
    from legx.pipeline.engine.run import job_stages

    job_config = _config(config, default_input=DATASET_INPUT)
    return job_stages(dataset, job_config)


def run(config: JobConfig | Mapping[str, Any] | str) -> JobSummary:
    """Run the whole job of ``config`` as ``legx run`` does (resuming its run id when rows of it
    are already written) and return its summary (``JobSummary``: counts, timings, where the
    results and the manifest are)."""
    from legx.pipeline.engine.run import run_job

    return run_job(_config(config))


def as_image_batch(images: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    """``images`` as the float tensor (N, 3, H, W) in [0, 1] that explainers take (see
    ``explain`` for the accepted forms); raises ValueError naming what was expected."""
    from legx.methods.lazy_imports import torch

    if isinstance(images, torch.Tensor):
        batch = images
    else:
        if not isinstance(images, (list, tuple)):
            images = [images] if _is_pil(images) else images
        if isinstance(images, (list, tuple)):
            images = np.stack([np.asarray(image.convert("RGB")) if _is_pil(image) else np.asarray(image)
                               for image in images])
        array = np.asarray(images)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(f"images: expected (N, 3, H, W) tensor or (N, H, W, 3) pixels; got shape {array.shape}")
        if array.dtype == np.uint8:
            array = array.astype(np.float32) / 255.0
        batch = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(0, 3, 1, 2)
    if batch.ndim == 3:
        batch = batch.unsqueeze(0)
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"images: expected a tensor (N, 3, H, W); got shape {tuple(batch.shape)}")
    batch = batch.float()
    if batch.numel() and (float(batch.min()) < 0.0 or float(batch.max()) > 1.0):
        raise ValueError(
            f"images: expected values in [0, 1] (normalisation belongs inside the model); got"
            f" {float(batch.min()):.3g}..{float(batch.max()):.3g}"
        )
    return batch.to(device)


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.")


def _model(model: Any, device: str | None) -> torch.nn.Module:
    from legx.methods.lazy_imports import torch

    if isinstance(model, str):
        from legx.methods.models.loading import load_model

        return load_model(model, device=device)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module or a model spec string, got {type(model).__name__}")
    if device is not None:
        model = model.to(device)
    return model.eval()


def _device_of(model: torch.nn.Module) -> torch.device | str:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else "cpu"


def _config(config: Any, default_input: str | None = None) -> JobConfig:
    from legx.pipeline.engine.config import JobConfig, build_config, load_config

    if isinstance(config, JobConfig):
        return config
    if isinstance(config, str):
        return load_config(config)
    if isinstance(config, Mapping):
        data = dict(config)
        if default_input is not None:
            data.setdefault("input", default_input)
        return build_config(data)
    raise TypeError(f"config: expected a JobConfig, a mapping of its fields or a YAML path, got {type(config).__name__}")
