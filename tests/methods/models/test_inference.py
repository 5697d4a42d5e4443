import numpy as np
import pytest
import torch
from torch import nn

from legx.methods.models.inference import InferenceModel, input_memory_format, prepare_model
from legx.methods.leg.explainer import LEG


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()
    model.model_id = "small@test"
    return model


def test_all_options_off_returns_the_model_itself():
    model = small_cnn()
    assert prepare_model(model) is model


def test_channels_last_gives_the_same_logits_and_keeps_the_interface():
    model = small_cnn()
    images = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        expected = model(images)
    prepared = prepare_model(model, channels_last=True)
    with torch.no_grad():
        logits = prepared(images)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert prepared.model_id == "small@test"
    assert prepared.get_submodule("0") is model[0]


def test_input_memory_format_is_the_layout_the_forward_converts_to():
    assert input_memory_format(small_cnn()) == torch.contiguous_format
    assert input_memory_format(prepare_model(small_cnn(), precision="bf16")) == torch.contiguous_format
    assert input_memory_format(prepare_model(small_cnn(), channels_last=True)) == torch.channels_last
    compiled = prepare_model(small_cnn(), channels_last=True, compile=True)
    assert input_memory_format(compiled) == torch.channels_last


def test_bf16_autocast_runs_in_reduced_precision_and_returns_float32():
    model = small_cnn()
    images = torch.rand(5, 3, 16, 16)
    prepared = prepare_model(model, precision="bf16")
    with torch.no_grad():
        expected, logits = model(images), prepared(images)
    assert logits.dtype == torch.float32
    assert not torch.equal(logits, expected)  # rounding shows that autocast took effect
    torch.testing.assert_close(logits, expected, rtol=0.05, atol=0.02)


def test_leg_through_a_channels_last_model_gives_the_same_map():
    model = small_cnn()
    images = torch.rand(2, 3, 16, 16)
    leg = LEG(n_samples=64, grid_size=4, batch_size=256)
    expected = leg.explain(model, images)
    maps = leg.explain(prepare_model(small_cnn(), channels_last=True), images)
    np.testing.assert_allclose(maps, expected, rtol=1e-3, atol=1e-6 * np.abs(expected).max())


def test_torch_compile_gives_the_same_logits():
    model = small_cnn()
    images = torch.rand(3, 3, 16, 16)
    compiled = prepare_model(model, channels_last=True, compile=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), model(images), rtol=1e-4, atol=1e-4)
    assert compiled.model_id == "small@test"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        prepare_model(small_cnn(), precision="fp8")
    with pytest.raises(ValueError, match="precision must be one of"):
        InferenceModel(small_cnn(), precision="half")
