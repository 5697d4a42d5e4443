"""Partition SHAP: hierarchical Owen values of image regions, by the ``shap`` library.

Owen values (Owen 1977) are Shapley values computed down a hierarchy of feature groups: a
group's value is the Shapley value of the group in the game among its siblings, and it is split
among its children by the same rule applied within the group, so a budget of e evaluations
explains the image at the depth of the hierarchy those evaluations reach (Lundberg et al.,
"From local explanations to global understanding", Nature MI 2020, and shap's
``PartitionExplainer``). With ``shap.maskers.Image`` the hierarchy is a balanced binary split of
the pixel grid (and colour channels), and a masked group takes the pixels of a baseline image;
the game is v(S) = f(x_S), f the softmax probability of the target class.

shap is used as is: ``PartitionExplainer`` with an ``Image`` masker whose mask value is the
chosen baseline of each image ('gray', 'black' or 'blur'; shap's own 'blur(...)' and 'inpaint'
maskers need OpenCV). ``max_evals`` model evaluations per image, in forwards of ``batch_size``
masked images. The recursion is deterministic (no sampling), so there is no seed. Images are
explained one at a time (shap's explainer loops over rows). The map has the image's resolution
(N, H, W): the attributions of the three channels of a pixel summed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from legx.methods.base import Explainer, explained_classes
from legx.methods.lazy_imports import torch
from legx.methods.superpixels import BASELINES, baseline_images


class PartitionSHAP(Explainer):
    """shap's Partition explainer with an image masker; ``max_evals`` forwards per image."""

    name = "partition-shap"

    def __init__(
        self, max_evals: int = 1000, baseline: str = "blur", batch_size: int = 64
    ) -> None:
        if max_evals < 3:
            raise ValueError(f"max_evals must be >= 3, got {max_evals}")
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
        self.max_evals = max_evals
        self.baseline = baseline
        self.batch_size = batch_size

    def explain(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        targets: Sequence[int] | torch.Tensor | None = None,
    ) -> np.ndarray:
        import shap

        device, target_classes = explained_classes(model, images, targets, self.batch_size)
        references = baseline_images(images, self.baseline)
        maps = np.zeros((images.shape[0], *images.shape[-2:]), dtype=np.float32)
        for index in range(images.shape[0]):
            target = int(target_classes[index])

            @torch.no_grad()
            def score(masked: np.ndarray, target: int = target) -> np.ndarray:
                batch = torch.from_numpy(np.ascontiguousarray(masked, dtype=np.float32))
                logits = model(batch.permute(0, 3, 1, 2).to(device)).float()
                return torch.softmax(logits, dim=1)[:, target : target + 1].cpu().numpy()

            image = images[index].detach().float().cpu().permute(1, 2, 0).numpy()
            reference = references[index].detach().float().cpu().permute(1, 2, 0).numpy()
            masker = shap.maskers.Image(reference, image.shape)
            explainer = shap.PartitionExplainer(score, masker)
            values = explainer(
                image[None], max_evals=self.max_evals, batch_size=self.batch_size, silent=True
            ).values
            maps[index] = np.asarray(values, dtype=np.float32).reshape(*image.shape).sum(-1)
        return maps
