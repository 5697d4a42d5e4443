"""LIME: the map concentrates on the only region the model reads; seeded, batch-invariant."""

import numpy as np
import pytest
import torch
from saliency_toys import RegionModel, argmax_in_region, mass_in_region, region_images

from methods import get_explainer
from methods.lime import LIME

SETTINGS = dict(n_samples=120, n_segments=30, batch_size=32)


@pytest.fixture(scope="module")
def case():
    model, images = RegionModel().eval(), region_images(3)
    return model, images, LIME(**SETTINGS).explain(model, images)


def test_map_concentrates_on_the_region_the_model_reads(case):
    _, _, maps = case
    assert argmax_in_region(maps).all()
    assert (mass_in_region(maps) > 0.7).all()


def test_shape_dtype_finite_and_registry(case):
    _, images, maps = case
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert isinstance(get_explainer("lime", n_samples=10), LIME)


def test_same_seed_same_map_other_seed_other_map(case):
    model, images, maps = case
    again = LIME(**SETTINGS).explain(model, images[:1])
    other = LIME(**SETTINGS, seed=1).explain(model, images[:1])
    np.testing.assert_array_equal(again[0], maps[0])
    assert not np.allclose(other[0], maps[0])


def test_batch_equals_one_image_at_a_time(case):
    model, images, maps = case
    single = LIME(**SETTINGS).explain(model, images[2:3], targets=torch.tensor([0]))
    np.testing.assert_allclose(single[0], maps[2], atol=1e-6)


def test_unknown_baseline_is_rejected():
    with pytest.raises(ValueError, match="baseline"):
        LIME(baseline="noise")
