"""Superpixels and the superpixel surrogate shared by LIME and Kernel SHAP.

LIME (Ribeiro et al., KDD 2016, arXiv 1602.04938) and Kernel SHAP (Lundberg & Lee, NeurIPS
2017, arXiv 1705.07874) explain an image through M interpretable features, the SLIC
superpixels of the image (Achanta et al., TPAMI 2012). A binary vector z in {0, 1}^M switches
superpixels on (original pixels) or off (baseline pixels); the model score f(x_z) of many such
images is regressed on z with sample weights pi(z), and the coefficient of superpixel j is its
attribution, painted back on all its pixels. The two methods differ only in pi and the sampling
of z, which captum's ``Lime`` and ``KernelShap`` implement; this module supplies what they share:
the segmentation, the baseline image, the scored model, the per-image loop, and
``SuperpixelExplainer``, their common parameters and call (a method supplies captum's
``attribute``).

The explained score is the softmax probability of the target class, as the LIME and SHAP
libraries explain ``predict_proba``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import numpy as np
from skimage.segmentation import slic

from legx.methods.base import Explainer, explained_classes
from legx.methods.lazy_imports import torch

BASELINES = ("gray", "black", "blur")


def slic_segments(
    image: torch.Tensor, n_segments: int, compactness: float = 10.0, sigma: float = 1.0
) -> np.ndarray:
    """SLIC superpixels of one image (3, H, W) in [0, 1]: int64 labels (H, W), 0..M-1."""
    pixels = image.detach().float().cpu().permute(1, 2, 0).numpy()
    labels = slic(
        pixels,
        n_segments=n_segments,
        compactness=compactness,
        sigma=sigma,
        start_label=0,
        channel_axis=-1,
    )
    # SLIC may skip label values; consecutive labels keep M equal to the number of segments.
    _, consecutive = np.unique(labels, return_inverse=True)
    return consecutive.reshape(labels.shape).astype(np.int64)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflect padding, kernel radius 3 sigma."""
    import torch.nn.functional as F

    if sigma <= 0:
        return images.clone()
    height, width = images.shape[-2:]
    radius = max(1, min(int(np.ceil(3 * sigma)), height - 1, width - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def baseline_images(images: torch.Tensor, kind: str, blur_sigma: float = 5.0) -> torch.Tensor:
    """What a switched-off region becomes: 'gray' (0.5), 'black' (0) or 'blur' (Gaussian)."""
    if kind == "gray":
        return torch.full_like(images, 0.5)
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "blur":
        return gaussian_blur(images, blur_sigma)
    raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")


def probability_of(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's softmax probabilities, the score the perturbation methods explain."""

    def forward(images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(images).float(), dim=1)

    return forward


def explain_superpixels(
    attribute: Callable[..., torch.Tensor],
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: Sequence[int] | torch.Tensor | None,
    *,
    n_segments: int,
    compactness: float,
    slic_sigma: float,
    baseline: str,
    n_samples: int,
    batch_size: int,
    seed: int,
) -> np.ndarray:
    """Superpixel attributions of every image, painted on its pixels: float32 (N, H, W).

    ``attribute(image, target, baselines, feature_mask, n_samples, perturbations_per_eval)`` is
    a captum ``attribute`` returning one coefficient per superpixel. Each image draws its
    samples from the torch generator seeded with ``seed``, so an image gets the same map
    whatever else is in the batch.
    """
    device, target_classes = explained_classes(model, images, targets, batch_size)
    references = baseline_images(images, baseline)
    maps = np.zeros((images.shape[0], *images.shape[-2:]), dtype=np.float32)
    for index in range(images.shape[0]):
        segments = slic_segments(images[index], n_segments, compactness, slic_sigma)
        feature_mask = torch.from_numpy(segments).to(device).expand(1, 3, *segments.shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            coefficients = attribute(
                images[index : index + 1].to(device),
                target=int(target_classes[index]),
                baselines=references[index : index + 1].to(device),
                feature_mask=feature_mask,
                n_samples=n_samples,
                perturbations_per_eval=batch_size,
                return_input_shape=False,
            )
        weights = coefficients.detach().float().cpu().numpy().reshape(-1)
        maps[index] = weights[segments]
    return maps


class SuperpixelExplainer(Explainer):
    """A surrogate over SLIC superpixels (LIME, Kernel SHAP); ``n_samples`` model forwards per
    image. ``n_segments``, ``compactness`` and ``slic_sigma`` are SLIC's; ``baseline`` is what a
    switched-off superpixel becomes (``baseline_images``); every image draws its samples from
    ``seed``."""

    def __init__(
        self,
        n_samples: int = 1000,
        n_segments: int = 50,
        compactness: float = 10.0,
        slic_sigma: float = 1.0,
        baseline: str = "gray",
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        if n_samples < 2:
            raise ValueError(f"n_samples must be >= 2, got {n_samples}")
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
        self.n_samples = n_samples
        self.n_segments = n_segments
        self.compactness = compactness
        self.slic_sigma = slic_sigma
        self.baseline = baseline
        self.batch_size = batch_size
        self.seed = seed

    @abc.abstractmethod
    def _attribute(self, model: torch.nn.Module) -> Callable[..., torch.Tensor]:
        """The method's captum ``attribute`` for ``model`` (see ``explain_superpixels``)."""

    def explain(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        targets: Sequence[int] | torch.Tensor | None = None,
    ) -> np.ndarray:
        """Maps (N, H, W) at the image's resolution: each pixel carries its superpixel's
        coefficient."""
        return explain_superpixels(
            self._attribute(model),
            model,
            images,
            targets,
            n_segments=self.n_segments,
            compactness=self.compactness,
            slic_sigma=self.slic_sigma,
            baseline=self.baseline,
            n_samples=self.n_samples,
            batch_size=self.batch_size,
            seed=self.seed,
        )
