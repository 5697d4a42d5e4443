"""Meaningful Perturbation (Fong & Vedaldi, ICCV 2017, arXiv 1704.03296).

A low-resolution mask m in [0, 1]^(s x s) (1 keeps a pixel, 0 replaces it by the perturbation
image) is upsampled bilinearly to M and blends the image x with a perturbation image x_p:

    x_m = M * x + (1 - M) * x_p + e,     e ~ N(0, sigma_c^2) per channel, drawn anew each step,
    min_m  f(x_m) + l1_coeff * mean|1 - m| + tv_coeff * TV_beta(m),
    TV_beta(m) = mean |m_{i+1,j} - m_ij|^beta + mean |m_{i,j+1} - m_ij|^beta,

f the softmax probability of the target, Adam for ``n_iterations`` steps from m = 1, m clipped
to [0, 1] after each step. The map is the deletion mask 1 - m at the mask's resolution (N, s, s).

Point by point against the seed, the widely used PyTorch implementation
(jacobgil/pytorch-explain-black-box, ``explain.py`` as of commit e150e07; VGG19 at 224 px):

| choice | seed | legx default (preset ``legx``) | why they differ |
|---|---|---|---|
| perturbation image x_p | median blur, 11 px kernel, of the 224 px image (``blurred_img2``; the mean of it and an 11 x 11, sigma 5 Gaussian blur, which its README describes, is only drawn in the saved figure). The paper blurs each pixel with a Gaussian whose sigma follows the mask there, up to sigma_0 = 10 px where it deletes fully | a fixed Gaussian blur of sigma 10/224 of the side: the paper's blur at full deletion, fixed as the seed fixes its image | a mask-dependent blur needs a kernel per pixel and step (the seed's README gives the same reason); ``perturbation: median`` is the seed's image |
| mask resolution | 28 x 28 at 224 px: 8 px per cell | 28 x 28 cells at every size (``mask_size``): 2.3 px per cell at 64 px | kept from before; ``mask_cell_pixels: 8`` keeps the seed's 8 px cells at any size (8 x 8 at 64 px) |
| mask upsampling | ``UpsamplingBilinear2d``: bilinear, align_corners true | bilinear, align_corners false | torch's default since 0.4 (``align_corners``) |
| iterations | 500 | 300 | a forward budget: each step is a forward and a backward per image; docs/benchmarks/index.md measures what it costs |
| noise e | sigma 0.2 on the normalised input (0.045-0.05 on [0, 1] under ImageNet's std 0.224-0.229; 0.05 under the demo model's 0.25), as its README states; its line ``noise + cv2.randn(noise, 0, 0.2)`` adds the draw to itself where cv2.randn returns the array it fills (recent OpenCV does; the old one returned None, the error of its issue #1), so there the code runs with sigma 0.4 | sigma 0.05 on [0, 1] in every channel (``noise_level``, ``noise_space: pixels``) | the explainer sees a model on [0, 1]; ``noise_space: normalised`` scales the noise by the model's own std, as the seed does |
| l1, TV, beta, learning rate, start | 0.01 on mean abs(1 - m), 0.2 on TV_3, Adam lr 0.1, m = 1, m clipped to [0, 1] | the seed's | - |
| x_m clipped to [0, 1] | no | no | - |

``preset: seed`` sets every seed choice (median perturbation, 8 px cells, align_corners true,
500 iterations, noise 0.2 on the normalised input); a parameter given explicitly overrides its
preset's value; an unknown preset is an error that lists the known ones.

Written by hand: captum has no mask-optimisation method. The masks of ``batch_size`` images are
optimised together, one forward and backward per step for all of them; Adam acts elementwise
and the losses add, so each mask follows exactly the path it would alone. The noise of each
image comes from its own generator seeded with ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from legx.methods.base import Explainer, batches, explained_classes, input_normalisation, resolve_preset
from legx.methods.lazy_imports import torch
from legx.methods.superpixels import gaussian_blur

PERTURBATIONS = ("blur", "median")
NOISE_SPACES = ("pixels", "normalised")
SEED_SIDE = 224
SEED_MEDIAN_KERNEL = 11
# Every choice of the method under a name (see the module docstring's table).
PRESETS: dict[str, dict] = {
    "legx": {
        "mask_size": 28, "mask_cell_pixels": 0.0, "n_iterations": 300, "learning_rate": 0.1,
        "l1_coeff": 0.01, "tv_coeff": 0.2, "tv_beta": 3.0, "perturbation": "blur",
        "blur_sigma_fraction": 10 / 224, "noise_level": 0.05, "noise_space": "pixels",
        "align_corners": False,
    },
}
PRESETS["seed"] = {
    **PRESETS["legx"], "mask_cell_pixels": SEED_SIDE / 28, "n_iterations": 500, "perturbation": "median",
    "noise_level": 0.2, "noise_space": "normalised", "align_corners": True,
}


def median_blur(images: torch.Tensor, kernel: int) -> torch.Tensor:
    """Median filter of (N, C, H, W) over a square odd ``kernel``, borders replicated (as
    OpenCV's medianBlur)."""
    import torch.nn.functional as F

    radius = kernel // 2
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    windows = padded.unfold(2, kernel, 1).unfold(3, kernel, 1)
    return windows.reshape(*images.shape, kernel * kernel).median(dim=-1).values


def total_variation(masks: torch.Tensor, beta: float) -> torch.Tensor:
    """TV_beta of each mask (N, 1, s, s): mean |vertical diff|^beta + mean |horizontal|^beta."""
    vertical = (masks[..., 1:, :] - masks[..., :-1, :]).abs().pow(beta).mean(dim=(1, 2, 3))
    horizontal = (masks[..., :, 1:] - masks[..., :, :-1]).abs().pow(beta).mean(dim=(1, 2, 3))
    return vertical + horizontal


class MeaningfulPerturbation(Explainer):
    """Fong & Vedaldi's blur-deletion mask; ``n_iterations`` forward+backward per image.

    preset: 'legx' (default) or 'seed' (the table in the module docstring); every other
    parameter left None takes the preset's value. mask_size: cells per side; mask_cell_pixels:
    pixels per cell instead (0: use mask_size); perturbation: 'blur' | 'median';
    blur_sigma_fraction: the Gaussian's sigma over the image side; noise_level: the noise's sigma,
    on [0, 1] (noise_space 'pixels') or on the model's normalised input ('normalised', which
    needs a model that declares its mean and std); align_corners: of the bilinear upsampling.
    """

    name = "meaningful-perturbation"

    def __init__(
        self,
        preset: str = "legx",
        mask_size: int | None = None,
        mask_cell_pixels: float | None = None,
        n_iterations: int | None = None,
        learning_rate: float | None = None,
        l1_coeff: float | None = None,
        tv_coeff: float | None = None,
        tv_beta: float | None = None,
        perturbation: str | None = None,
        blur_sigma_fraction: float | None = None,
        noise_level: float | None = None,
        noise_space: str | None = None,
        align_corners: bool | None = None,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        given = {key: value for key, value in locals().items() if key in PRESETS["legx"]}
        values = resolve_preset(self.name, PRESETS, preset, given)
        if values["mask_size"] < 2:
            raise ValueError(f"mask_size must be >= 2, got {values['mask_size']}")
        if values["mask_cell_pixels"] < 0:
            raise ValueError(f"mask_cell_pixels must be >= 0 (0: mask_size cells), got {values['mask_cell_pixels']}")
        if values["n_iterations"] < 1:
            raise ValueError(f"n_iterations must be >= 1, got {values['n_iterations']}")
        if values["perturbation"] not in PERTURBATIONS:
            raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {values['perturbation']!r}")
        if values["noise_space"] not in NOISE_SPACES:
            raise ValueError(f"noise_space must be one of {NOISE_SPACES}, got {values['noise_space']!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.preset = preset
        self.mask_size = int(values["mask_size"])
        self.mask_cell_pixels = float(values["mask_cell_pixels"])
        self.n_iterations = int(values["n_iterations"])
        self.learning_rate = float(values["learning_rate"])
        self.l1_coeff = float(values["l1_coeff"])
        self.tv_coeff = float(values["tv_coeff"])
        self.tv_beta = float(values["tv_beta"])
        self.perturbation = values["perturbation"]
        self.blur_sigma_fraction = float(values["blur_sigma_fraction"])
        self.noise_level = float(values["noise_level"])
        self.noise_space = values["noise_space"]
        self.align_corners = bool(values["align_corners"])
        self.batch_size = batch_size
        self.seed = seed

    def mask_side(self, height: int, width: int) -> int:
        """Cells per side of the mask for an image: ``mask_size``, or the side over
        ``mask_cell_pixels`` when that is set; never more than the image's pixels."""
        side = self.mask_size if not self.mask_cell_pixels else max(2, round(min(height, width) / self.mask_cell_pixels))
        return min(side, height, width)

    def perturbation_image(self, images: torch.Tensor) -> torch.Tensor:
        """x_p: the Gaussian blur (sigma ``blur_sigma_fraction`` of the side) or the seed's median
        blur (an odd kernel of 11/224 of the side, at least 3 px, replicated borders as OpenCV)."""
        side = min(images.shape[-2:])
        if self.perturbation == "blur":
            return gaussian_blur(images, self.blur_sigma_fraction * side)
        kernel = max(3, 2 * round((SEED_MEDIAN_KERNEL / SEED_SIDE * side - 1) / 2) + 1)
        return median_blur(images, kernel)

    def _optimise(
        self, model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        import torch.nn.functional as F

        height, width = images.shape[-2:]
        side = self.mask_side(height, width)
        blurred = self.perturbation_image(images)
        noise_scale = torch.full((1, 3, 1, 1), self.noise_level, device=images.device)
        if self.noise_space == "normalised" and self.noise_level > 0:
            noise_scale = noise_scale * input_normalisation(model)[1].to(images.device)
        masks = torch.ones(images.shape[0], 1, side, side, device=images.device)
        masks.requires_grad_(True)
        optimiser = torch.optim.Adam([masks], lr=self.learning_rate)
        generators = [
            torch.Generator(device=images.device).manual_seed(self.seed)
            for _ in range(images.shape[0])
        ]
        for _ in range(self.n_iterations):
            upsampled = F.interpolate(
                masks, size=(height, width), mode="bilinear", align_corners=self.align_corners
            )
            perturbed = upsampled * images + (1 - upsampled) * blurred
            if self.noise_level > 0:
                noise = torch.stack(
                    [
                        torch.randn(images.shape[1:], generator=g, device=images.device)
                        for g in generators
                    ]
                )
                perturbed = perturbed + noise_scale * noise
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
        """Deletion masks 1 - m, (N, s, s) at the mask's resolution (``mask_side``): how much of
        each cell the optimised mask replaces by the perturbation image (1: all, 0: none)."""
        device, target_classes = explained_classes(model, images, targets, self.batch_size)
        parts = []
        with torch.enable_grad():
            for part in batches(images.shape[0], self.batch_size):
                inputs = images[part].to(device).float()
                parts.append(self._optimise(model, inputs, target_classes[part]).cpu())
        return torch.cat(parts).numpy().astype(np.float32)
