"""legx methods: pure saliency explainers and metrics (torch + numpy + cvxpy; no Ray, no I/O).

``get_explainer(name, **params)`` builds any registered method; ``available()`` lists them.
Modules, torch among them, are imported on first use, so that a process that only needs
the torch-free parts (the pipeline's decode and solve workers) never loads torch.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from legx.methods.base import Explainer

_LAZY = {
    "Explainer": "legx.methods.base",
    "SampledExplainer": "legx.methods.base",
    "upsample_maps": "legx.methods.resize",
    "load_model": "legx.methods.models.loading",
}

# name -> "module:Class"; each explainer is one module with one entry point.
_REGISTRY: dict[str, str] = {
    "leg": "legx.methods.leg.explainer:LEG",
    "leg-tv": "legx.methods.leg.tv:LEGTV",
    "meaningful-perturbation": "legx.methods.meaningful_perturbation:MeaningfulPerturbation",
    "cnn-perturbation": "legx.methods.cnn_perturbation:CNNPerturbation",
    "lime": "legx.methods.lime:LIME",
    "kernel-shap": "legx.methods.kernel_shap:KernelSHAP",
    "partition-shap": "legx.methods.partition_shap:PartitionSHAP",
    "grad-cam": "legx.methods.grad_cam:GradCAM",
    "guided-grad-cam": "legx.methods.grad_cam:GuidedGradCAM",
    "expected-gradients": "legx.methods.expected_gradients:ExpectedGradients",
}


def available() -> list[str]:
    """Names accepted by ``get_explainer``."""
    return sorted(_REGISTRY)


def get_explainer(name: str, **params) -> Explainer:
    """Build the explainer registered as ``name`` with constructor ``params``.

    Raises ValueError for an unknown name or parameter, listing what is accepted.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available())}")
    module_name, class_name = _REGISTRY[name].split(":")
    explainer_class = getattr(importlib.import_module(module_name), class_name)
    try:
        return explainer_class(**params)
    except TypeError as error:
        accepted = _constructor_parameters(explainer_class)
        raise ValueError(
            f"bad parameters for method {name!r}: {error}; accepted: {', '.join(accepted)}"
        ) from error


def _constructor_parameters(explainer_class: type) -> list[str]:
    """The keyword parameters the constructor accepts, through the ``**params`` a subclass
    passes on to its base class (LEG-TV's sampling parameters are LEG's)."""
    names: list[str] = []
    for klass in explainer_class.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]
        names += [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                  and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'methods' has no attribute {name!r}")


__all__ = ["Explainer", "SampledExplainer", "available", "get_explainer", "load_model", "upsample_maps"]
