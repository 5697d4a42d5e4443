"""The perturbation baselines' shared known answer on ``saliency_toys.RegionModel``: each map
peaks in the one region the model reads and holds most of its positive mass there; maps are
float32, finite, of the method's resolution; the registry builds the method; an image explained
alone gets its map of the batch; the seeded sampling methods repeat a map exactly with their seed
and change it with another."""

import numpy as np
import pytest
import torch
from saliency_toys import REGION_SETTINGS, argmax_in_region, mass_in_region, region_case

from legx.methods import get_explainer
from legx.methods.kernel_shap import KernelSHAP
from legx.methods.lime import LIME
from legx.methods.meaningful_perturbation import MeaningfulPerturbation
from legx.methods.partition_shap import PartitionSHAP

# method -> (its class, least share of the positive mass in the region, map side)
EXPECTED = {
    "lime": (LIME, 0.7, 32),
    "kernel-shap": (KernelSHAP, 0.7, 32),
    "partition-shap": (PartitionSHAP, 0.7, 32),
    "meaningful-perturbation": (MeaningfulPerturbation, 0.8, 16),
}
# method -> (the image explained alone, its explicit target or None, tolerance against the batch)
ALONE = {
    "lime": (2, 0, 1e-6),
    "kernel-shap": (1, None, 1e-6),
    "partition-shap": (1, None, 1e-6),
    "meaningful-perturbation": (2, None, 1e-5),
}


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_map_concentrates_on_the_region_the_model_reads(method):
    _, _, maps = region_case(method)
    assert argmax_in_region(maps).all()
    assert (mass_in_region(maps) > EXPECTED[method][1]).all()


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_shape_dtype_finite_and_registry(method):
    _, _, maps = region_case(method)
    explainer_class, _, side = EXPECTED[method]
    assert maps.shape == (3, side, side) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert isinstance(get_explainer(method), explainer_class)


@pytest.mark.parametrize("method", ["kernel-shap", "lime"])
def test_same_seed_same_map_other_seed_other_map(method):
    model, images, maps = region_case(method)
    again = get_explainer(method, **REGION_SETTINGS[method]).explain(model, images[:1])
    other = get_explainer(method, **REGION_SETTINGS[method], seed=1).explain(model, images[:1])
    np.testing.assert_array_equal(again[0], maps[0])
    assert not np.allclose(other[0], maps[0])


@pytest.mark.parametrize("method", sorted(ALONE))
def test_batch_equals_one_image_at_a_time(method):
    model, images, maps = region_case(method)
    index, target, atol = ALONE[method]
    targets = None if target is None else torch.tensor([target])
    single = get_explainer(method, **REGION_SETTINGS[method]).explain(model, images[index : index + 1], targets)
    np.testing.assert_allclose(single[0], maps[index], atol=atol)
