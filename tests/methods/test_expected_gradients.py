"""Expected Gradients: exact on a linear model, region known answer, completeness, seeds."""

import numpy as np
import pytest
import torch
from saliency_toys import RegionModel, argmax_in_region, mass_in_region, region_images
from torch import nn

from legx.methods import get_explainer
from legx.methods.expected_gradients import ExpectedGradients


def test_linear_model_gets_weight_times_difference_exactly():
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)).eval()
    images = torch.rand(3, 3, 16, 16, generator=generator)
    background = torch.rand(1, 3, 16, 16, generator=generator)
    maps = ExpectedGradients(n_samples=5, background=background, batch_size=4).explain(
        model, images, targets=[2, 2, 2]
    )
    weight = model[1].weight[2].detach().view(3, 16, 16)
    expected = ((images - background) * weight).sum(dim=1)
    np.testing.assert_allclose(maps, expected.numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def case():
    model, images = RegionModel().eval(), region_images(3)
    return model, images, ExpectedGradients(n_samples=16, batch_size=20).explain(model, images)


def test_map_concentrates_on_the_region_the_model_reads(case):
    _, _, maps = case
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert argmax_in_region(maps).all()
    assert (mass_in_region(maps) > 0.95).all()


def test_attributions_add_up_to_the_logit_change():
    model, images = RegionModel().eval(), region_images(2, seed=3)
    maps = ExpectedGradients(n_samples=2000, background="black", batch_size=500).explain(
        model, images, targets=[0, 0]
    )
    with torch.no_grad():
        change = model(images)[:, 0] - model(torch.zeros_like(images))[:, 0]
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), change.numpy(), rtol=0.03)


def test_same_seed_same_map_other_seed_other_map(case):
    model, images, maps = case
    np.testing.assert_array_equal(
        ExpectedGradients(n_samples=16, batch_size=20).explain(model, images[:1])[0], maps[0]
    )
    other = ExpectedGradients(n_samples=16, batch_size=20, seed=1).explain(model, images[:1])
    assert not np.allclose(other[0], maps[0])


def test_batch_equals_one_image_at_a_time(case):
    model, images, maps = case
    for batch_size in (5, 64):
        single = ExpectedGradients(n_samples=16, batch_size=batch_size).explain(model, images[2:])
        np.testing.assert_allclose(single[0], maps[2], rtol=1e-5, atol=1e-7)


def test_smoothing_noise_and_named_backgrounds():
    model, images = RegionModel().eval(), region_images(1)
    for background in ("gray", "blur"):
        maps = ExpectedGradients(n_samples=8, background=background, noise_level=0.05).explain(
            model, images
        )
        assert np.isfinite(maps).all() and argmax_in_region(maps).all()
    assert get_explainer("expected-gradients").params()["background"] == "uniform"
    explainer = ExpectedGradients(background=torch.rand(4, 3, 8, 8))
    assert explainer.params()["background"] == "tensor of 4 images"
    assert ExpectedGradients(background=torch.rand(4, 3, 8, 8)).explain(model, images).shape == (
        1, 32, 32
    )
    with pytest.raises(ValueError, match="background"):
        ExpectedGradients(background="noise")
