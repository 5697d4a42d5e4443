"""Grad-CAM and Guided Grad-CAM (Selvaraju et al., ICCV 2017, arXiv 1610.02391), via captum.

Grad-CAM: for the activations A^k (h x w) of a convolutional layer and the target logit y^c,
    alpha_k = mean_{i,j} dy^c / dA^k_ij,   L = ReLU(sum_k alpha_k A^k),
a map at the layer's resolution (N, h, w), returned as captum's ``LayerGradCam`` computes it.
Guided Grad-CAM: Grad-CAM upsampled bilinearly to the image, times the guided-backpropagation
gradient of y^c (ReLU backward passes only positive gradients at positive inputs; Springenberg
et al., 2015), captum's ``GuidedGradCam``; it is signed per colour channel, and the map returned
is its absolute value summed over channels, at the image's resolution (N, H, W). Guided
backpropagation acts on ``nn.ReLU`` modules, so models that call ``F.relu`` get plain gradients.

``layer`` is an attribute path of the model (``'features.6'``, ``'net.layer4.1.conv2'``).
``None`` picks what Grad-CAM needs, the last convolutional feature map the head reads, in this
order: the ``last_conv`` module that the model, or a module it wraps (``NormalizedClassifier``'s
``network``), declares (the demo model's ``features[11]``); for torchvision classifiers, which
declare nothing, the block their head pools (``layer4`` of the ResNet family, ``features`` of
VGG, DenseNet, MobileNet, EfficientNet, ConvNeXt ...); only otherwise the last ``nn.Conv2d`` in
module order, which may be a convolution beside the feature path (the demo model's one-channel
attention logits). One forward and one backward per ``batch_size`` images; no sampling, so no
seed.
"""

from __future__ import annotations

import abc
import contextlib
import warnings
from collections.abc import Iterator, Sequence

import numpy as np

from legx.methods.base import Explainer, batches, explained_classes
from legx.methods.lazy_imports import torch


# Torchvision classifiers' heads pool the output of one of these children (ResNet family first).
_TORCHVISION_FEATURE_BLOCKS = ("layer4", "features")


def _has_conv(module: torch.nn.Module) -> bool:
    return any(isinstance(child, torch.nn.Conv2d) for child in module.modules())


def declared_layer(model: torch.nn.Module) -> torch.nn.Module | None:
    """The last convolutional feature map the head reads, where the model says which: the first
    ``last_conv`` declared by the model or a module inside it (a wrapper's network), else the
    feature block of a torchvision classifier; None when nothing declares one."""
    for module in model.modules():
        declared = getattr(module, "last_conv", None)
        if isinstance(declared, torch.nn.Module):
            return declared
        if type(module).__module__.startswith("torchvision.models."):
            for name in _TORCHVISION_FEATURE_BLOCKS:
                block = getattr(module, name, None)
                if isinstance(block, torch.nn.Module) and _has_conv(block):
                    return block
    return None


def find_layer(model: torch.nn.Module, layer: str | None) -> torch.nn.Module:
    """The module at attribute path ``layer``; for None the declared feature map
    (``declared_layer``), or the model's last ``nn.Conv2d`` when none is declared."""
    if layer is not None:
        try:
            return model.get_submodule(layer)
        except AttributeError as error:
            raise ValueError(f"model has no layer {layer!r}") from error
    declared = declared_layer(model)
    if declared is not None:
        return declared
    convolutions = [module for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
    if not convolutions:
        raise ValueError("model has no nn.Conv2d layer; pass layer='path.to.layer'")
    return convolutions[-1]


@contextlib.contextmanager
def _out_of_place_relus(model: torch.nn.Module) -> Iterator[None]:
    """Turn in-place ReLUs off while hooks are attached: autograd rejects in-place ops on the
    views that module backward hooks create. The model is restored on exit."""
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU) and m.inplace]
    for relu in relus:
        relu.inplace = False
    try:
        yield
    finally:
        for relu in relus:
            relu.inplace = True


class _CamExplainer(Explainer):
    def __init__(self, layer: str | None = None, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.layer = layer
        self.batch_size = batch_size

    @abc.abstractmethod
    def _attribute(self, model, layer, images, targets) -> torch.Tensor:
        """Maps (n, h, w) of ``images`` for ``targets`` at ``layer``."""

    def explain(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        targets: Sequence[int] | torch.Tensor | None = None,
    ) -> np.ndarray:
        """Maps (N, h, w): Grad-CAM at the layer's resolution, Guided Grad-CAM at the
        image's."""
        device, target_classes = explained_classes(model, images, targets, self.batch_size)
        layer = find_layer(model, self.layer)
        parts = []
        with _out_of_place_relus(model), torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            for part in batches(images.shape[0], self.batch_size):
                inputs = images[part].to(device).float().requires_grad_(True)
                maps = self._attribute(model, layer, inputs, target_classes[part])
                parts.append(maps.detach().float().cpu())
        return torch.cat(parts).numpy().astype(np.float32)


class GradCAM(_CamExplainer):
    """Grad-CAM of the target logit at ``layer``; maps at the layer's resolution."""

    name = "grad-cam"

    def _attribute(self, model, layer, images, targets) -> torch.Tensor:
        from captum.attr import LayerGradCam

        cam = LayerGradCam(model, layer).attribute(images, target=targets, relu_attributions=True)
        return cam[:, 0]


class GuidedGradCAM(_CamExplainer):
    """Guided Grad-CAM of the target logit; |attribution| summed over channels, image size."""

    name = "guided-grad-cam"

    def _attribute(self, model, layer, images, targets) -> torch.Tensor:
        from captum.attr import GuidedGradCam as CaptumGuidedGradCam

        guided = CaptumGuidedGradCam(model, layer).attribute(
            images, target=targets, interpolate_mode="bilinear"
        )
        return guided.abs().sum(dim=1)
