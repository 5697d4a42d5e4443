"""Models: loading a classifier from a spec (``loading``), the bundled demo CNN (``demo``), its
declared input size (``input_size``), and batched inference at a chosen precision
(``inference``, ``precisions``).

``load_model`` is imported on first use, so that ``legx.methods.models.precisions`` stays
torch-free for config validation.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name == "load_model":
        return importlib.import_module("legx.methods.models.loading").load_model
    raise AttributeError(f"module 'legx.methods.models' has no attribute {name!r}")


__all__ = ["load_model"]
