"""LEG-TV the explainer: maps per lambda from its own sampling, parameter checks, and the
pointing game on the demo model (the LP itself: tests/methods/leg/test_leg_solvers.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from legx import methods
from legx.methods.leg.tv import LEGTV
from legx.methods.leg.solvers import leg_maps

GRID = 5


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="lambdas"):
        methods.get_explainer("leg-tv", lambdas=[-0.1])
    with pytest.raises(ValueError, match="solver"):
        methods.get_explainer("leg-tv", solver="MOSEK")


class RegionModel(torch.nn.Module):
    """Logit 0 = mean brightness of the top-left quarter, logit 1 = 0."""

    def forward(self, images):
        height, width = images.shape[-2:]
        score = 20 * images[:, :, : height // 2, : width // 2].mean(dim=(1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_explain_returns_one_map_per_lambda_concentrated_on_the_region():
    images = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    explainer = LEGTV(n_samples=3000, grid_size=GRID + 1, lambdas=[0.05, 0.2], batch_size=1000)
    maps = explainer.explain(RegionModel(), images)
    assert maps.shape == (2, 2, GRID + 1, GRID + 1) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    half = (GRID + 1) // 2
    inside = maps[..., :half, :half].sum(axis=(-1, -2)) / maps.sum(axis=(-1, -2))
    assert (inside > 0.8).all(), inside


def test_leg_and_legtv_point_at_the_object_on_the_demo_model():
    """The must-show of the LEG issue at test scale: on the bundled demo model and unseen demo
    images, LEG's and LEG-TV's maps (the embedded default's 8 x 8 grid and budget) peak inside
    the object mask for a clear majority of images (chance is the object's area, about 11%)."""
    from legx.methods import load_model
    from legx.methods.metrics.localisation import localisation
    from legx.pipeline.demo.data import make_demo_sample

    model = load_model("demo", device="cpu")
    samples = [make_demo_sample(4242, index) for index in range(24)]
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255
    masks = np.stack([s.mask.astype(bool) for s in samples])
    legtv = LEGTV(n_samples=342, grid_size=8, batch_size=512, lambdas=[0.3])
    stats = legtv.sample(model, images)
    leg_pointing, _ = localisation(leg_maps(stats), masks=masks)
    tv_pointing, _ = localisation(np.stack([per_image[0].map for per_image in legtv.solve(stats)]), masks=masks)
    assert leg_pointing.mean() >= 0.6
    assert tv_pointing.mean() >= 0.6
