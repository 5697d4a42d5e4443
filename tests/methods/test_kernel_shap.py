"""Kernel SHAP: region known answer, efficiency (values add up to f(x) - f(baseline))."""

import numpy as np
import pytest
import torch
from saliency_toys import RegionModel, argmax_in_region, mass_in_region, region_images

from methods import get_explainer
from methods.kernel_shap import KernelSHAP
from methods.superpixels import baseline_images, slic_segments

SETTINGS = dict(n_samples=120, n_segments=30, batch_size=32)


@pytest.fixture(scope="module")
def case():
    model, images = RegionModel().eval(), region_images(3)
    return model, images, KernelSHAP(**SETTINGS).explain(model, images)


def test_map_concentrates_on_the_region_the_model_reads(case):
    _, _, maps = case
    assert argmax_in_region(maps).all()
    assert (mass_in_region(maps) > 0.7).all()


def test_values_add_up_to_the_score_change(case):
    model, images, maps = case
    with torch.no_grad():
        clean = torch.softmax(model(images), 1)[:, 0]
        removed = torch.softmax(model(baseline_images(images, "gray")), 1)[:, 0]
    for index in range(len(images)):
        segments = slic_segments(images[index], 30)
        per_segment = [maps[index][segments == label][0] for label in np.unique(segments)]
        change = float(clean[index] - removed[index])
        assert sum(per_segment) == pytest.approx(change, abs=0.1 * abs(change))


def test_shape_dtype_finite_and_registry(case):
    _, _, maps = case
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert isinstance(get_explainer("kernel-shap"), KernelSHAP)


def test_same_seed_same_map_other_seed_other_map(case):
    model, images, maps = case
    again = KernelSHAP(**SETTINGS).explain(model, images[:1])
    other = KernelSHAP(**SETTINGS, seed=1).explain(model, images[:1])
    np.testing.assert_array_equal(again[0], maps[0])
    assert not np.allclose(other[0], maps[0])


def test_batch_equals_one_image_at_a_time(case):
    model, images, maps = case
    single = KernelSHAP(**SETTINGS).explain(model, images[1:2])
    np.testing.assert_allclose(single[0], maps[1], atol=1e-6)
