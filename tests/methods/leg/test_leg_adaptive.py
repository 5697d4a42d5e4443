"""Adaptive LEG budgets: each image stops at its target reliability or the cap, batches stay
full across images' rounds, and a fixed budget is untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from legx import methods
from legx.methods.leg.explainer import LEG
from legx.methods.leg.uncertainty import reliability
from tests.methods.leg.test_leg import GRID, SIZE
from tests.methods.leg.test_leg_uncertainty import graded_linear_model


class TwoPatternModel(torch.nn.Module):
    """A linear logit whose weights depend on the image's brightness (mean below or above 0.5,
    which LEG's small perturbations never change): graded weights for dark images, whose maps
    settle fast, and nearly uniform ones for bright images, whose ranking stays noisy.
    Records the size of every forward batch."""

    def __init__(self):
        super().__init__()
        graded = graded_linear_model().weights
        generator = torch.Generator().manual_seed(5)
        uniform = graded.abs().mean() * (1 + 0.05 * torch.rand(graded.shape, generator=generator))
        self.register_buffer("dark", graded)
        self.register_buffer("bright", uniform * torch.sign(graded))
        self.batch_sizes: list[int] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(images.shape[0])
        bright = images.flatten(1).mean(1) > 0.5
        weights = torch.where(bright[:, None, None, None], self.bright, self.dark)
        projection = (images * weights).flatten(1).sum(1)
        return torch.stack([projection, torch.zeros_like(projection)], dim=1)


def images(*levels: float) -> torch.Tensor:
    return torch.cat([torch.full((1, 3, SIZE, SIZE), level) for level in levels])


ADAPTIVE = dict(n_samples="auto", grid_size=GRID, score="logit", round_samples=32, max_samples=1024)


def test_each_image_stops_at_its_target_or_the_cap():
    model = TwoPatternModel()
    explainer = LEG(target_reliability=0.7, batch_size=40, **ADAPTIVE)
    stats = explainer.sample(model, images(0.3, 0.7, 0.35), targets=[0, 0, 0])
    round_forwards = 3 * 32
    assert (stats.image_forwards % round_forwards == 0).all()
    dark, bright = [0, 2], 1
    assert not stats.capped[dark].any() and stats.capped[bright]
    assert stats.image_forwards[bright] == 3 * 1024
    assert (stats.image_forwards[dark] < stats.image_forwards[bright]).all()
    predicted = reliability(stats)
    assert (predicted[dark] >= 0.7).all() and predicted[bright] < 0.7
    # the batch's forwards are exactly the images' own
    assert sum(model.batch_sizes) == stats.image_forwards.sum() + 3  # + the clean forward
    assert stats.group_leg.shape == (3, 8, 3, GRID * GRID)


def test_batches_stay_full_while_several_images_have_rounds_left():
    model = TwoPatternModel()
    explainer = LEG(target_reliability=0.7, batch_size=40, **ADAPTIVE)
    stats = explainer.sample(model, images(0.3, 0.3, 0.3, 0.3), targets=[0, 0, 0, 0])
    sampling = model.batch_sizes[1:]  # after the clean forward
    total = int(stats.image_forwards.sum())
    # 96 forwards per round do not divide into batches of 40: without refilling freed slots
    # with other images' rounds, every round would end on a partial batch.
    assert len(sampling) == -(-total // 40)
    assert all(size == 40 for size in sampling[:-1])


def test_an_image_map_does_not_depend_on_its_batch_companions():
    model = TwoPatternModel()
    explainer = LEG(target_reliability=0.7, batch_size=40, **ADAPTIVE)
    together = explainer.sample(model, images(0.3, 0.7), targets=[0, 0])
    alone = explainer.sample(model, images(0.3), targets=[0])
    np.testing.assert_allclose(together.g_hat[0], alone.g_hat[0], rtol=1e-9)
    assert together.image_forwards[0] == alone.image_forwards[0]


def test_adaptive_parameters_are_checked_together_and_fixed_budgets_leave_them_out():
    with pytest.raises(ValueError) as raised:
        methods.get_explainer("leg", n_samples="auto", target_reliability=1.5, round_samples=24,
                              max_samples=100)
    message = str(raised.value)
    assert "target_reliability" in message and "round_samples" in message
    with pytest.raises(ValueError, match="max_samples must be a multiple"):
        methods.get_explainer("leg", n_samples="auto", round_samples=64, max_samples=100)
    with pytest.raises(ValueError, match="integer or 'auto'"):
        methods.get_explainer("leg", n_samples="many")
    assert methods.get_explainer("leg", n_samples="auto").forwards_per_image == 3 * 4096  # defaults
    assert "target_reliability" not in methods.get_explainer("leg", n_samples=100).params()
    adaptive = methods.get_explainer("leg-tv", n_samples="auto", max_samples=640).params()
    assert adaptive["n_samples"] == "auto" and adaptive["max_samples"] == 640


def test_sobol_rounds_continue_each_groups_sequence():
    explainer = LEG(n_samples="auto", grid_size=GRID, antithetic=False, round_samples=16,
                    max_samples=64, draws="sobol", seed=3)
    device = torch.device("cpu")
    first, second = (explainer._draw_noise(device, 16, 3, sequence_start=start) for start in (0, 2))
    fixed = explainer._draw_noise(device, 32, 3)  # 8 groups of 4 points per channel
    # separate mode: forwards c * n .. (c + 1) * n perturb channel c; group k holds units
    # k * L .. (k + 1) * L of its channel, L = 2 per round
    for channel in range(3):
        rounds = [noise[channel * 16 : (channel + 1) * 16, channel] for noise in (first, second)]
        whole = fixed[channel * 32 : (channel + 1) * 32, channel]
        for group in range(8):
            continued = torch.cat([r[2 * group : 2 * group + 2] for r in rounds])
            torch.testing.assert_close(continued, whole[4 * group : 4 * group + 4])
    stats = explainer.sample(graded_linear_model(), images(0.5), [0])
    assert stats.image_forwards[0] % (3 * 16) == 0 and stats.group_leg.shape[1] == 8


def test_draws_are_checked_and_the_default_leaves_params_as_they_were():
    with pytest.raises(ValueError, match="draws must be one of"):
        methods.get_explainer("leg", draws="halton")
    assert "draws" not in methods.get_explainer("leg").params()
    assert methods.get_explainer("leg-tv", draws="sobol").params()["draws"] == "sobol"


def test_filled_batches_leave_every_map_as_the_plain_queue_makes_it():
    # A dark image settles fast and a bright one runs to the cap: two rounds of 96 forwards
    # leave 64 of a batch's 256 rows free, and once the dark image stops the bright one's lone
    # round leaves 160. Speculative rounds fill them; the dark image's rounds run past its stop
    # are discarded, not added to its map.
    batch = dict(target_reliability=0.7, batch_size=256, **ADAPTIVE)
    levels, targets = images(0.3, 0.7), [0, 0]
    plain_model, filled_model = TwoPatternModel(), TwoPatternModel()
    plain = LEG(fill_batches=False, **batch).sample(plain_model, levels, targets)
    filled = LEG(fill_batches=True, **batch).sample(filled_model, levels, targets)
    np.testing.assert_array_equal(filled.image_forwards, plain.image_forwards)
    np.testing.assert_array_equal(filled.capped, plain.capped)
    np.testing.assert_allclose(filled.g_hat, plain.g_hat, rtol=1e-12)
    np.testing.assert_allclose(filled.group_leg, plain.group_leg, rtol=1e-12)
    np.testing.assert_allclose(filled.leg_covariance, plain.leg_covariance, rtol=1e-12)
    assert plain.capped[1] and not plain.capped[0]

    plain_batches, filled_batches = plain_model.batch_sizes[1:], filled_model.batch_sizes[1:]
    assert sum(plain_batches) == plain.image_forwards.sum() and plain.discarded_forwards == 0
    assert sum(filled_batches) == filled.image_forwards.sum() + filled.discarded_forwards
    assert filled.discarded_forwards > 0
    assert all(size < 256 for size in plain_batches)
    assert all(size == 256 for size in filled_batches[:-1])
    assert len(filled_batches) < len(plain_batches)


def test_fill_batches_is_checked_and_left_out_of_params_at_its_default():
    with pytest.raises(ValueError, match="fill_batches must be"):
        LEG(n_samples="auto", fill_batches="yes")
    assert "fill_batches" not in LEG(n_samples="auto").params()
    assert LEG(n_samples="auto", fill_batches=True).params()["fill_batches"] is True
    assert "fill_batches" not in LEG(n_samples=100, fill_batches=True).params()


def test_adaptive_rounds_honour_clip_false():
    class InputRange(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.largest = -float("inf")

        def forward(self, batch):
            self.largest = max(self.largest, float(batch.max()))
            return torch.stack([batch.flatten(1).mean(1), torch.zeros(len(batch))], dim=1)

    for clip in (True, False):
        model = InputRange()
        LEG(clip=clip, round_samples=32, max_samples=64, n_samples="auto", grid_size=GRID,
            score="logit").sample(model, images(1.0), [0])
        assert (model.largest > 1.0) == (not clip)
