"""legx: dataset-scale saliency for image classifiers.

In a notebook::

    import legx
    maps = legx.explain("demo", images, method="leg-tv", n_samples=200, grid_size=8, lambdas=[0.1])
    scores = legx.evaluate("demo", images, maps[:, 0], metrics=["deletion_auc", "gini"])

In a Ray program, ``legx.explain_dataset(dataset, config)`` maps a ``ray.data.Dataset`` of images
to a Dataset of output rows; ``legx.run(config)`` runs the whole job, as ``legx run`` does.

``legx.methods`` holds the explainers and metrics (torch and numpy, no Ray); ``legx.pipeline``
the Ray Data job, its sources, sinks, configuration and command line. Names here are imported
on first use, so ``import legx`` loads neither torch nor Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "explain": "legx.api",
    "evaluate": "legx.api",
    "explain_dataset": "legx.api",
    "run": "legx.api",
    "JobConfig": "legx.pipeline.engine.config",
    "ConfigError": "legx.pipeline.engine.config",
    "load_model": "legx.methods.models.loading",
    "get_explainer": "legx.methods",
    "available": "legx.methods",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'legx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["ConfigError", "JobConfig", "available", "evaluate", "explain", "explain_dataset",
           "get_explainer", "load_model", "run"]
