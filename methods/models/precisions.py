"""The forward precisions ``legx.methods.models.inference.prepare_model`` offers, by name.

Kept apart from ``legx.methods.models.inference`` (torch) so that config validation checks a job's
``precision`` without loading torch.
"""

from __future__ import annotations

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
