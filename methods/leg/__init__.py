"""LEG and LEG-TV (Luo, Barut, Jin, "Explaining the black-box smoothly: a counterfactual
approach", ICCV 2021), and everything they share.

``explainer`` holds ``LEG`` (the sampler and the closed-form map ``Sigma^{-1} g_hat``), ``tv``
holds ``LEGTV`` (the total-variation programs over the same statistics); ``perturbation``
draws the grid noise and applies it, ``adaptive`` runs budgets in rounds until a map is
reliable, ``moments`` and ``uncertainty`` give standard errors and the reliability,
``solvers`` the linear programs, and ``finish`` turns the sampled statistics into maps on
CPU workers that never load torch. The classes are imported on first use so that
``legx.methods.leg.finish`` and ``legx.methods.leg.solvers`` stay torch-free.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"LEG": "legx.methods.leg.explainer", "LEGTV": "legx.methods.leg.tv"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'legx.methods.leg' has no attribute {name!r}")


__all__ = ["LEG", "LEGTV"]
