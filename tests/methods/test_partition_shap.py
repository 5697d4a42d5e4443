"""Partition SHAP (shap library): region known answer and exact efficiency of Owen values."""

import numpy as np
import pytest
import torch
from saliency_toys import RegionModel, argmax_in_region, mass_in_region, region_images

from methods import get_explainer
from methods.partition_shap import PartitionSHAP
from methods.superpixels import baseline_images

SETTINGS = dict(max_evals=300, batch_size=50)


@pytest.fixture(scope="module")
def case():
    model, images = RegionModel().eval(), region_images(3)
    return model, images, PartitionSHAP(**SETTINGS).explain(model, images)


def test_map_concentrates_on_the_region_the_model_reads(case):
    _, _, maps = case
    assert argmax_in_region(maps).all()
    assert (mass_in_region(maps) > 0.7).all()


def test_owen_values_add_up_exactly_to_the_score_change(case):
    model, images, maps = case
    with torch.no_grad():
        clean = torch.softmax(model(images), 1)[:, 0]
        removed = torch.softmax(model(baseline_images(images, "blur")), 1)[:, 0]
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), (clean - removed).numpy(), atol=1e-4)


def test_shape_dtype_finite_and_registry(case):
    _, _, maps = case
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert isinstance(get_explainer("partition-shap", max_evals=50), PartitionSHAP)


def test_deterministic_and_batch_equals_one_image_at_a_time(case):
    model, images, maps = case
    single = PartitionSHAP(**SETTINGS).explain(model, images[1:2])
    np.testing.assert_allclose(single[0], maps[1], atol=1e-6)


def test_explicit_target_explains_that_class(case):
    model, images, maps = case
    other = PartitionSHAP(**SETTINGS).explain(model, images[:1], targets=[1])
    np.testing.assert_allclose(other[0], -maps[0], atol=1e-5)
