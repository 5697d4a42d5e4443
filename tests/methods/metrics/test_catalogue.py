"""The torch-free catalogue (methods.metric_names, methods.precisions) against the torch modules
whose parameters it names, so that config validation accepts exactly what they take."""

from __future__ import annotations

import inspect

from legx.methods.models.inference import AUTOCAST_DTYPES
from legx.methods.metrics.catalogue import METRIC_OPTIONS, SENSITIVITY_ALPHAS
from legx.methods.metrics.compute import compute_metrics, sensitivity_curve
from legx.methods.models.precisions import PRECISIONS

DATA_PARAMETERS = ("model", "images", "maps", "targets", "names", "masks", "boxes")


def test_metric_options_are_the_options_of_compute_metrics():
    options = [name for name in inspect.signature(compute_metrics).parameters if name not in DATA_PARAMETERS]
    assert list(METRIC_OPTIONS) == options


def test_sensitivity_curve_defaults_to_the_catalogue_alphas():
    assert inspect.signature(sensitivity_curve).parameters["alphas"].default is SENSITIVITY_ALPHAS


def test_every_precision_has_an_autocast_dtype():
    assert tuple(AUTOCAST_DTYPES) == PRECISIONS
