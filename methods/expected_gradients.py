"""Expected Gradients (Erion, Janizek, Sturmfels, Lundberg, Lee, Nature MI 2021, arXiv 1906.10670).

Integrated Gradients with the baseline and the path position drawn at random:

    phi(x) = E_{x' ~ D, a ~ U(0, 1), e ~ N(0, s^2 I)} [ (x - x') * grad f(x' + a (x - x') + e) ],

f the target logit, D the background distribution, s the optional local smoothing noise (as in
shap's ``GradientExplainer(local_smoothing=...)``). Averaged over ``n_samples`` draws per image;
phi sums, in expectation (s = 0), to f(x) - E_D f(x'). The map is phi summed over colour
channels, signed, at the image's resolution (N, H, W).

Background: a tensor (B, 3, H', W') in [0, 1] (e.g. images of the dataset; resized to each image
if needed), or a distribution by name: 'uniform' (U[0, 1] noise images), 'black', 'gray' or
'blur' (the image's own blurred copy).

Written by hand rather than with captum's ``GradientShap`` (the same estimator): captum draws the
samples of a whole batch from the global generator in one expanded forward, so an image's map
depends on its batch neighbours and the forward size is n_samples x batch. Here each image
draws its samples from its own generator seeded with ``seed`` (the same map in any batch), and
the points of all images are cut into forward/backward passes of ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from legx.methods.base import Explainer, batches, explained_classes
from legx.methods.lazy_imports import torch
from legx.methods.superpixels import BASELINES, baseline_images

DISTRIBUTIONS = ("uniform", *BASELINES)


class ExpectedGradients(Explainer):
    """Expected Gradients of the target logit; ``n_samples`` forward+backward passes per image."""

    name = "expected-gradients"

    def __init__(
        self,
        n_samples: int = 64,
        background: str | torch.Tensor = "uniform",
        noise_level: float = 0.0,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if noise_level < 0:
            raise ValueError(f"noise_level must be >= 0, got {noise_level}")
        # A distribution's name is checked first: it needs no torch (config validation).
        if isinstance(background, str) and background in DISTRIBUTIONS:
            self._background_set: torch.Tensor | None = None
            self.background = background
        elif isinstance(background, torch.Tensor):
            if background.ndim != 4 or background.shape[1] != 3 or background.shape[0] == 0:
                raise ValueError(
                    f"background must have shape (B, 3, H, W), got {tuple(background.shape)}"
                )
            self._background_set = background.detach().float().cpu()
            self.background = f"tensor of {background.shape[0]} images"
        else:
            raise ValueError(f"background must be a tensor or one of {DISTRIBUTIONS}")
        self.n_samples = n_samples
        self.noise_level = noise_level
        self.batch_size = batch_size
        self.seed = seed

    def _draw(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Path points and (x - x') of one image (3, H, W), from its own seeded generator."""
        import torch.nn.functional as F

        generator = torch.Generator().manual_seed(self.seed)
        shape = (self.n_samples, *image.shape)
        if self._background_set is not None:
            picks = torch.randint(len(self._background_set), (self.n_samples,), generator=generator)
            references = self._background_set[picks]
            if references.shape[-2:] != image.shape[-2:]:
                references = F.interpolate(
                    references, size=image.shape[-2:], mode="bilinear", align_corners=False
                )
        elif self.background == "uniform":
            references = torch.rand(shape, generator=generator)
        else:
            references = baseline_images(image[None], self.background).expand(shape)
        alphas = torch.rand(self.n_samples, 1, 1, 1, generator=generator)
        differences = image[None] - references
        points = references + alphas * differences
        if self.noise_level > 0:
            points = points + self.noise_level * torch.randn(shape, generator=generator)
        return points, differences

    def explain(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        targets: Sequence[int] | torch.Tensor | None = None,
    ) -> np.ndarray:
        """Maps (N, H, W) at the image's resolution: the expected gradients summed over the
        colour channels."""
        device, target_classes = explained_classes(model, images, targets, self.batch_size)
        cpu_images = images.detach().float().cpu()
        maps = np.zeros((images.shape[0], *images.shape[-2:]), dtype=np.float32)
        # Enough images per group to fill a forward; a group's points are cut into batches.
        group_size = max(1, self.batch_size // self.n_samples)
        for group in batches(images.shape[0], group_size):
            drawn = [self._draw(image) for image in cpu_images[group]]
            points = torch.cat([pair[0] for pair in drawn])
            differences = torch.cat([pair[1] for pair in drawn])
            owners = target_classes[group].repeat_interleave(self.n_samples)
            gradients = torch.empty_like(points)
            for part in batches(points.shape[0], self.batch_size):
                with torch.enable_grad():
                    inputs = points[part].to(device).requires_grad_(True)
                    logits = model(inputs).float()
                    score = logits.gather(1, owners[part].to(device)[:, None]).sum()
                    (gradient,) = torch.autograd.grad(score, inputs)
                gradients[part] = gradient.detach().float().cpu()
            attributions = (gradients * differences).view(-1, self.n_samples, *points.shape[1:])
            maps[group] = attributions.mean(dim=1).sum(dim=1).numpy()
        return maps
