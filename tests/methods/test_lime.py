"""LIME: an unknown baseline is refused. The region known answer, the seeds and batch invariance:
``test_region_baselines``."""

import pytest

from legx.methods.lime import LIME


def test_unknown_baseline_is_rejected():
    with pytest.raises(ValueError, match="baseline"):
        LIME(baseline="noise")
