"""The torch-free catalogue (methods.metrics.catalogue, methods.models.precisions) against the torch modules
whose parameters it names, so that config validation accepts exactly what they take."""

from __future__ import annotations

import inspect

from legx.methods.models.inference import AUTOCAST_DTYPES
from legx.methods.metrics.catalogue import (
    METRIC_OPTIONS,
    METRICS,
    SCALAR_TYPE,
    SENSITIVITY_ALPHAS,
    metric,
    metric_columns,
)
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


def test_every_option_a_metric_reads_is_an_option_of_compute_metrics():
    for record in METRICS:
        assert set(record.options) <= set(METRIC_OPTIONS), record.name


def test_compute_metrics_returns_exactly_the_declared_columns_of_each_metric():
    import numpy as np
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    images = torch.rand(2, 3, 8, 8)
    maps = np.random.default_rng(0).random((2, 8, 8))
    for record in METRICS:
        values = compute_metrics(model, images, maps, [0, 1], [record.name], auc_steps=4, road_steps=3,
                                 key_size_coarse_steps=4)
        assert list(values) == [column.name for column in record.columns]
        for column in record.columns:
            expected = (2,) if column.arrow_type == SCALAR_TYPE else (2, 3)
            assert values[column.name].shape == expected, column.name


def test_the_output_schema_types_every_declared_column():
    from legx.pipeline.engine.schema import output_schema

    schema = output_schema()
    for column in metric_columns():
        assert str(schema.field(column.name).type) == column.arrow_type


def test_an_unknown_metric_is_named_with_the_known_ones():
    import pytest

    with pytest.raises(ValueError, match="unknown metric 'nope'; known: key_size_mean"):
        metric("nope")
