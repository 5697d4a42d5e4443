"""The torch-free half of the sampled-explainer contract (``legx.methods.base`` states the contract).

A sampled explainer's finish step runs in CPU worker processes that never import torch, so what
it exchanges is defined here, in numpy alone:

    SampledStatistics   what ``sample`` returns: picklable, one entry per image
    FinishedMap         one map of one image that the finish step made, or why there is none
    load_finisher       the finish step named by a sampled explainer's ``finisher`` path
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class SampledStatistics(Protocol):
    """What a sampled explainer's ``sample`` returns for N images (numpy, picklable).

    ``stats[i]`` is image i's statistics alone (the job ships each image's on its own row);
    ``forwards_per_image()`` the model forwards each image cost, (N,) int64; ``capped`` (N,)
    bool says which images stopped at a budget's cap before its target (None for a budget
    without a target); ``discarded_forwards`` the call's forwards that feed no image's map
    (speculative work in a batch's free rows; the job counts them once, in its totals).
    """

    capped: np.ndarray | None
    discarded_forwards: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> SampledStatistics: ...

    def forwards_per_image(self) -> np.ndarray: ...


@dataclass(frozen=True)
class FinishedMap:
    """One output of a finish step for one image: a map, or the error that stands in its place.

    output: which of the explainer's ``outputs()`` it is (LEG-TV: its lambda; None for a method
    with one output; the output table stores it in the ``lam`` column); saliency: float32 (h, w)
    or None where the step failed for this output, with ``error`` saying why; seconds: the time
    the step spent on this map; saliency_se: the standard error of each cell, (h, w), where the
    method estimates it; reliability: the map's predicted seed-to-seed Spearman, where the method
    estimates it (NaN where it cannot for this image); fallbacks: the programs behind this map
    (its own and its reliability's) that a fast solver handed to the exact one (LEG-TV's
    BATCHED solver; 0 for a method without programs).
    """

    output: float | None
    saliency: np.ndarray | None
    seconds: float
    error: str | None = None
    saliency_se: np.ndarray | None = None
    reliability: float | None = None
    fallbacks: int = 0

    def __post_init__(self) -> None:
        if (self.saliency is None) == (self.error is None):
            raise ValueError("a finished map has either a saliency map or an error, not both or neither")


Finisher = Callable[[Any, dict], list[list[FinishedMap]]]


def load_finisher(path: str) -> Finisher:
    """The finish step at ``path``, "module:function": ``finish(statistics, params)`` returns one
    list of ``FinishedMap`` per image, one per output. Raises ValueError for a malformed path."""
    module_name, _, function_name = path.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"a finisher is named 'module:function', got {path!r}")
    return getattr(importlib.import_module(module_name), function_name)

