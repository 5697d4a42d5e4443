"""Kernel SHAP: efficiency (values add up to f(x) - f(baseline)). The region known answer, the
seeds and batch invariance: ``test_region_baselines``."""

import numpy as np
import pytest
from saliency_toys import region_case, score_change

from legx.methods.superpixels import slic_segments


def test_values_add_up_to_the_score_change():
    model, images, maps = region_case("kernel-shap")
    changes = score_change(model, images, "gray")
    for index in range(len(images)):
        segments = slic_segments(images[index], 30)
        per_segment = [maps[index][segments == label][0] for label in np.unique(segments)]
        change = float(changes[index])
        assert sum(per_segment) == pytest.approx(change, abs=0.1 * abs(change))
