"""CNN perturbation: a perturbation generator network learned per image.

From "Deep Explanation: Using AI for Explaining the Results of AI" (R. Fernandez,
roberto1648/deep-explanation-using-ai-for-explaining-the-results-of-ai). A small convolutional
network G (one 3 -> 3 conv of ``kernel_size``, applied ``n_layers`` times in each of
``n_blocks`` blocks, a ReLU closing each block) maps the image x to a perturbed image, rescaled
to x's value range [min x, max x]. Its weights are trained for the image alone:

    min_G  f(G(x)) + l1_coeff * mean|x - G(x)|,

f the softmax probability of the target, Adam (lr 0.01). The map post-processes the optimal
difference as the reference does: d = (mean_c x - mean_c G(x))^power (power 6, a soft
threshold), a border of ``edge_fraction`` of each side set to 0 (zero padding artefacts), then
a grey dilation with a square of ``dilation_fraction`` of the image side (20 px at 224). Image
resolution (N, H, W).

Point by point against the seed (its notebook and ``deep_explanation.py``; VGG19 at 224 px):

| choice | seed | legx default (preset ``legx``) | why they differ |
|---|---|---|---|
| epochs (steps) | 1000 | 300 (``n_iterations``) | a forward budget: each step is a forward and a backward per image; docs/benchmarks/index.md measures what it costs |
| space of x in G, the L1 term and d | the model's normalised input (ImageNet mean/std: the generator sees, and is rescaled to, the normalised image; the L1 and the difference are taken there) | [0, 1] pixels (``input_space: pixels``) | the explainer sees a model on [0, 1]. On the normalised scale the L1 term weighs about 1/std (4.4x for ImageNet, 4x for the demo model) more, so the seed's generator may change the image less; ``input_space: normalised`` works on the model's own normalisation, as the seed does |
| generator | 3 x 3 kernel, 3 blocks of 3 layers, one shared conv, PyTorch's default init | the seed's (its examples also run 2 blocks) | - |
| l1 coefficient, optimiser | 1.0, Adam lr 0.01 | the seed's | - |
| power | 6 | 6 | - |
| borders | int(0.1 H) rows and int(0.1 W) columns on each side set to 0 | ``edge_fraction`` 0.1, the same rule at any size | - |
| dilation | skimage grey dilation, 20 x 20 square at 224 px | ``scipy.ndimage.grey_dilation``, a square of 20/224 of the side (6 x 6 at 64 px) | the seed's size scaled with the image; an even square's centre falls half a pixel apart between the two libraries |

``preset: seed`` sets every seed choice (1000 steps, the normalised space); a parameter given
explicitly overrides its preset's value; an unknown preset is an error that lists the known ones.

Written by hand: no library implements it. The generators of ``batch_size`` images are trained
together as one grouped convolution (group i holds image i's generator), so one forward and
backward per step covers all of them; Adam acts elementwise and the losses add, so each
generator follows exactly the path it would alone. Every generator starts from the same
PyTorch-default initialisation drawn from a generator seeded with ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import grey_dilation

from legx.methods.base import Explainer, batches, explained_classes, input_normalisation, resolve_preset
from legx.methods.lazy_imports import torch

INPUT_SPACES = ("pixels", "normalised")
# Every choice of the method under a name (see the module docstring's table).
PRESETS: dict[str, dict] = {
    "legx": {
        "kernel_size": 3, "n_blocks": 3, "n_layers": 3, "n_iterations": 300, "learning_rate": 0.01,
        "l1_coeff": 1.0, "power": 6.0, "edge_fraction": 0.1, "dilation_fraction": 20 / 224,
        "input_space": "pixels",
    },
}
PRESETS["seed"] = {**PRESETS["legx"], "n_iterations": 1000, "input_space": "normalised"}


class CNNPerturbation(Explainer):
    """Per-image learned perturbation generator; ``n_iterations`` forward+backward per image.

    preset: 'legx' (default) or 'seed' (the table in the module docstring); every other
    parameter left None takes the preset's value. input_space: 'pixels' ([0, 1]) or
    'normalised' (the model's normalised input, which needs a model that declares its mean and
    std: the generator, the L1 term and the map's difference work there).
    """

    name = "cnn-perturbation"

    def __init__(
        self,
        preset: str = "legx",
        kernel_size: int | None = None,
        n_blocks: int | None = None,
        n_layers: int | None = None,
        n_iterations: int | None = None,
        learning_rate: float | None = None,
        l1_coeff: float | None = None,
        power: float | None = None,
        edge_fraction: float | None = None,
        dilation_fraction: float | None = None,
        input_space: str | None = None,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        given = {key: value for key, value in locals().items() if key in PRESETS["legx"]}
        values = resolve_preset(self.name, PRESETS, preset, given)
        kernel_size = values["kernel_size"]
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if values["n_blocks"] < 1 or values["n_layers"] < 1 or values["n_iterations"] < 1:
            raise ValueError("n_blocks, n_layers and n_iterations must be >= 1")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= values["edge_fraction"] < 0.5:
            raise ValueError(f"edge_fraction must lie in [0, 0.5), got {values['edge_fraction']}")
        if values["input_space"] not in INPUT_SPACES:
            raise ValueError(f"input_space must be one of {INPUT_SPACES}, got {values['input_space']!r}")
        self.preset = preset
        self.kernel_size = int(kernel_size)
        self.n_blocks = int(values["n_blocks"])
        self.n_layers = int(values["n_layers"])
        self.n_iterations = int(values["n_iterations"])
        self.learning_rate = float(values["learning_rate"])
        self.l1_coeff = float(values["l1_coeff"])
        self.power = float(values["power"])
        self.edge_fraction = float(values["edge_fraction"])
        self.dilation_fraction = float(values["dilation_fraction"])
        self.input_space = values["input_space"]
        self.batch_size = batch_size
        self.seed = seed

    def _initial_weights(self, count: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        # nn.Conv2d's default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both.
        generator = torch.Generator().manual_seed(self.seed)
        bound = 1 / math.sqrt(3 * self.kernel_size**2)
        weight = (torch.rand(3, 3, self.kernel_size, self.kernel_size, generator=generator) * 2 - 1)
        bias = torch.rand(3, generator=generator) * 2 - 1
        return (
            (bound * weight).repeat(count, 1, 1, 1).to(device).requires_grad_(True),
            (bound * bias).repeat(count).to(device).requires_grad_(True),
        )

    def _perturb(self, images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        import torch.nn.functional as F

        count, channels, height, width = images.shape
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        span = (images - low).amax(dim=(1, 2, 3), keepdim=True)
        hidden = images.reshape(1, count * channels, height, width)
        for _ in range(self.n_blocks):
            for _ in range(self.n_layers):
                hidden = F.conv2d(hidden, weight, bias, padding=self.kernel_size // 2, groups=count)
            hidden = F.relu(hidden)
        hidden = hidden.reshape(count, channels, height, width)
        hidden = hidden - hidden.amin(dim=(1, 2, 3), keepdim=True)
        hidden = hidden / hidden.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        return hidden * span + low

    def _optimise(self, model, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images in the generator's space (``input_space``) and the trained generators'
        outputs there."""
        inputs, mean, std = images, 0.0, 1.0
        if self.input_space == "normalised":
            mean, std = (value.to(images.device) for value in input_normalisation(model))
            inputs = (images - mean) / std
        weight, bias = self._initial_weights(images.shape[0], images.device)
        optimiser = torch.optim.Adam([weight, bias], lr=self.learning_rate)
        for _ in range(self.n_iterations):
            perturbed = self._perturb(inputs, weight, bias)
            probabilities = torch.softmax(model(perturbed * std + mean).float(), dim=1)
            scores = probabilities.gather(1, targets[:, None])[:, 0]
            losses = scores + self.l1_coeff * (inputs - perturbed).abs().mean(dim=(1, 2, 3))
            weight.grad, bias.grad = torch.autograd.grad(losses.sum(), [weight, bias])
            optimiser.step()
        with torch.no_grad():
            return inputs, self._perturb(inputs, weight, bias)

    def _post_process(self, image: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
        difference = np.abs(image.mean(axis=0) - perturbed.mean(axis=0)) ** self.power
        height, width = difference.shape
        rows, cols = int(self.edge_fraction * height), int(self.edge_fraction * width)
        difference[:rows], difference[height - rows :] = 0, 0
        difference[:, :cols], difference[:, width - cols :] = 0, 0
        side = max(1, round(self.dilation_fraction * min(height, width)))
        return grey_dilation(difference, size=(side, side))

    def explain(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        targets: Sequence[int] | torch.Tensor | None = None,
    ) -> np.ndarray:
        """Maps (N, H, W) at the image's resolution: the post-processed difference of each
        image from its trained generator's output."""
        device, target_classes = explained_classes(model, images, targets, self.batch_size)
        maps = np.zeros((images.shape[0], *images.shape[-2:]), dtype=np.float32)
        with torch.enable_grad():
            for part in batches(images.shape[0], self.batch_size):
                inputs, perturbed = self._optimise(model, images[part].to(device).float(), target_classes[part])
                for offset, index in enumerate(range(part.start, part.stop)):
                    maps[index] = self._post_process(
                        inputs[offset].cpu().numpy(), perturbed[offset].cpu().numpy()
                    )
        return maps
