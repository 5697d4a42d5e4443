"""LIME over SLIC superpixels (Ribeiro, Singh, Guestrin, KDD 2016, arXiv 1602.04938).

For the M superpixels of the image, draw n binary vectors z ~ Bernoulli(1/2)^M, build x_z
(superpixels with z_j = 0 replaced by the baseline), and fit the weighted ridge regression

    min_w  sum_i pi(z_i) (f(x_{z_i}) - w0 - w^T z_i)^2 + alpha ||w||^2,
    pi(z) = sqrt(exp(-d(z)^2 / kernel_width^2)),  d(z) = 1 - cos(z, 1) = 1 - sqrt(|z| / M),

with f the softmax probability of the target. These are the ``lime`` package's image defaults
(cosine distance in the interpretable space, kernel width 0.25, Ridge(alpha=1)). captum's
``Lime`` does the sampling, batching (``perturbations_per_eval`` = ``batch_size``) and the fit;
only the kernel is given here, because captum's default measures distance between images
instead. The map has the image's resolution (N, H, W): each pixel carries its superpixel's w_j.
"""

from __future__ import annotations

from collections.abc import Callable

from legx.methods.lazy_imports import torch
from legx.methods.superpixels import SuperpixelExplainer, probability_of


class LIME(SuperpixelExplainer):
    """LIME with SLIC superpixels; ``n_samples`` model forwards per image."""

    name = "lime"

    def __init__(
        self,
        n_samples: int = 1000,
        n_segments: int = 50,
        compactness: float = 10.0,
        slic_sigma: float = 1.0,
        baseline: str = "gray",
        kernel_width: float = 0.25,
        ridge_alpha: float = 1.0,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__(n_samples, n_segments, compactness, slic_sigma, baseline, batch_size, seed)
        self.kernel_width = kernel_width
        self.ridge_alpha = ridge_alpha

    def _similarity(self, original, perturbed, interpretable, **kwargs) -> torch.Tensor:
        n_features = interpretable.shape[-1]
        on = interpretable.float().sum()
        distance = 1.0 - torch.sqrt(on / n_features)
        return torch.sqrt(torch.exp(-(distance**2) / self.kernel_width**2))

    def _attribute(self, model: torch.nn.Module) -> Callable[..., torch.Tensor]:
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr import Lime as CaptumLime

        lime = CaptumLime(
            probability_of(model),
            interpretable_model=SkLearnRidge(alpha=self.ridge_alpha),
            similarity_func=self._similarity,
        )
        return lime.attribute
