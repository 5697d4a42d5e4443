"""The input size a model spec declares, known without loading the model (no torch).

A classifier reads its objects at the scale it was trained on: the bundled demo CNN learned
shapes of about 18 px in 64 px images, torchvision's ImageNet classifiers learned from 224 px
crops. Resized to another size, the objects change scale and the model may no longer recognise
them, and every explanation of it then explains a model that cannot see the object. So a job's
``image_size`` defaults to the size its model declares:

    demo                   64   (``legx.methods.models.demo.DemoCNN.input_size``)
    torchvision:NAME[@W]   224  (the ImageNet crop; a loaded model reports the crop size of its
                                 DEFAULT weights' transforms, 299 for inception_v3, and the job
                                 warns when the size it runs at differs)
    a file or URI          none: TorchScript archives and checkpoints are read by the job's
                           actors only, so their size comes from the config (``image_size``)

Kept apart from ``legx.methods.models.loading`` (torch) so that config validation can resolve the default.
"""

from __future__ import annotations

DEMO_INPUT_SIZE = 64
IMAGENET_INPUT_SIZE = 224
TORCHVISION_PREFIX = "torchvision:"


def declared_input_size(spec: str) -> int | None:
    """The square input side that ``spec`` declares (see the module docstring); None when only
    the loaded file could tell."""
    spec = spec.strip() if isinstance(spec, str) else ""
    if spec == "demo":
        return DEMO_INPUT_SIZE
    if spec.startswith(TORCHVISION_PREFIX):
        return IMAGENET_INPUT_SIZE
    return None
