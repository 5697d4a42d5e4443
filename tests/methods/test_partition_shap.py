"""Partition SHAP (shap library): exact efficiency of Owen values, explicit targets. The region
known answer and determinism (batch invariance): ``test_region_baselines``."""

import numpy as np
from saliency_toys import REGION_SETTINGS, region_case, score_change

from legx.methods.partition_shap import PartitionSHAP


def test_owen_values_add_up_exactly_to_the_score_change():
    model, images, maps = region_case("partition-shap")
    changes = score_change(model, images, "blur")
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), changes.numpy(), atol=1e-4)


def test_explicit_target_explains_that_class():
    model, images, maps = region_case("partition-shap")
    other = PartitionSHAP(**REGION_SETTINGS["partition-shap"]).explain(model, images[:1], targets=[1])
    np.testing.assert_allclose(other[0], -maps[0], atol=1e-5)
