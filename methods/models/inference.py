"""Faster forwards for perturbation methods: reduced precision, channels_last, torch.compile.

    model = prepare_model(load_model("demo"), precision="bf16", channels_last=True)

Perturbation explainers (LEG, LEG-TV, LIME, SHAP) spend nearly all their time in forward passes,
so the forward is where the speed is. ``prepare_model`` returns a module that behaves as the
given one (same outputs up to rounding, float32 logits, attribute and submodule paths such as
``features.11`` still resolve) and runs the forward:

  precision       'fp32' (default) | 'bf16' | 'fp16': torch.autocast on the input's device; the
                  logits come back as float32 so that softmax and score differences are taken in
                  full precision. Rounding of the logits (bf16 keeps 8 bits of mantissa) is noise
                  on every perturbed score; LEG averages it out over its samples, but measure
                  the map error before relying on it (``scripts/bench.py --precision`` prints it).
  channels_last   NHWC memory layout for the weights and the input, which oneDNN (CPU) and cuDNN
                  (tensor cores) prefer for convolutions.
  compile         torch.compile (inductor). The first forward of each new batch shape compiles
                  (seconds to minutes); worth it for long jobs with a fixed batch size.

The wrapper is written here because torch has the parts but no one switch that keeps the
model's interface (attribute paths, float32 outputs) for the explainers that call it.
"""

from __future__ import annotations

import torch
from torch import nn

from legx.methods.models.precisions import PRECISIONS

# The autocast dtype of each of PRECISIONS (None: no autocast).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class InferenceModel(nn.Module):
    """``model`` with its forward run under autocast and/or in channels_last layout; float32
    logits out. Attributes the wrapper lacks (``model_id``, ``class_names``, ``features``, ...)
    are looked up on the wrapped model."""

    def __init__(self, model: nn.Module, precision: str = "fp32", channels_last: bool = False) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.precision = precision
        self.channels_last = bool(channels_last)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        dtype = AUTOCAST_DTYPES[self.precision]
        with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
            logits = self.model(images)
        return logits.float()


def input_memory_format(model: nn.Module) -> torch.memory_format:
    """The layout ``model`` converts its input to: building a batch in it saves that copy."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd module wraps the original
    if isinstance(model, InferenceModel) and model.channels_last:
        return torch.channels_last
    return torch.contiguous_format


def prepare_model(
    model: nn.Module, precision: str = "fp32", channels_last: bool = False, compile: bool = False
) -> nn.Module:
    """``model`` set up for fast inference (see the module docstring); the model itself when
    every option is off. The model must already be on its device and in eval mode."""
    prepared: nn.Module = model
    if precision != "fp32" or channels_last:
        prepared = InferenceModel(model, precision, channels_last)
    if compile:
        prepared = torch.compile(prepared, dynamic=False)
    return prepared
