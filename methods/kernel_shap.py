"""Kernel SHAP over SLIC superpixels (Lundberg & Lee, NeurIPS 2017, arXiv 1705.07874).

The Shapley value of superpixel j for the game v(S) = f(x_S) (superpixels outside S replaced by
the baseline, f the softmax probability of the target) is the solution of the weighted linear
regression  min_w sum_z pi(z) (v(z) - w0 - w^T z)^2  with the Shapley kernel
pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|)). captum's ``KernelShap`` samples coalitions from
that kernel (so the fit is unweighted), pins the empty and full coalitions, and batches
``perturbations_per_eval`` = ``batch_size`` coalitions per forward. The map has the image's
resolution (N, H, W): each pixel carries its superpixel's Shapley value estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from methods.base import Explainer
from methods.lazy_imports import torch
from methods.superpixels import BASELINES, explain_superpixels, probability_of


class KernelSHAP(Explainer):
    """Kernel SHAP with SLIC superpixels; ``n_samples`` model forwards per image."""

    name = "kernel-shap"

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

    def explain(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        targets: Sequence[int] | torch.Tensor | None = None,
    ) -> np.ndarray:
        from captum.attr import KernelShap as CaptumKernelShap

        return explain_superpixels(
            CaptumKernelShap(probability_of(model)).attribute,
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
