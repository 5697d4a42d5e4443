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
resolution (N, H, W). Defaults follow the reference (3 x 3 kernel, 3 blocks of 3 layers,
l1 1.0) except the number of steps: 300 instead of 1000, for budget.

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
import torch
import torch.nn.functional as F
from scipy.ndimage import grey_dilation

from methods.base import Explainer, batches, check_images, model_device, resolve_targets


class CNNPerturbation(Explainer):
    """Per-image learned perturbation generator; ``n_iterations`` forward+backward per image."""

    name = "cnn-perturbation"

    def __init__(
        self,
        kernel_size: int = 3,
        n_blocks: int = 3,
        n_layers: int = 3,
        n_iterations: int = 300,
        learning_rate: float = 0.01,
        l1_coeff: float = 1.0,
        power: float = 6.0,
        edge_fraction: float = 0.1,
        dilation_fraction: float = 20 / 224,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if n_blocks < 1 or n_layers < 1 or n_iterations < 1:
            raise ValueError("n_blocks, n_layers and n_iterations must be >= 1")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= edge_fraction < 0.5:
            raise ValueError(f"edge_fraction must lie in [0, 0.5), got {edge_fraction}")
        self.kernel_size = kernel_size
        self.n_blocks = n_blocks
        self.n_layers = n_layers
        self.n_iterations = n_iterations
        self.learning_rate = learning_rate
        self.l1_coeff = l1_coeff
        self.power = power
        self.edge_fraction = edge_fraction
        self.dilation_fraction = dilation_fraction
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

    def _optimise(self, model, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight, bias = self._initial_weights(images.shape[0], images.device)
        optimiser = torch.optim.Adam([weight, bias], lr=self.learning_rate)
        for _ in range(self.n_iterations):
            perturbed = self._perturb(images, weight, bias)
            probabilities = torch.softmax(model(perturbed).float(), dim=1)
            scores = probabilities.gather(1, targets[:, None])[:, 0]
            losses = scores + self.l1_coeff * (images - perturbed).abs().mean(dim=(1, 2, 3))
            weight.grad, bias.grad = torch.autograd.grad(losses.sum(), [weight, bias])
            optimiser.step()
        with torch.no_grad():
            return self._perturb(images, weight, bias)

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
        check_images(images)
        device = model_device(model)
        target_classes, _ = resolve_targets(model, images, targets, self.batch_size)
        maps = np.zeros((images.shape[0], *images.shape[-2:]), dtype=np.float32)
        with torch.enable_grad():
            for part in batches(images.shape[0], self.batch_size):
                inputs = images[part].to(device).float()
                perturbed = self._optimise(model, inputs, target_classes[part])
                for offset, index in enumerate(range(part.start, part.stop)):
                    maps[index] = self._post_process(
                        inputs[offset].cpu().numpy(), perturbed[offset].cpu().numpy()
                    )
        return maps
