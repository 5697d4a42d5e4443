"""Modules imported when first used rather than when the module naming them is imported.

Building an explainer (its constructor validates the hyperparameters) needs no torch, and the
job's config validation and the analysis commands build explainers or import their modules in
processes that should not pay torch's import (seconds) or its memory. So the modules of
``methods`` take ``torch`` from here: a stand-in that imports torch on its first attribute
access; ``no_grad`` and ``inference_mode`` decorate a function without touching torch until
the function runs. Submodules (``torch.nn.functional``) and captum are imported inside the
functions that use them.

The stand-in is never placed in ``sys.modules``. A lazy module that is (``lazy_loader.load``,
``importlib.util.LazyLoader``) is loaded by any library that probes ``sys.modules`` for torch:
importing ``scipy.stats`` does (its array-API helpers ask whether an array is a torch tensor),
so every process that imports scipy.stats after such a stand-in loads torch anyway.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

Function = TypeVar("Function", bound=Callable[..., Any])


class LazyModule:
    """The module ``name``, imported on the first attribute access."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        # Only attributes the stand-in lacks come here: all but _name and, once loaded, _module.
        module: ModuleType | None = self.__dict__.get("_module")
        if module is None:
            module = self.__dict__["_module"] = importlib.import_module(self._name)
        return getattr(module, attribute)

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return LazyModule, (self._name,)

    def __repr__(self) -> str:
        state = "imported" if "_module" in self.__dict__ else "not yet imported"
        return f"<lazy module {self._name!r}, {state}>"


torch = LazyModule("torch")


def _run_under(context: str) -> Callable[[Function], Function]:
    """A decorator running its function inside ``torch.<context>()``, looked up per call."""

    def decorate(function: Function) -> Function:
        @functools.wraps(function)
        def run(*args, **kwargs):
            with getattr(torch, context)():
                return function(*args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate


no_grad = _run_under("no_grad")
inference_mode = _run_under("inference_mode")
