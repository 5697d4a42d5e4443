"""Meaningful Perturbation (Fong & Vedaldi, ICCV 2017, arXiv 1704.03296).

A low-resolution mask m in [0, 1]^(s x s) (1 keeps a pixel, 0 replaces it by the blurred
image) is upsampled bilinearly to M and blends the image x with its Gaussian blur x_b:

    x_m = M * x + (1 - M) * x_b + e,       e ~ N(0, noise_level^2 I) drawn anew each step,
    min_m  f(x_m) + l1_coeff * mean|1 - m| + tv_coeff * TV_beta(m),
    TV_beta(m) = mean |m_{i+1,j} - m_ij|^beta + mean |m_{i,j+1} - m_ij|^beta,

f the softmax probability of the target, Adam for ``n_iterations`` steps from m = 1, m clipped
to [0, 1] after each step. These are the common-practice choices of the widely used PyTorch
implementation (jacobgil/pytorch-explain-black-box): a fixed blurred image in place of the
paper's mask-dependent blur, a 28 x 28 mask, l1 0.01, TV 0.2 with beta 3, lr 0.1, and noise on
the perturbed input (their 0.2 on the normalised scale is about 0.05 on [0, 1]). The map is the
deletion mask 1 - m at the mask's resolution (N, s, s), s = min(mask_size, H, W).

Written by hand: captum has no mask-optimisation method. The masks of ``batch_size`` images are
optimised together, one forward and backward per step for all of them; Adam acts elementwise
and the losses add, so each mask follows exactly the path it would alone. The noise of each
image comes from its own generator seeded with ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from methods.base import Explainer, batches, check_images, model_device, resolve_targets
from methods.superpixels import gaussian_blur


def total_variation(masks: torch.Tensor, beta: float) -> torch.Tensor:
    """TV_beta of each mask (N, 1, s, s): mean |vertical diff|^beta + mean |horizontal|^beta."""
    vertical = (masks[..., 1:, :] - masks[..., :-1, :]).abs().pow(beta).mean(dim=(1, 2, 3))
    horizontal = (masks[..., :, 1:] - masks[..., :, :-1]).abs().pow(beta).mean(dim=(1, 2, 3))
    return vertical + horizontal


class MeaningfulPerturbation(Explainer):
    """Fong & Vedaldi's blur-deletion mask; ``n_iterations`` forward+backward per image."""

    name = "meaningful-perturbation"

    def __init__(
        self,
        mask_size: int = 28,
        n_iterations: int = 300,
        learning_rate: float = 0.1,
        l1_coeff: float = 0.01,
        tv_coeff: float = 0.2,
        tv_beta: float = 3.0,
        blur_sigma_fraction: float = 10 / 224,
        noise_level: float = 0.05,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        if mask_size < 2:
            raise ValueError(f"mask_size must be >= 2, got {mask_size}")
        if n_iterations < 1:
            raise ValueError(f"n_iterations must be >= 1, got {n_iterations}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.mask_size = mask_size
        self.n_iterations = n_iterations
        self.learning_rate = learning_rate
        self.l1_coeff = l1_coeff
        self.tv_coeff = tv_coeff
        self.tv_beta = tv_beta
        self.blur_sigma_fraction = blur_sigma_fraction
        self.noise_level = noise_level
        self.batch_size = batch_size
        self.seed = seed

    def _optimise(
        self, model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        height, width = images.shape[-2:]
        side = min(self.mask_size, height, width)
        blurred = gaussian_blur(images, self.blur_sigma_fraction * min(height, width))
        masks = torch.ones(images.shape[0], 1, side, side, device=images.device)
        masks.requires_grad_(True)
        optimiser = torch.optim.Adam([masks], lr=self.learning_rate)
        generators = [
            torch.Generator(device=images.device).manual_seed(self.seed)
            for _ in range(images.shape[0])
        ]
        for _ in range(self.n_iterations):
            upsampled = F.interpolate(
                masks, size=(height, width), mode="bilinear", align_corners=False
            )
            perturbed = upsampled * images + (1 - upsampled) * blurred
            if self.noise_level > 0:
                noise = torch.stack(
                    [
                        torch.randn(images.shape[1:], generator=g, device=images.device)
                        for g in generators
                    ]
                )
                perturbed = perturbed + self.noise_level * noise
            probabilities = torch.softmax(model(perturbed).float(), dim=1)
            scores = probabilities.gather(1, targets[:, None])[:, 0]
            losses = (
                scores
                + self.l1_coeff * (1 - masks).abs().mean(dim=(1, 2, 3))
                + self.tv_coeff * total_variation(masks, self.tv_beta)
            )
            (masks.grad,) = torch.autograd.grad(losses.sum(), masks)
            optimiser.step()
            with torch.no_grad():
                masks.clamp_(0, 1)
        return 1 - masks.detach()[:, 0]

    def explain(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        targets: Sequence[int] | torch.Tensor | None = None,
    ) -> np.ndarray:
        check_images(images)
        device = model_device(model)
        target_classes, _ = resolve_targets(model, images, targets, self.batch_size)
        parts = []
        with torch.enable_grad():
            for part in batches(images.shape[0], self.batch_size):
                inputs = images[part].to(device).float()
                parts.append(self._optimise(model, inputs, target_classes[part]).cpu())
        return torch.cat(parts).numpy().astype(np.float32)
