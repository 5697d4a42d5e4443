"""Model loading: every spec becomes an eval-mode module mapping [0, 1] RGB to logits.

Specs:
  demo                              the bundled demo CNN (methods/assets/demo_cnn.pt)
  torchvision:NAME                  a torchvision classifier with its DEFAULT weights (torchvision
                                    downloads them where the network allows)
  torchvision:NAME@PATH_OR_URI      the same architecture, weights (a state_dict) from a local
                                    path or an fsspec URI such as s3://bucket/resnet50.pth; a
                                    fine-tuned head (not 1000 classes) is sized from the weights
  PATH_OR_URI                       a TorchScript archive, or a legx checkpoint: a dict with
                                    'arch' (one of the specs above, without weights), 'state_dict'
                                    and optionally 'num_classes', 'class_names' and
                                    'image_size' (the side it was trained on)

Weights are read with torch.load(weights_only=True): a checkpoint cannot run code. The returned
module carries ``input_size`` (the square side it was trained on, or None where the file does
not say: see ``legx.methods.input_size``), ``model_id`` (the spec with a short hash of the weights'
bytes, so that two versions of a model never share an id; for DEFAULT torchvision weights the
hash torchvision publishes in their file name) and ``class_names`` (a list or None). s3:// URIs
find their endpoint as s3fs does (AWS_ENDPOINT_URL, ...) or through ``storage_options``.
"""

from __future__ import annotations

import hashlib
import io
import os
from importlib import resources
from typing import Any

import torch
from torch import nn

from legx.methods.demo_model import DemoCNN
from legx.methods.input_size import IMAGENET_INPUT_SIZE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_PREFIX = "torchvision:"


class NormalizedClassifier(nn.Module):
    """A network that expects normalised inputs, wrapped to take [0, 1] RGB."""

    def __init__(self, network: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network((images - self.mean) / self.std)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _read_bytes(uri: str, storage_options: dict | None) -> bytes:
    import fsspec

    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as handle:
            return handle.read()
    except FileNotFoundError as error:
        raise ValueError(f"model file not found: {uri}") from error


def _short_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:8]


def _load_weights(data: bytes, uri: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for foreign or unsafe pickles
        raise ValueError(f"{uri} is not a weights file torch.load(weights_only=True) accepts: {error}") from error


def _torchvision_network(name: str, weights: str | None, num_classes: int | None = None) -> nn.Module:
    import torchvision

    available = set(torchvision.models.list_models(module=torchvision.models))
    if name not in available:
        raise ValueError(
            f"unknown torchvision classifier {name!r}; e.g. resnet18, resnet50, vgg19, "
            f"efficientnet_b0, vit_b_16 (torchvision.models.list_models() lists them)"
        )
    extra = {"num_classes": num_classes} if num_classes else {}
    return torchvision.models.get_model(name, weights=weights, **extra)


def _default_weights_network(name: str) -> nn.Module:
    """``name`` with torchvision's DEFAULT weights, which torchvision downloads into torch's hub
    cache on first use; a failed download says what to do instead of how urllib failed."""
    try:
        return _torchvision_network(name, "DEFAULT")
    except OSError as error:  # urllib's URLError and HTTPError are OSErrors
        import torchvision

        url = torchvision.models.get_model_weights(name).DEFAULT.url
        reason = getattr(error, "reason", error)
        raise ValueError(
            f"torchvision:{name} needs its DEFAULT weights, and downloading them failed ({reason}); "
            f"this machine cannot reach {url.split('/')[2]}. Download {url} where the network allows, "
            f"copy it where every worker can read it (a local path or s3://...), and use the spec "
            f"'torchvision:{name}@PATH_OR_URI'; or put the file in torch's hub cache "
            f"(torch.hub.get_dir()/checkpoints/) on every node."
        ) from error


def _default_weights_hash(name: str) -> str:
    """The sha256 prefix torchvision puts in the DEFAULT weights' file name (resnet50-11ad3fa6.pth):
    the same short hash of the file's bytes that ids of weights files carry, known without a
    download, and different whenever torchvision changes what DEFAULT means."""
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return url.rsplit("/", 1)[-1].rsplit(".", 1)[0].rsplit("-", 1)[-1]


def _fine_tuned_classes(network: nn.Module, state_dict: Any) -> int | None:
    """The number of classes of a fine-tuned state_dict for ``network``: the output size of the
    weights of its last Linear layer where that differs from the network's; None otherwise."""
    linear_layers = [(key, module) for key, module in network.named_modules() if isinstance(module, nn.Linear)]
    if not linear_layers or not isinstance(state_dict, dict):
        return None
    key, layer = linear_layers[-1]
    weight = state_dict.get(f"{key}.weight")
    if isinstance(weight, torch.Tensor) and weight.ndim == 2 and weight.shape[0] != layer.out_features:
        return int(weight.shape[0])
    return None


def _torchvision_class_names(name: str) -> list[str] | None:
    import torchvision

    try:
        return list(torchvision.models.get_model_weights(name).DEFAULT.meta["categories"])
    except (ValueError, KeyError, AttributeError):
        return None


def _torchvision_input_size(name: str) -> int:
    """The crop size of ``name``'s DEFAULT weights' transforms (299 for inception_v3), else the
    ImageNet 224."""
    import torchvision

    try:
        transforms = torchvision.models.get_model_weights(name).DEFAULT.transforms
        return int(transforms.keywords.get("crop_size", IMAGENET_INPUT_SIZE))
    except (ValueError, KeyError, AttributeError, TypeError):
        return IMAGENET_INPUT_SIZE


def _architecture(arch: str, num_classes: int | None) -> nn.Module:
    """An untrained module for a checkpoint's 'arch' spec."""
    if arch == "demo":
        return DemoCNN(**({"n_classes": num_classes} if num_classes else {}))
    if arch.startswith(TORCHVISION_PREFIX):
        name = arch[len(TORCHVISION_PREFIX):]
        return NormalizedClassifier(_torchvision_network(name, None, num_classes))
    raise ValueError(f"unknown architecture {arch!r} in checkpoint; expected 'demo' or 'torchvision:NAME'")


def _apply_state_dict(module: nn.Module, state_dict: Any, source: str) -> None:
    if not isinstance(state_dict, dict):
        raise ValueError(f"{source}: expected a state_dict (a dict of tensors)")
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(f"{source}: weights do not fit the architecture: {error}") from error


def _from_checkpoint(checkpoint: dict, source: str) -> tuple[nn.Module, list[str] | None]:
    if "arch" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(
            f"{source} holds a bare state_dict with no architecture: load it with "
            f"'torchvision:NAME@{source}', or save a legx checkpoint "
            f"{{'arch': ..., 'state_dict': ...}}"
        )
    arch = str(checkpoint["arch"])
    module = _architecture(arch, checkpoint.get("num_classes"))
    if arch.startswith(TORCHVISION_PREFIX):
        _apply_state_dict(module.network, checkpoint["state_dict"], source)
    else:
        _apply_state_dict(module, checkpoint["state_dict"], source)
    class_names = checkpoint.get("class_names")
    if checkpoint.get("image_size"):
        module.input_size = int(checkpoint["image_size"])
    elif arch.startswith(TORCHVISION_PREFIX):
        module.input_size = _torchvision_input_size(arch[len(TORCHVISION_PREFIX):])
    return module, list(class_names) if class_names else None


def load_model(spec: str, device: str | None = None, storage_options: dict | None = None) -> nn.Module:
    """An eval-mode classifier for ``spec`` (see the module docstring) on ``device`` (default:
    CUDA when available). Raises ValueError with the reason for a spec it cannot load."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("model spec must be a non-empty string, e.g. 'demo' or 'torchvision:resnet50'")
    spec = spec.strip()
    if spec == "demo":
        data = resources.files("legx.methods").joinpath("assets/demo_cnn.pt").read_bytes()
        model, class_names = _from_checkpoint(_load_weights(data, "demo"), "demo")
        model_id = f"demo@{_short_hash(data)}"
    elif spec.startswith(TORCHVISION_PREFIX):
        name, _, weights_uri = spec[len(TORCHVISION_PREFIX):].partition("@")
        if not name:
            raise ValueError(f"model spec {spec!r} names no architecture: 'torchvision:resnet50'")
        if weights_uri:
            data = _read_bytes(weights_uri, storage_options)
            state_dict = _load_weights(data, weights_uri)
            network = _torchvision_network(name, None)
            num_classes = _fine_tuned_classes(network, state_dict)
            if num_classes is not None:
                network = _torchvision_network(name, None, num_classes)
            _apply_state_dict(network, state_dict, weights_uri)
            model_id = f"torchvision:{name}@{_short_hash(data)}"
            # ImageNet's category names only name the outputs of an ImageNet-sized head.
            class_names = None if num_classes is not None else _torchvision_class_names(name)
        else:
            network = _default_weights_network(name)
            model_id = f"torchvision:{name}@{_default_weights_hash(name)}"
            class_names = _torchvision_class_names(name)
        model = NormalizedClassifier(network)
        model.input_size = _torchvision_input_size(name)
    else:
        if "://" not in spec and not os.path.exists(spec):
            raise ValueError(
                f"model file not found: {spec!r} (a spec is 'demo', 'torchvision:NAME', "
                f"'torchvision:NAME@WEIGHTS', or the path or URI of a TorchScript or checkpoint file)"
            )
        data = _read_bytes(spec, storage_options)
        model_id = f"{spec.rsplit('/', 1)[-1]}@{_short_hash(data)}"
        if _is_torchscript(data):
            model, class_names = torch.jit.load(io.BytesIO(data), map_location="cpu"), None
        else:
            weights = _load_weights(data, spec)
            if not isinstance(weights, dict):
                raise ValueError(f"{spec}: not a TorchScript archive nor a legx checkpoint dict")
            model, class_names = _from_checkpoint(weights, spec)
    model = model.eval().to(device or default_device())
    model.input_size = getattr(model, "input_size", None)
    model.model_id = model_id
    model.class_names = class_names
    return model


def _is_torchscript(data: bytes) -> bool:
    """TorchScript archives are zip files holding a code/ folder; torch.save files hold none."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return any("/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False
