"""Meaningful Perturbation: the deletion mask lands on the region the model reads."""

import numpy as np
import pytest
import torch
from saliency_toys import RegionModel, argmax_in_region, mass_in_region, region_images

from methods import get_explainer
from methods.meaningful_perturbation import MeaningfulPerturbation, total_variation

SETTINGS = dict(mask_size=16, n_iterations=60, batch_size=2)


@pytest.fixture(scope="module")
def case():
    model, images = RegionModel().eval(), region_images(3)
    return model, images, MeaningfulPerturbation(**SETTINGS).explain(model, images)


def test_deletion_mask_covers_the_region_the_model_reads(case):
    _, _, maps = case
    assert argmax_in_region(maps).all()
    assert (mass_in_region(maps) > 0.8).all()


def test_shape_range_and_registry(case):
    _, _, maps = case
    assert maps.shape == (3, 16, 16) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert isinstance(get_explainer("meaningful-perturbation"), MeaningfulPerturbation)
    tiny = MeaningfulPerturbation(n_iterations=2).explain(RegionModel(), region_images(1))
    assert tiny.shape == (1, 28, 28)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    small = MeaningfulPerturbation(n_iterations=2).explain(linear, torch.rand(1, 3, 8, 8))
    assert small.shape == (1, 8, 8)


def test_same_seed_same_map_other_seed_other_map(case):
    model, images, maps = case
    again = MeaningfulPerturbation(**SETTINGS).explain(model, images[:1])
    other = MeaningfulPerturbation(**SETTINGS, seed=1).explain(model, images[:1])
    np.testing.assert_allclose(again[0], maps[0], atol=1e-5)
    assert np.abs(other[0] - maps[0]).max() > 1e-3


def test_batch_equals_one_image_at_a_time(case):
    model, images, maps = case
    single = MeaningfulPerturbation(**SETTINGS).explain(model, images[2:3])
    np.testing.assert_allclose(single[0], maps[2], atol=1e-5)


def test_total_variation_of_a_step():
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 2:] = 1.0
    # one jump per row across 4 rows, over 4 x 3 horizontal differences; none vertically
    assert float(total_variation(mask, beta=3.0)[0]) == pytest.approx(4 / 12)
