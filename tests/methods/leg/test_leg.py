"""LEG: the grid operators' structure and known-answer tests on models with a known gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from legx import methods
from legx.methods.leg.explainer import LEG
from legx.methods.leg.perturbation import grid_to_image, perturb
from legx.methods.leg.solvers import covariance, leg_maps

GRID = 6
SIZE = 24  # 4 x 4 pixel blocks


@pytest.mark.parametrize("draws", ["random", "sobol"])
@pytest.mark.parametrize("channel_mode", ["separate", "joint", "shared"])
def test_drawn_noise_has_the_stated_covariance(channel_mode, draws):
    explainer = LEG(n_samples=20000, noise_level=0.1, grid_size=4, channel_mode=channel_mode, draws=draws)
    noise = explainer._draw_noise(torch.device("cpu")).double().numpy()
    for channel in range(3):
        draws = noise[:, channel]
        draws = draws[np.abs(draws).sum(axis=1) > 0]  # separate mode: this channel's forwards
        assert draws.shape[0] == 20000
        np.testing.assert_allclose(draws.mean(axis=0), 0, atol=1e-12)  # antithetic pairs
        empirical = draws.T @ draws / draws.shape[0]
        np.testing.assert_allclose(empirical, covariance(4, 0.1), atol=0.06 * 0.1**2 * 4)


@pytest.mark.parametrize("height,width", [(24, 24), (30, 17), (7, 9)])
def test_grid_to_image_blocks_cover_every_pixel(height, width):
    grid = torch.arange(36.0).reshape(6, 6)
    image = grid_to_image(grid, height, width)
    assert image.shape == (height, width)
    for cell in range(36):
        rows, cols = np.nonzero(image.numpy() == cell)
        if height >= 6 and width >= 6:
            assert rows.size > 0  # every cell is visible
        if rows.size:
            # a cell's pixels form one rectangle
            assert rows.size == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    row_sizes = np.bincount(np.arange(height) * 6 // height, minlength=6)
    assert row_sizes.max() - row_sizes.min() <= 1 or height < 6


@pytest.mark.parametrize("size", [24, 26])  # a multiple of the grid, and not
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_perturb_adds_each_rows_block_noise_to_its_own_image_and_clamps(size, memory_format):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, size, size, generator=generator)
    grid_noise = torch.randn(7, 3, GRID, GRID, generator=generator) * 0.3  # large: clamping bites
    image_of_row = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    runs = [(0, 0, 2), (1, 2, 5), (2, 5, 7)]
    out = torch.empty(7, 3, size, size, memory_format=memory_format)
    perturbed = perturb(images, runs, grid_noise, out)
    assert perturbed.data_ptr() == out.data_ptr()
    expected = (images[image_of_row] + grid_to_image(grid_noise, size, size)).clamp(0.0, 1.0)
    assert perturbed.is_contiguous(memory_format=memory_format)
    assert ((perturbed == 0) | (perturbed == 1)).any()
    torch.testing.assert_close(perturbed, expected, rtol=0, atol=0)


class LinearLogitModel(torch.nn.Module):
    """Two logits: (w . x, 0). Its logit gradient is w; its probability gradient is
    sigmoid'(w . x) w."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("weights", weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        projection = (images * self.weights).flatten(1).sum(1)
        return torch.stack([projection, torch.zeros_like(projection)], dim=1)


REGION = (slice(1, 4), slice(2, 5))  # 3 x 3 grid cells


def region_weights(seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Weights on the pixels of a 3 x 3-cell region of the 6 x 6 grid, zero elsewhere, with
    graded magnitudes per cell (1..9, shuffled) jittered per pixel and a negative middle channel.
    Returns the weights and the grid gradient (3, 36): block sums per channel."""
    generator = torch.Generator().manual_seed(seed)
    block = SIZE // GRID
    cell_magnitude = torch.zeros(GRID, GRID)
    cell_magnitude[REGION] = (torch.randperm(9, generator=generator) + 1.0).reshape(3, 3)
    pixel_magnitude = cell_magnitude.repeat_interleave(block, 0).repeat_interleave(block, 1)
    jitter = 0.8 + 0.4 * torch.rand(3, SIZE, SIZE, generator=generator)
    weights = (pixel_magnitude * jitter)[None]
    weights[0, 1] *= -1
    grid_gradient = weights[0].reshape(3, GRID, block, GRID, block).sum(dim=(2, 4))
    return weights, grid_gradient.reshape(3, GRID * GRID).numpy()


def region_mask() -> np.ndarray:
    mask = np.zeros((GRID, GRID), dtype=bool)
    mask[REGION] = True
    return mask


@pytest.mark.parametrize("channel_mode", ["separate", "joint", "shared"])
def test_leg_recovers_the_gradient_of_a_linear_logit(channel_mode):
    weights, grid_gradient = region_weights()
    model = LinearLogitModel(weights * 0.01)
    images = torch.full((1, 3, SIZE, SIZE), 0.5)
    explainer = LEG(
        n_samples=4000, noise_level=0.02, grid_size=GRID, channel_mode=channel_mode,
        score="logit", absolute=False, batch_size=1000,
    )
    stats = explainer.sample(model, images, targets=[0])
    inverse = np.linalg.inv(covariance(GRID, 0.02))
    estimate = stats.g_hat[0] @ inverse
    truth = 0.01 * grid_gradient
    if channel_mode == "shared":
        truth = truth.sum(axis=0, keepdims=True)  # one draw on all channels: luminance gradient
    relative_error = np.linalg.norm(estimate - truth) / np.linalg.norm(truth)
    assert relative_error < 0.25, relative_error
    signed_map = leg_maps(stats, absolute=False)[0].ravel()
    mean_truth = truth.mean(axis=0)
    per_channel_scale = np.linalg.norm(truth) / np.sqrt(truth.shape[0])
    assert np.linalg.norm(signed_map - mean_truth) < 0.25 * per_channel_scale
    assert stats.n_forwards == (12000 if channel_mode == "separate" else 4000)


@pytest.mark.parametrize("channel_mode", ["separate", "joint", "shared"])
def test_leg_map_concentrates_on_the_region_of_a_sigmoid_model(channel_mode):
    weights, grid_gradient = region_weights(seed=1)
    weights[0, 1] *= -1  # all channels push the same way, so 'shared' sees them too
    model = LinearLogitModel(weights * 0.002)
    images = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 0.6 + 0.2
    explainer = LEG(n_samples=10000, grid_size=GRID, channel_mode=channel_mode, batch_size=2500)
    saliency = explainer.explain(model, images)[0]
    assert saliency.shape == (GRID, GRID) and saliency.dtype == np.float32
    mass_inside = saliency[region_mask()].sum() / saliency.sum()
    assert mass_inside > 0.8, mass_inside
    truth = np.abs(grid_gradient).mean(axis=0).reshape(GRID, GRID)
    correlation = spearmanr(saliency[region_mask()], truth[region_mask()]).statistic
    assert correlation > 0.8, correlation


def test_contrast_with_the_opposite_class_doubles_a_two_class_probability_gradient():
    weights, _ = region_weights()
    model = LinearLogitModel(weights * 0.01)
    images = torch.full((1, 3, SIZE, SIZE), 0.5)
    explainer = LEG(n_samples=200, grid_size=GRID, score="prob", absolute=False)
    plain = explainer.sample(model, images, targets=[0])
    contrast = explainer.sample(model, images, targets=[0], opposite_targets=[1])
    # P(0) - P(1) = 2 P(0) - 1 for two classes, so every response doubles.
    scale = np.abs(plain.g_hat).max()
    np.testing.assert_allclose(contrast.g_hat, 2 * plain.g_hat, rtol=1e-4, atol=1e-5 * scale)


def test_batch_of_images_gives_the_same_maps_as_one_at_a_time():
    weights, _ = region_weights()
    model = LinearLogitModel(weights * 0.02)
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    explainer = LEG(n_samples=100, grid_size=GRID, batch_size=64)  # batches straddle images
    together = explainer.explain(model, images)
    alone = np.concatenate([explainer.explain(model, images[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-7)


def test_seed_makes_results_reproducible():
    weights, _ = region_weights()
    model = LinearLogitModel(weights * 0.02)
    images = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    first = LEG(n_samples=50, grid_size=GRID, seed=7).explain(model, images)
    again = LEG(n_samples=50, grid_size=GRID, seed=7).explain(model, images)
    other = LEG(n_samples=50, grid_size=GRID, seed=8).explain(model, images)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


class RangeRecorder(torch.nn.Module):
    """Records the smallest and largest input value it is given."""

    def __init__(self):
        super().__init__()
        self.low, self.high = np.inf, -np.inf

    def forward(self, images):
        self.low = min(self.low, float(images.min()))
        self.high = max(self.high, float(images.max()))
        return images.flatten(1)[:, :2]


def test_perturbed_pixels_are_clipped_to_the_unit_range():
    recorder = RangeRecorder()
    images = torch.cat([torch.zeros(1, 3, 12, 12), torch.ones(1, 3, 12, 12)])
    LEG(n_samples=20, grid_size=4, noise_level=0.2, score="logit").sample(recorder, images, [0, 0])
    assert recorder.low == 0.0 and recorder.high == 1.0


@pytest.mark.parametrize(
    "params,message",
    [
        ({"n_samples": 11}, "even"),
        ({"channel_mode": "rgb"}, "channel_mode"),
        ({"score": "softmax"}, "score"),
        ({"noise_level": 0}, "noise_level"),
        ({"grid_size": 1}, "grid_size"),
    ],
)
def test_bad_parameters_are_rejected(params, message):
    with pytest.raises(ValueError, match=message):
        methods.get_explainer("leg", **params)


def test_unknown_method_and_parameter_errors_name_what_is_accepted():
    with pytest.raises(ValueError, match="available: .*leg"):
        methods.get_explainer("legg")
    with pytest.raises(ValueError, match="accepted: .*n_samples"):
        methods.get_explainer("leg", samples=10)


@pytest.mark.parametrize(
    "images",
    [torch.rand(2, 1, 8, 8), torch.rand(3, 8, 8), torch.rand(1, 3, 8, 8) * 2, torch.zeros(0, 3, 8, 8)],
)
def test_bad_images_are_rejected(images):
    with pytest.raises(ValueError):
        LEG(n_samples=2, grid_size=2).explain(RangeRecorder(), images)


def _hand_computed_leg(explainer: LEG, weights: torch.Tensor, image: torch.Tensor, clip: bool) -> np.ndarray:
    """The LEG map of the linear logit w . x from the explainer's own draws, by the estimator's
    definition: y_i = w . (x_i - x) with x_i = x + up(z_i), clipped to [0, 1] when ``clip``;
    g_hat_c = (1/n) sum_i y_i z_ic over the forwards perturbing channel c (separate mode);
    LEG_c = Sigma^{-1} g_hat_c; map = mean_c |LEG_c|."""
    noise = explainer._draw_noise(torch.device("cpu")).double()  # (3n, 3, p)
    g = explainer.grid_size
    pixels = grid_to_image(noise.reshape(-1, 3, g, g), *image.shape[-2:])
    perturbed = image.double() + pixels
    if clip:
        perturbed = perturbed.clamp(0, 1)
    responses = ((perturbed - image.double()) * weights.double()).flatten(1).sum(1).numpy()
    inverse = np.linalg.inv(covariance(g, explainer.noise_level))
    n = explainer.n_samples
    per_channel = [
        inverse @ (responses[c * n:(c + 1) * n, None] * noise[c * n:(c + 1) * n, c].numpy()).mean(axis=0)
        for c in range(3)
    ]
    return np.abs(np.stack(per_channel)).mean(axis=0).reshape(g, g)


@pytest.mark.parametrize("clip", [True, False])
def test_clip_option_matches_the_hand_computed_estimator(clip):
    """A saturated image (left half black, right half white): the perturbed pixels leave [0, 1]
    only without clipping, and either way the map is the estimator computed by hand on the same
    draws (clip=False is the reference code's estimator)."""
    weights, _ = region_weights()
    image = torch.zeros(1, 3, SIZE, SIZE)
    image[..., SIZE // 2:] = 1.0
    recorder = RangeRecorder()
    explainer = LEG(n_samples=40, grid_size=GRID, noise_level=0.1, score="logit", clip=clip, batch_size=64)
    explainer.sample(recorder, image, [0])
    if clip:
        assert (recorder.low, recorder.high) == (0.0, 1.0)
    else:
        assert recorder.low < 0 and recorder.high > 1
    model = LinearLogitModel(weights * 0.01)
    expected = _hand_computed_leg(explainer, weights * 0.01, image[0], clip)
    np.testing.assert_allclose(explainer.explain(model, image, [0])[0], expected, rtol=1e-4, atol=1e-7)
    # Clipping changes the estimate on this saturated image: the two options differ.
    other = _hand_computed_leg(explainer, weights * 0.01, image[0], not clip)
    assert np.abs(expected - other).max() > 0.1 * np.abs(expected).max()


def test_clipping_is_the_default_and_part_of_the_recorded_parameters():
    assert LEG().clip and methods.get_explainer("leg-tv").clip
    assert methods.get_explainer("leg-tv", clip=False).params()["clip"] is False


def test_the_sobol_dimension_limit_is_torchs():
    from torch.quasirandom import SobolEngine

    from legx.methods.leg.moments import SOBOL_MAX_DIMENSION

    assert SOBOL_MAX_DIMENSION == SobolEngine.MAXDIM
