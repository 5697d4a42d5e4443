"""The explainer contract shared by every method, and the few tensor helpers they all need.

Every explainer takes its hyperparameters in the constructor and its data in the call, and
declares its shape by its base class (never by its name); the job runs any method through this
contract alone.

Direct explainers (``Explainer``): ``explain(model, images, targets=None) -> maps``.

* ``model``: a torch module mapping a float batch (N, 3, H, W) in [0, 1] to logits (N, K)
  (normalisation inside the module, as ``legx.methods.load_model`` builds it). The explainer runs
  on the model's device, so moving the model to CUDA is all it takes to use a GPU.
* ``images``: float tensor (N, 3, H, W) with values in [0, 1].
* ``targets``: class indices (N,) or ``None`` for the clean top-1 class of each image.

It returns a float32 numpy array (N, h, w), or (N, L, h, w) for a method with L outputs per
image (``outputs()``: LEG-TV's lambdas). ``params()`` gives the constructor's parameters,
JSON-serialisable, from which the constructor builds the same explainer again.

Sampled explainers (``SampledExplainer``) split the work in two, so that the model's device
runs only the forwards and CPU workers without torch do the rest:

* ``sample(model, images, targets) -> statistics``: the forwards, batched, on the model's
  device; the statistics are numpy and picklable, one entry per image
  (``legx.methods.sampled.SampledStatistics``).
* the finish step, named by the class attribute ``finisher`` ("module:function" in a module
  that imports no torch): ``finish(statistics, params) -> [[FinishedMap, ...], ...]``, one
  list per image and one ``legx.methods.sampled.FinishedMap`` per output (a map, or the error that
  stands in its place, with optional standard errors, reliability and time), from the
  statistics and the explainer's ``params()``. ``explainer.finish(statistics)`` runs it in this
  process; ``explain`` gives the same maps.
* ``sampling_params()``: the parameters ``sample`` depends on (by default every parameter
  but the ``finish_params`` the class names); explainers whose ``sampling_key()`` agree draw
  the same statistics, so the job samples once for all of them (LEG and LEG-TV of one budget).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from legx.methods.lazy_imports import no_grad, torch


class Explainer(abc.ABC):
    """Base class of all saliency methods in the registry."""

    name: str = ""

    @abc.abstractmethod
    def explain(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        targets: Sequence[int] | torch.Tensor | None = None,
    ) -> np.ndarray:
        """Saliency maps for ``images`` with respect to ``targets``."""

    def params(self) -> dict:
        """Constructor parameters, JSON-serialisable, as stored in the output's ``params``."""
        return {
            key: (list(value) if isinstance(value, tuple) else value)
            for key, value in vars(self).items()
            if not key.startswith("_")
        }

    def outputs(self) -> list[float | None]:
        """The outputs per image: one map (None) unless the method makes several (LEG-TV: one
        per lambda). Each ``FinishedMap.output`` is one of them; the output table keeps it in its
        ``lam`` column, so that queries of either kind of method read one column."""
        return [None]

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{type(self).__name__}({args})"


class SampledExplainer(Explainer):
    """An explainer in two steps: ``sample`` on the model's device, then the torch-free finish
    step that ``finisher`` names (module docstring)."""

    finisher: str = ""
    finish_params: tuple[str, ...] = ()

    @abc.abstractmethod
    def sample(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        targets: Sequence[int] | torch.Tensor | None = None,
    ) -> Any:
        """The statistics of ``images`` from which the finish step makes their maps."""

    def finish(self, statistics: Any) -> list:
        """The finish step on ``statistics`` with this explainer's parameters, in this process."""
        from legx.methods.sampled import load_finisher

        return load_finisher(self.finisher)(statistics, json.loads(json.dumps(self.params())))

    def sampling_params(self) -> dict:
        """The parameters ``sample`` depends on: all but the finish step's own."""
        return {key: value for key, value in self.params().items() if key not in self.finish_params}

    def sampling_key(self) -> str:
        """Equal for explainers whose ``sample`` draws the same statistics: the same sampling
        routine with the same sampling parameters."""
        sample = type(self).sample
        return json.dumps(
            {"sample": f"{sample.__module__}.{sample.__qualname__}", "params": self.sampling_params()},
            sort_keys=True,
        )


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for parameterless models)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def check_images(images: torch.Tensor) -> torch.Tensor:
    """Validate an image batch: float tensor (N, 3, H, W) in [0, 1]. Raises ValueError."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(f"images must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]")
    return images


def batches(total: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``batch_size`` covering range(total)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, total, batch_size):
        yield slice(start, min(start + batch_size, total))


@no_grad
def predict_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits of ``images`` in forward batches of ``batch_size``, on the model's device."""
    device = model_device(model)
    outputs = [model(images[part].to(device)) for part in batches(images.shape[0], batch_size)]
    return torch.cat(outputs).float()


def resolve_targets(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: Sequence[int] | torch.Tensor | None,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The explained class per image and the clean logits.

    ``targets=None`` means the clean top-1 class. Returns (targets (N,) long, logits (N, K)),
    both on the model's device.
    """
    logits = predict_logits(model, images, batch_size)
    if targets is None:
        return logits.argmax(dim=1), logits
    target_tensor = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(-1)
    if target_tensor.shape[0] != images.shape[0]:
        raise ValueError(
            f"got {target_tensor.shape[0]} targets for {images.shape[0]} images"
        )
    n_classes = logits.shape[1]
    if (target_tensor < 0).any() or (target_tensor >= n_classes).any():
        raise ValueError(f"targets must lie in [0, {n_classes - 1}], got {target_tensor.tolist()}")
    return target_tensor, logits


def resolve_preset(
    method: str, presets: dict[str, dict], preset: str, given: dict
) -> dict:
    """The parameters of ``presets[preset]`` with every value in ``given`` that is not None in
    their place: a preset names a documented set of choices, explicit parameters override it.
    Raises ValueError for an unknown preset, listing the known ones."""
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for {method}; known presets: {', '.join(presets)}")
    unknown = set(given) - set(presets[preset])
    if unknown:
        raise ValueError(f"{method}: no preset sets {sorted(unknown)}")
    return {**presets[preset], **{key: value for key, value in given.items() if value is not None}}


def input_normalisation(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and std, (1, 3, 1, 1) each, that ``model`` subtracts and divides by
    inside its forward (the ``mean`` and ``std`` buffers of legx's loaded models: the demo CNN,
    torchvision classifiers). Raises ValueError for a model that declares none."""
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor) and mean.numel() == std.numel() == 3):
        raise ValueError(
            "this option works on the model's normalised input, and the model declares no input"
            " normalisation (3-element 'mean' and 'std' tensors, as legx's loaded models have)"
        )
    return mean.reshape(1, 3, 1, 1).float(), std.reshape(1, 3, 1, 1).float()


def explained_classes(model: torch.nn.Module, images: torch.Tensor,
                      targets: Sequence[int] | torch.Tensor | None, batch_size: int
                      ) -> tuple[torch.device, torch.Tensor]:
    """The start of an ``explain`` call: ``images`` validated (``check_images``), then the
    model's device and the explained class of each image on it (``resolve_targets``: the clean
    top-1 where ``targets`` is None, from forwards of ``batch_size`` images)."""
    check_images(images)
    target_classes, _ = resolve_targets(model, images, targets, batch_size)
    return model_device(model), target_classes
