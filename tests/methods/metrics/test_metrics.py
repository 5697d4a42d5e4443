"""Known-answer tests of methods.metrics on a model built to depend on a known patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from legx.methods.metrics.catalogue import metric_columns, metric_names
from legx.methods.metrics.compute import (
    BACKGROUNDS,
    KEY_SIZE_GRID,
    compute_metrics,
    deletion_insertion_auc,
    gini,
    key_size,
    sensitivity_curve,
)

SIDE = 16
PATCH = (slice(2, 6), slice(3, 7))  # rows, cols: 16 of 256 pixels decide the class


def _pattern() -> torch.Tensor:
    rows, cols = np.indices((4, 4))
    checker = ((rows + cols) % 2).astype(np.float32)
    # Per channel a different phase, so that no flat background equals the pattern anywhere.
    channels = [0.2 + 0.6 * checker, 0.8 - 0.6 * checker, 0.2 + 0.6 * checker]
    return torch.from_numpy(np.stack(channels))


class PatchModel(torch.nn.Module):
    """Two classes: logit_0 = 4 - 40 * sum over the patch of the channel-mean squared distance
    to the pattern, logit_1 = 0. Class 0 while the patch is (nearly) intact; nothing else in the
    image matters."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pattern", _pattern())
        self.forwarded = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.forwarded += images.shape[0]
        distance = ((images[:, :, PATCH[0], PATCH[1]] - self.pattern) ** 2).mean(dim=1)
        logit = 4.0 - 40.0 * distance.sum(dim=(1, 2))
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def _score_numpy(images: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    distance = ((images[:, :, PATCH[0], PATCH[1]] - pattern) ** 2).mean(axis=1)
    return 4.0 - 40.0 * distance.sum(axis=(1, 2))


def _images(count: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((count, 3, SIDE, SIDE), generator=generator)
    images[:, :, PATCH[0], PATCH[1]] = _pattern()
    return images


def _right_maps(count: int, seed: int = 2) -> np.ndarray:
    """Patch cells at 1, the rest below 0.5: the decisive pixels rank first."""
    rng = np.random.default_rng(seed)
    maps = rng.uniform(0.0, 0.5, size=(count, SIDE, SIDE)).astype(np.float32)
    maps[:, PATCH[0], PATCH[1]] = 1.0
    return maps


def _reversed(maps: np.ndarray) -> np.ndarray:
    return (maps.max() + 0.1 - maps).astype(np.float32)


def _black_key_size_oracle(image: np.ndarray, saliency: np.ndarray, pattern: np.ndarray) -> float:
    """Independent reference: replay the definition pixel count by pixel count."""
    order = np.argsort(-np.abs(saliency).ravel(), kind="stable")
    first_flip = None
    for count in range(SIDE * SIDE + 1):
        perturbed = image.copy().reshape(3, -1)
        perturbed[:, order[:count]] = 0.0
        if _score_numpy(perturbed.reshape(1, 3, SIDE, SIDE), pattern)[0] < 0:
            first_flip = count
            break
    if first_flip is None:
        return 1.0
    counts = np.floor(KEY_SIZE_GRID * SIDE * SIDE)
    return float(KEY_SIZE_GRID[np.argmax(counts >= first_flip)])


def test_key_size_small_for_right_map_large_for_reversed():
    model, images, maps = PatchModel(), _images(4), _right_maps(4)
    right = key_size(model, images, maps)
    wrong = key_size(model, images, _reversed(maps))
    assert right.shape == (4, len(BACKGROUNDS))
    # All 16 patch pixels replaced is 1/16 of the image; the reversed map reaches them last.
    assert (right <= 16 / 256 + 1e-3).all(), right
    assert (wrong >= 240 / 256 - 1e-3).all(), wrong


def test_key_size_matches_independent_oracle_and_full_scan():
    model, images, maps = PatchModel(), _images(3), _right_maps(3)
    # A map whose order within the patch is random, so the flip point varies per image.
    maps[:, PATCH[0], PATCH[1]] += np.random.default_rng(5).uniform(0, 0.4, size=(3, 4, 4))
    searched = key_size(model, images, maps, backgrounds=["black"])[:, 0]
    pattern = _pattern().numpy()
    expected = [_black_key_size_oracle(images[i].numpy(), maps[i], pattern) for i in range(3)]
    np.testing.assert_allclose(searched, expected)
    # On this model the class change is monotone in the pixel count, so the bisection equals
    # the exhaustive scan for every background.
    full = key_size(model, images, maps, exhaustive=True)
    np.testing.assert_allclose(key_size(model, images, maps), full)


def test_key_size_search_cost_is_a_few_forwards_per_background():
    model, images, maps = PatchModel(), _images(4), _right_maps(4)
    key_size(model, images, maps, coarse_steps=16)
    per_search = (model.forwarded - 4) / (4 * len(BACKGROUNDS))  # minus the clean forwards
    assert per_search <= 16 + 7, per_search


def test_key_size_is_one_when_class_never_changes():
    class Constant(torch.nn.Module):
        def forward(self, images):
            return torch.tensor([[1.0, 0.0]]).expand(images.shape[0], 2)

    sizes = key_size(Constant(), _images(2), _right_maps(2))
    assert (sizes == 1.0).all()


def test_deletion_lower_and_insertion_higher_for_right_map():
    model, images, maps = PatchModel(), _images(4), _right_maps(4)
    targets = np.zeros(4, dtype=np.int64)
    deletion_right, insertion_right = deletion_insertion_auc(model, images, maps, targets)
    deletion_wrong, insertion_wrong = deletion_insertion_auc(
        model, images, _reversed(maps), targets
    )
    assert (deletion_right < 0.15).all() and (deletion_wrong > 0.8).all()
    assert (insertion_right > 0.8).all() and (insertion_wrong < 0.15).all()
    _, insertion_zero = deletion_insertion_auc(
        model, images, maps, targets, insertion_baseline="zero"
    )
    assert (insertion_zero > 0.8).all()


def test_gini_known_values():
    constant = np.full((1, 5, 5), 3.0)
    one_hot = np.zeros((1, 5, 5))
    one_hot[0, 2, 2] = -7.0
    two_hot = np.zeros((1, 5, 5))
    two_hot[0, 0, :2] = 1.0
    values = gini(np.concatenate([constant, one_hot, two_hot, np.zeros((1, 5, 5))]))
    np.testing.assert_allclose(values, [0.0, 1 - 1 / 25, 1 - 2 / 25, 0.0], atol=1e-12)
    assert np.isnan(gini(np.full((1, 2, 2), np.nan)))[0]


def test_compute_metrics_all_columns_with_boxes_and_a_bad_map():
    model, images = PatchModel(), _images(3)
    maps = _right_maps(3)
    maps[2, 0, 0] = np.nan
    boxes = np.array([[3, 2, 6, 5], [3, 2, 6, 5], [3, 2, 6, 5]], dtype=np.float64)
    results = compute_metrics(model, images, maps, [0, 0, 0], metric_names(), boxes=boxes)
    assert list(results) == [column.name for column in metric_columns()]
    for name, values in results.items():
        assert values.dtype == np.float64 and values.shape[0] == 3
        assert np.isfinite(values[:2]).all(), name
        assert np.isnan(values[2]).all(), name
    assert (results["pointing_game"][:2] == 1.0).all()
    assert (results["key_size_black"][:2] <= 16 / 256).all()


def test_compute_metrics_subset_and_missing_ground_truth():
    model, images, maps = PatchModel(), _images(2), _right_maps(2)
    results = compute_metrics(model, images, maps, [0, 0], ["gini", "pointing_game"])
    assert list(results) == ["gini", "pointing_game"]
    assert np.isnan(results["pointing_game"]).all()
    with pytest.raises(ValueError, match="unknown metrics"):
        compute_metrics(model, images, maps, [0, 0], ["nope"])


def test_grid_resolution_maps_are_upsampled():
    model, images = PatchModel(), _images(2)
    coarse = np.zeros((2, 4, 4), dtype=np.float32)
    coarse[:, 1, 1] = 1.0  # the 4x4 cell covering rows 4-7, cols 4-7 overlaps the patch
    results = compute_metrics(model, images, coarse, [0, 0], ["key_size_black", "gini"])
    assert (results["key_size_black"] < 0.1).all()
    np.testing.assert_allclose(results["gini"], 1 - 1 / 16)


def test_sensitivity_curve_falls_only_for_right_map():
    model, image, saliency = PatchModel(), _images(1)[0], _right_maps(1)[0]
    curve = sensitivity_curve(model, image, saliency, 0, "mean")
    assert curve.shape == (21,)
    assert curve[0] == 0.0  # alpha 0 replaces nothing
    assert curve[-1] < -3.0 and np.all(np.diff(curve) <= 1e-9)
    flat = sensitivity_curve(model, image, _reversed(saliency[None])[0], 0, "black")
    np.testing.assert_allclose(flat, 0.0, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_metrics_on_cuda():
    images, maps = _images(3), _right_maps(3)
    on_cpu = compute_metrics(PatchModel(), images, maps, [0, 0, 0])
    on_gpu = compute_metrics(PatchModel().cuda(), images, maps, [0, 0, 0])
    for name in metric_names():
        np.testing.assert_allclose(on_gpu[name], on_cpu[name], atol=1e-5, equal_nan=True)


def test_an_image_scores_the_same_alone_and_in_a_batch():
    model, images, maps = PatchModel(), _images(4), _right_maps(4)
    maps[:, PATCH[0], PATCH[1]] += np.random.default_rng(7).uniform(0, 0.4, size=(4, 4, 4))
    together = compute_metrics(model, images, maps, [0] * 4, batch_size=5)
    alone = compute_metrics(model, images[2:3], maps[2:3], [0], batch_size=3)
    for name in metric_names():
        np.testing.assert_allclose(alone[name], together[name][2:3], equal_nan=True, err_msg=name)
