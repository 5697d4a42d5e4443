"""Grad-CAM and Guided Grad-CAM: the class's own square, the exact Grad-CAM formula, layers."""

import numpy as np
import pytest
import torch
from saliency_toys import (
    GREEN_SQUARE,
    RED_SQUARE,
    ColorModel,
    argmax_in_region,
    color_images,
    mass_in_region,
)
from torch import nn

from legx.methods import get_explainer
from legx.methods.grad_cam import GradCAM, GuidedGradCAM, find_layer


@pytest.fixture(scope="module")
def case():
    return ColorModel().eval(), color_images(3)


@pytest.mark.parametrize("explainer_class", [GradCAM, GuidedGradCAM])
@pytest.mark.parametrize("target, square", [(0, RED_SQUARE), (1, GREEN_SQUARE)])
def test_map_lies_on_the_square_of_the_explained_class(case, explainer_class, target, square):
    model, images = case
    maps = explainer_class(batch_size=2).explain(model, images, targets=[target] * 3)
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert argmax_in_region(maps, square).all()
    assert (mass_in_region(maps, square) > 0.99).all()


def test_grad_cam_equals_the_formula(case):
    model, images = case
    maps = GradCAM().explain(model, images)
    with torch.no_grad():
        activations = model.conv(images)
    # d logit_0 / d A^0 = 60 / (h w) where A^0 > 0 (ReLU then mean), 0 for channel 1.
    alpha = 60.0 / (32 * 32) * (activations[:, 0] > 0).float().mean(dim=(1, 2))
    expected = torch.relu(alpha[:, None, None] * activations[:, 0])
    np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-5, atol=1e-7)


def test_default_layer_is_the_last_conv_and_paths_select_others():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).eval()
    assert find_layer(model, None) is model[2]
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert GradCAM().explain(model, images).shape == (2, 16, 16)
    assert GradCAM(layer="0").explain(model, images).shape == (2, 32, 32)
    assert GuidedGradCAM().explain(model, images).shape == (2, 32, 32)
    # in-place ReLUs are switched off only while the hooks are attached
    assert model[1].inplace and model[3].inplace
    with pytest.raises(ValueError, match="no layer"):
        GradCAM(layer="features.9").explain(model, images)
    assert isinstance(get_explainer("grad-cam", layer="0"), GradCAM)
    assert isinstance(get_explainer("guided-grad-cam"), GuidedGradCAM)


@pytest.mark.parametrize("explainer_class", [GradCAM, GuidedGradCAM])
def test_repeatable_and_batch_equals_one_image_at_a_time(explainer_class):
    model = ColorModel().eval()
    images = color_images(3, seed=4)
    maps = explainer_class(batch_size=2).explain(model, images)
    np.testing.assert_array_equal(explainer_class(batch_size=2).explain(model, images), maps)
    single = explainer_class().explain(model, images[1:2])
    np.testing.assert_allclose(single[0], maps[1], rtol=1e-5, atol=1e-8)


def test_default_layer_of_the_demo_model_is_its_declared_feature_map():
    from legx.methods.models.demo import DemoCNN
    from legx.methods.models.loading import NormalizedClassifier, load_model

    demo = load_model("demo")
    # The last Conv2d in module order is the one-channel attention convolution; the head reads
    # features[11]'s map, which the model declares as last_conv.
    assert find_layer(demo, None) is demo.features[11]
    assert find_layer(demo, None) is not demo.attention
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    maps = GradCAM().explain(demo, images)
    np.testing.assert_array_equal(maps, GradCAM(layer="features.11").explain(demo, images))
    wrapped = NormalizedClassifier(DemoCNN(), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert find_layer(wrapped, None) is wrapped.network.features[11]


@pytest.mark.parametrize("arch, block", [("resnet18", "layer4"), ("vgg11", "features"),
                                         ("mobilenet_v3_small", "features")])
def test_default_layer_of_torchvision_classifiers_is_the_block_the_head_pools(arch, block):
    import torchvision

    from legx.methods.models.loading import NormalizedClassifier

    model = NormalizedClassifier(torchvision.models.get_model(arch, weights=None, num_classes=3)).eval()
    assert find_layer(model, None) is getattr(model.network, block)
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert GradCAM().explain(model, images).shape == (1, 2, 2)
