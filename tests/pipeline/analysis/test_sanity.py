"""Cascading randomisation on a tiny CNN trained in the test to find a bright square."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from legx.methods.base import Explainer, check_images, resolve_targets
from legx.pipeline.analysis.sanity import (
    cascading_randomization,
    parameterised_layers,
    spearman_rows,
    write_sanity_table,
)

SIDE = 16


class InputGradient(Explainer):
    """Gradient of the target logit with respect to the input, summed over channels."""

    name = "input-gradient"

    def explain(self, model, images, targets=None):
        check_images(images)
        targets, _ = resolve_targets(model, images, targets, batch_size=64)
        inputs = images.clone().requires_grad_(True)
        logits = model(inputs)
        logits.gather(1, targets.unsqueeze(1)).sum().backward()
        return inputs.grad.sum(dim=1).detach().numpy().astype(np.float32)


class ConstantExplainer(Explainer):
    """Ignores the model: the image's brightness. The sanity check must expose it."""

    name = "brightness"

    def explain(self, model, images, targets=None):
        return images.mean(dim=1).numpy().astype(np.float32)


def _squares(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class = whether a bright 4x4 square sits in the left or the right half."""
    images = 0.3 * torch.rand(count, 3, SIDE, SIDE, generator=generator)
    labels = torch.randint(0, 2, (count,), generator=generator)
    for index in range(count):
        row = int(torch.randint(0, SIDE - 4, (1,), generator=generator))
        col = int(torch.randint(0, SIDE // 2 - 4, (1,), generator=generator))
        col += SIDE // 2 * int(labels[index])
        images[index, :, row : row + 4, col : col + 4] = 0.9
    return images, labels


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * SIDE * SIDE, 2),
    )
    generator = torch.Generator().manual_seed(1)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        images, labels = _squares(32, generator)
        loss = nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    images, labels = _squares(200, generator)
    accuracy = float((model(images).argmax(dim=1) == labels).float().mean())
    assert accuracy > 0.9, accuracy  # "trained-ish": the check needs learned weights
    return model.eval(), _squares(6, generator)[0]


def test_layers_are_listed_from_output_to_input(trained):
    model, _ = trained
    assert [name for name, _ in parameterised_layers(model)] == ["5", "2", "0"]


def test_gradient_correlation_falls_and_model_is_untouched(trained):
    model, images = trained
    before = [p.detach().clone() for p in model.parameters()]
    rows = cascading_randomization(model, images, InputGradient(), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert len(rows) == 3 * len(images)
    assert {row["layer"] for row in rows} == {"5", "2", "0"}
    mean_by_depth = [
        np.mean([row["spearman_abs"] for row in rows if row["layer_index"] == depth])
        for depth in (1, 2, 3)
    ]
    # Trained gradient maps mark the square; fully random ones do not.
    assert mean_by_depth[-1] < 0.5, mean_by_depth
    assert mean_by_depth[-1] < mean_by_depth[0], mean_by_depth


def test_model_independent_method_keeps_correlation_one(trained):
    model, images = trained
    rows = cascading_randomization(model, images, ConstantExplainer())
    np.testing.assert_allclose([row["spearman"] for row in rows], 1.0)


def test_same_seed_same_rows(trained):
    model, images = trained
    first = cascading_randomization(model, images[:2], InputGradient(), seed=7)
    second = cascading_randomization(model, images[:2], InputGradient(), seed=7)
    other = cascading_randomization(model, images[:2], InputGradient(), seed=8)
    assert first == second
    assert first != other


def test_spearman_rows_known_values():
    maps = np.arange(12, dtype=float).reshape(2, 2, 3)
    np.testing.assert_allclose(spearman_rows(maps, maps**3), [1.0, 1.0])
    np.testing.assert_allclose(spearman_rows(maps, -maps), [-1.0, -1.0])
    assert np.isnan(spearman_rows(maps[:1], np.ones((1, 2, 3))))[0]


def test_write_sanity_table_reads_back(tmp_path, trained):
    model, images = trained
    rows = cascading_randomization(model, images[:2], InputGradient())
    uri = write_sanity_table(rows, str(tmp_path), "run-1", "tiny", image_ids=["a.png", "b.png"])
    table = pq.read_table(uri)
    assert table.num_rows == len(rows)
    assert set(table.column("image_id").to_pylist()) == {"a.png", "b.png"}
    assert table.column("method").to_pylist()[0] == "input-gradient"


def test_run_sanity_job_mode_writes_rows(trained, tmp_path, ray_local):
    from PIL import Image

    from legx.pipeline.engine.config import build_config
    from legx.pipeline.analysis.sanity import run_sanity

    model, images = trained
    folder = tmp_path / "images"
    folder.mkdir()
    for index, image in enumerate(images[:3]):
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"square{index}.png")
    config = build_config({
        "input": str(folder), "output": str(tmp_path / "out"), "model": "tiny", "run_id": "sanity-1",
        "image_size": SIDE, "methods": ["leg"], "leg": {"n_samples": 64, "grid_size": 4, "batch_size": 64},
    })
    uri = run_sanity(config, model, n_images=2, max_layers=2)
    table = pq.read_table(uri)
    assert table.num_rows == 2 * 2  # images x layers
    assert set(table.column("layer").to_pylist()) == {"5", "2"}
    assert set(table.column("image_id").to_pylist()) <= {f"square{i}.png" for i in range(3)}
    assert set(table.column("method").to_pylist()) == {"leg"}
