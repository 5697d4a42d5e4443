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

from collections.abc import Callable

from legx.methods.lazy_imports import torch
from legx.methods.superpixels import SuperpixelExplainer, probability_of


class KernelSHAP(SuperpixelExplainer):
    """Kernel SHAP with SLIC superpixels; ``n_samples`` model forwards per image."""

    name = "kernel-shap"

    def _attribute(self, model: torch.nn.Module) -> Callable[..., torch.Tensor]:
        from captum.attr import KernelShap as CaptumKernelShap

        return CaptumKernelShap(probability_of(model)).attribute
