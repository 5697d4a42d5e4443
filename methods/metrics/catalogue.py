"""The metrics' catalogue: their names, which need no model, and which direction is better.

Kept apart from ``legx.methods.metrics.compute`` (torch) so that the output schema, whose columns these names
are, can be built in processes that never load torch (the pipeline's decode, solve and write
workers), and so that config validation and the report need no torch either.
"""

from __future__ import annotations

import numpy as np

BACKGROUNDS: tuple[str, ...] = ("mean", "black", "white", "noise", "dist50", "dist100")
METRIC_NAMES: tuple[str, ...] = tuple(f"key_size_{name}" for name in BACKGROUNDS) + (
    "deletion_auc",
    "insertion_auc",
    "gini",
    "pointing_game",
    "mask_energy",
)
# Metrics computed from the map and the ground truth alone: no model forwards.
MODEL_FREE_METRICS: frozenset[str] = frozenset({"gini", "pointing_game", "mask_energy"})
# Metrics scored against a ground-truth region; their chance level is the region's share of the
# image (``legx.methods.metrics.localisation.region_share``).
LOCALISATION_METRICS: frozenset[str] = frozenset({"pointing_game", "mask_energy"})
# Direction of each metric: True where a higher value means a better map.
HIGHER_IS_BETTER: dict[str, bool] = {
    **{f"key_size_{name}": False for name in BACKGROUNDS},
    "deletion_auc": False,
    "insertion_auc": True,
    "gini": True,
    "pointing_game": True,
    "mask_energy": True,
}
# The options of ``legx.methods.metrics.compute.compute_metrics`` a job's ``metric_options`` may set (its
# other parameters are the data).
METRIC_OPTIONS: tuple[str, ...] = (
    "batch_size",
    "seed",
    "auc_steps",
    "insertion_baseline",
    "blur_sigma",
    "key_size_coarse_steps",
    "pointing_tolerance",
)
# The fractions alpha of the image's pixels that ``legx.methods.metrics.compute.sensitivity_curve`` perturbs.
SENSITIVITY_ALPHAS: np.ndarray = np.linspace(0.0, 0.4, 21)
