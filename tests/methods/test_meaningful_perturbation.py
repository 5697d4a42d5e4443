"""Meaningful Perturbation: masks in [0, 1] at the mask's side, seeds, presets, the seed's choices.
The region known answer and batch invariance: ``test_region_baselines``."""

import numpy as np
import pytest
import torch
from saliency_toys import REGION_SETTINGS, RegionModel, argmax_in_region, region_case, region_images

from legx.methods import get_explainer
from legx.methods.meaningful_perturbation import MeaningfulPerturbation, total_variation

SETTINGS = REGION_SETTINGS["meaningful-perturbation"]


def test_maps_lie_in_0_1_and_take_the_mask_side():
    _, _, maps = region_case("meaningful-perturbation")
    assert maps.min() >= 0 and maps.max() <= 1
    tiny = MeaningfulPerturbation(n_iterations=2).explain(RegionModel(), region_images(1))
    assert tiny.shape == (1, 28, 28)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    small = MeaningfulPerturbation(n_iterations=2).explain(linear, torch.rand(1, 3, 8, 8))
    assert small.shape == (1, 8, 8)


def test_same_seed_same_map_other_seed_other_map():
    model, images, maps = region_case("meaningful-perturbation")
    again = MeaningfulPerturbation(**SETTINGS).explain(model, images[:1])
    other = MeaningfulPerturbation(**SETTINGS, seed=1).explain(model, images[:1])
    np.testing.assert_allclose(again[0], maps[0], atol=1e-5)
    assert np.abs(other[0] - maps[0]).max() > 1e-3


def test_total_variation_of_a_step():
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 2:] = 1.0
    # one jump per row across 4 rows, over 4 x 3 horizontal differences; none vertically
    assert float(total_variation(mask, beta=3.0)[0]) == pytest.approx(4 / 12)


class Normalised(torch.nn.Module):
    """``model`` with the per-channel ``mean`` and ``std`` buffers legx's loaded models declare,
    but reading the pixels unchanged, so that only the declaration (what ``noise_space:
    normalised`` scales by) differs from the bare model."""

    def __init__(self, model: torch.nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.full((1, 3, 1, 1), mean))
        self.register_buffer("std", torch.full((1, 3, 1, 1), std))

    def forward(self, images):
        return self.model(images)


def test_seed_preset_sets_the_seeds_choices_and_explicit_parameters_override_it():
    legx = MeaningfulPerturbation().params()
    assert (legx["preset"], legx["n_iterations"], legx["mask_size"], legx["noise_level"]) == ("legx", 300, 28, 0.05)
    assert (legx["perturbation"], legx["noise_space"], legx["align_corners"]) == ("blur", "pixels", False)
    seed = get_explainer("meaningful-perturbation", preset="seed")
    assert (seed.n_iterations, seed.perturbation, seed.noise_level, seed.noise_space) == (500, "median", 0.2, "normalised")
    assert seed.align_corners and seed.mask_side(224, 224) == 28 and seed.mask_side(64, 64) == 8
    assert MeaningfulPerturbation().mask_side(64, 64) == 28
    assert get_explainer("meaningful-perturbation", preset="seed", n_iterations=20).n_iterations == 20
    with pytest.raises(ValueError, match="unknown preset 'paper'.*known presets: legx, seed"):
        get_explainer("meaningful-perturbation", preset="paper")


def test_median_perturbation_is_the_median_filter_of_the_seed():
    from scipy.ndimage import median_filter

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    # The seed's 11 px kernel at 224 px scales to 3 px at 64 px; borders replicated as OpenCV.
    expected = median_filter(images.numpy(), size=(1, 1, 3, 3), mode="nearest")
    explainer = MeaningfulPerturbation(preset="seed")
    np.testing.assert_allclose(explainer.perturbation_image(images).numpy(), expected, rtol=0, atol=0)
    big = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    expected = median_filter(big.numpy(), size=(1, 1, 11, 11), mode="nearest")
    np.testing.assert_allclose(explainer.perturbation_image(big).numpy(), expected, rtol=0, atol=0)


def test_noise_on_the_normalised_input_is_scaled_by_the_models_std():
    """With the mask held at 1 (learning rate 0) the perturbed input is x + noise: its spread is
    noise_level on [0, 1], or noise_level times the model's std on the normalised scale."""
    images = torch.full((1, 3, 32, 32), 0.5)
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return x.flatten(1)[:, :2]

    common = dict(n_iterations=3, learning_rate=0.0, noise_level=0.2, batch_size=1)
    MeaningfulPerturbation(noise_space="normalised", **common).explain(Normalised(Recorder(), 0.5, 0.25), images, [0])
    assert abs(float(torch.stack(seen[1:]).std()) - 0.05) < 0.005
    seen.clear()
    MeaningfulPerturbation(noise_space="pixels", **common).explain(Recorder(), images, [0])
    assert abs(float(torch.stack(seen[1:]).std()) - 0.2) < 0.02
    with pytest.raises(ValueError, match="declares no input normalisation"):
        MeaningfulPerturbation(noise_space="normalised", **common).explain(Recorder(), images, [0])


def test_seed_preset_finds_the_region_too():
    model, images = Normalised(RegionModel(), 0.5, 0.25).eval(), region_images(2)
    maps = MeaningfulPerturbation(preset="seed", mask_cell_pixels=2, n_iterations=60, batch_size=2).explain(model, images)
    assert argmax_in_region(maps).all()
