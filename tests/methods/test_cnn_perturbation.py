"""CNN perturbation: the learned generator changes the textured square the model reads."""

import numpy as np
import pytest
import torch
from saliency_toys import TEXTURE_SQUARE, TextureModel, mass_in_region, region_mask, texture_images

from legx.methods import get_explainer
from legx.methods.cnn_perturbation import CNNPerturbation
from legx.methods.models.loading import NormalizedClassifier

SETTINGS = dict(n_iterations=30, batch_size=2)


@pytest.fixture(scope="module")
def case():
    model, images = TextureModel().eval(), texture_images(3)
    return model, images, CNNPerturbation(**SETTINGS).explain(model, images)


def test_map_marks_the_texture_the_model_reads(case):
    _, _, maps = case
    assert (mass_in_region(maps, TEXTURE_SQUARE) > 0.6).all()
    inside = region_mask(TEXTURE_SQUARE)
    assert (maps[:, inside].mean(axis=1) > 10 * maps[:, ~inside].mean(axis=1)).all()


def test_generator_lowers_the_target_score(case):
    model, images, _ = case
    explainer = CNNPerturbation(**SETTINGS)
    with torch.enable_grad():
        _, perturbed = explainer._optimise(model, images, torch.zeros(3, dtype=torch.long))
    with torch.no_grad():
        before = torch.softmax(model(images), 1)[:, 0]
        after = torch.softmax(model(perturbed), 1)[:, 0]
    assert (after < before - 0.1).all()
    assert perturbed.min() >= images.min() - 1e-6 and perturbed.max() <= images.max() + 1e-6


def test_shape_edges_and_registry(case):
    _, _, maps = case
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0
    # the border (10% of each side, widened by the dilation) carries nothing
    assert maps[:, 0, :].max() == 0 and maps[:, :, -1].max() == 0
    assert isinstance(get_explainer("cnn-perturbation", n_iterations=5), CNNPerturbation)


def test_same_seed_same_map_other_seed_other_map(case):
    model, images, maps = case
    again = CNNPerturbation(**SETTINGS).explain(model, images[:1])
    other = CNNPerturbation(**SETTINGS, seed=1).explain(model, images[:1])
    np.testing.assert_allclose(again[0], maps[0], rtol=1e-4, atol=1e-4 * maps[0].max())
    assert not np.allclose(other[0], maps[0], rtol=1e-2, atol=1e-2 * maps[0].max())


def test_batch_equals_one_image_at_a_time(case):
    # Equal up to the rounding of batched model forwards, which a long optimisation amplifies.
    model, images, maps = case
    single = CNNPerturbation(**SETTINGS).explain(model, images[2:3])
    np.testing.assert_allclose(single[0], maps[2], rtol=1e-3, atol=1e-3 * maps[2].max())


def normalised(model: torch.nn.Module, mean: float, std: float) -> NormalizedClassifier:
    """``model`` reading ``(x - mean) / std``, the normalisation declared as legx's models do."""
    return NormalizedClassifier(model, mean=(mean,) * 3, std=(std,) * 3)


def test_seed_preset_sets_the_seeds_choices_and_explicit_parameters_override_it():
    legx = CNNPerturbation().params()
    assert (legx["preset"], legx["n_iterations"], legx["input_space"], legx["power"]) == ("legx", 300, "pixels", 6.0)
    seed = get_explainer("cnn-perturbation", preset="seed")
    assert (seed.n_iterations, seed.input_space, seed.l1_coeff, seed.edge_fraction) == (1000, "normalised", 1.0, 0.1)
    assert get_explainer("cnn-perturbation", preset="seed", n_iterations=7).n_iterations == 7
    with pytest.raises(ValueError, match="unknown preset 'x'.*known presets: legx, seed"):
        get_explainer("cnn-perturbation", preset="x")


def test_normalised_space_is_the_seeds_generator_on_the_models_own_input():
    """Under an identity normalisation the two spaces are one; under another the seed's L1 and
    difference are taken on the normalised scale, and the map changes."""
    images = texture_images(1)
    settings = dict(n_iterations=10, batch_size=1)
    pixels = CNNPerturbation(input_space="pixels", **settings).explain(normalised(TextureModel(), 0.0, 1.0), images)
    same = CNNPerturbation(input_space="normalised", **settings).explain(normalised(TextureModel(), 0.0, 1.0), images)
    np.testing.assert_allclose(same, pixels, rtol=1e-5, atol=1e-6 * pixels.max())
    model = normalised(TextureModel(), 0.45, 0.25)
    explainer = CNNPerturbation(input_space="normalised", **settings)
    with torch.enable_grad():
        inputs, perturbed = explainer._optimise(model, images, torch.zeros(1, dtype=torch.long))
    torch.testing.assert_close(inputs, (images - 0.45) / 0.25)
    assert perturbed.min() >= inputs.min() - 1e-5 and perturbed.max() <= inputs.max() + 1e-5
    with pytest.raises(ValueError, match="declares no input normalisation"):
        explainer.explain(TextureModel(), images)
