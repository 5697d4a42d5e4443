"""The forward precisions ``legx.methods.inference.prepare_model`` offers, by name.

Kept apart from ``legx.methods.inference`` (torch) so that config validation checks a job's
``precision`` without loading torch.
"""

from __future__ import annotations

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
