"""Cross-check legx's ROAD against pytorch-grad-cam's and Quantus's own code, and time all three.

On the demo model and demo images, with Grad-CAM maps of the true label (legx's explainer,
upsampled to the image, then replaced by their ranks so that no two pixels tie and every
implementation removes the same pixels), and the imputation noise off:

* MoRF and LeRF curves of legx against pytorch-grad-cam's ``ROADMostRelevantFirst`` /
  ``ROADLeastRelevantFirst`` (its ``PerturbationConfidenceMetric`` with its
  ``NoisyLinearImputer(noise=0)``, softmax probability of the label, no difference to the clean
  score) at its percentiles 10..90, legx removing the same number of pixels its threshold rule
  removes;
* the same curves against Quantus's ``noisy_linear_imputation`` (noise 0) at percentages 10..90,
  pixels chosen as Quantus's ``ROAD.evaluate_batch`` chooses them (the first
  ``int(H * W * p / 100)`` of ``argsort(-map)``; LeRF: of ``argsort(map)``), then the same forwards;
* where the peers differ by design, shown: pytorch-grad-cam's threshold rule on the raw maps
  (ties at the threshold all go), Quantus's ``ROAD`` on RGB inputs, and what Quantus scores.

Then the time per image of each implementation at its defaults (noise 0.01, 9 fractions, both
orders) on the same maps and model, CPU, one torch thread each, in the same run.

The peers are not legx dependencies: install them into a development environment only,
``pip install --no-deps grad-cam quantus ttach opencv-python-headless``.

    python scripts/crosscheck_road.py --count 32 --out road_crosscheck.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from importlib.metadata import version

import numpy as np
import torch

import legx
from legx import methods
from legx.methods.metrics.road import linear_imputation, road_curves
from legx.methods.resize import upsample_maps
from legx.pipeline.demo.data import make_demo_arrays

PERCENTILES = list(range(10, 100, 10))
# The agreement asked of the curves with the noise off: legx's imputation stops at a relative
# residual of 1e-6 (float64) and pytorch-grad-cam returns float32 pixels; 1e-4 in probability
# is far below any difference between methods.
CURVE_TOLERANCE = 1e-4


def demo_inputs(count: int, seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Images (N, 3, 64, 64) in [0, 1], labels, and Grad-CAM maps of the labels at 64 x 64."""
    pixels, labels, _ = make_demo_arrays(count, seed=seed)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    model = methods.load_model("demo", device="cpu")
    coarse = methods.get_explainer("grad-cam").explain(model, images, torch.from_numpy(labels))
    return images, labels, upsample_maps(coarse, 64, 64)


def tie_free(maps: np.ndarray, seed: int) -> np.ndarray:
    """Each map replaced by its pixels' ranks / (H W) (ties broken at random, once): the same
    order, no two pixels equal, values k / 4096 exact in float32 (and so is 1 - value)."""
    rng = np.random.default_rng(seed)
    flat = maps.reshape(len(maps), -1)
    order = np.lexsort((rng.random(flat.shape), flat), axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None].repeat(len(maps), 0), axis=1)
    return (ranks / flat.shape[1]).astype(np.float32).reshape(maps.shape)


def gradcam_removed_counts(cam: np.ndarray, percentile: float) -> tuple[int, int]:
    """Pixels pytorch-grad-cam's RemoveMostRelevantFirst / RemoveLeastRelevantFirst remove at
    ``percentile``: every pixel at or above the percentile threshold of the map (of 1 - map)."""
    morf = int((cam >= np.percentile(cam, percentile)).sum())
    lerf = int(((1 - cam) >= np.percentile(1 - cam, percentile)).sum())
    return morf, lerf


def probabilities(model, images: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(images), dim=1)[torch.arange(len(labels)), torch.from_numpy(labels)].numpy()


def gradcam_curves(model, images, cams, labels, noise: float) -> tuple[np.ndarray, np.ndarray]:
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    targets = [ClassifierOutputSoftmaxTarget(int(label)) for label in labels]
    curves = []
    for removal in (RemoveMostRelevantFirst, RemoveLeastRelevantFirst):
        curves.append(np.stack([
            PerturbationConfidenceMetric(removal(p, NoisyLinearImputer(noise=noise)))(
                images, cams, targets, model, return_diff=False)
            for p in PERCENTILES
        ], axis=1))
    return curves[0], curves[1]


def quantus_imputed(images: torch.Tensor, maps: np.ndarray, percentage: float, most_relevant_first: bool,
                    noise: float) -> torch.Tensor:
    """Quantus's ``noisy_linear_imputation`` of the pixels its ROAD loop removes at ``percentage``."""
    from quantus.functions.perturb_func import noisy_linear_imputation

    flat = maps.reshape(len(maps), -1)
    order = np.argsort(-flat if most_relevant_first else flat, axis=1)
    count = int(flat.shape[1] * percentage / 100)
    return torch.from_numpy(np.stack([
        noisy_linear_imputation(arr=image.numpy(), indices=order[index, :count], noise=noise)
        for index, image in enumerate(images)
    ])).float()


def quantus_curves(model, images, maps, labels, noise: float) -> tuple[np.ndarray, np.ndarray]:
    return tuple(
        np.stack([probabilities(model, quantus_imputed(images, maps, p, first, noise), labels) for p in PERCENTILES],
                 axis=1)
        for first in (True, False)
    )


def quantus_road_on_rgb(model, images, maps, labels) -> str:
    """What ``quantus.ROAD`` itself does with RGB images and one map per image."""
    import quantus

    metric = quantus.ROAD(percentages=PERCENTILES, noise=0.0, disable_warnings=True)
    try:
        metric(model=model, x_batch=images.numpy(), y_batch=labels, a_batch=maps[:, None], device="cpu")
    except Exception as error:  # noqa: BLE001 - the failure is what is reported
        return f"{type(error).__name__}: {error}"
    return "ran"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-count", type=int, default=8, help="images timed per peer")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = methods.load_model("demo", device="cpu")
    images, labels, raw_maps = demo_inputs(args.count, args.seed)
    maps = tie_free(raw_maps, args.seed)
    n_pixels = maps[0].size
    lines = [f"# ROAD cross-check ({args.count} demo images, demo model, noise off)", "",
             f"legx {legx.__version__}, pytorch-grad-cam {version('grad-cam')}, quantus {version('quantus')},"
             f" torch {torch.__version__}, {platform.machine()}, load average {os.getloadavg()[0]:.1f}", ""]

    # 1. pytorch-grad-cam: legx removes exactly the pixels its threshold rule removes.
    counts = np.array([[gradcam_removed_counts(m, p) for p in PERCENTILES] for m in maps])  # (N, P, 2)
    assert (counts == counts[:1]).all(), "tie-free maps: the same counts for every map"
    morf_fractions, lerf_fractions = counts[0, :, 0] / n_pixels, counts[0, :, 1] / n_pixels
    legx_morf = road_curves(model, images, maps, labels, fractions=morf_fractions[::-1], noise=0.0)[0][:, ::-1]
    legx_lerf = road_curves(model, images, maps, labels, fractions=lerf_fractions[::-1], noise=0.0)[1][:, ::-1]
    gc_morf, gc_lerf = gradcam_curves(model, images, maps, labels, noise=0.0)
    gc_error = max(np.abs(legx_morf - gc_morf).max(), np.abs(legx_lerf - gc_lerf).max())
    lines += ["## pytorch-grad-cam (ROADMostRelevantFirst / ROADLeastRelevantFirst, noise 0)", "",
              f"Percentile p removes {counts[0, :, 0].tolist()} pixels (MoRF) and {counts[0, :, 1].tolist()}"
              f" (LeRF) of {n_pixels} for p = {PERCENTILES}: the (100 - p)% above its threshold.",
              f"Max |legx - pytorch-grad-cam| over {args.count} images x 9 percentiles x 2 orders:"
              f" {gc_error:.2e} (tolerance {CURVE_TOLERANCE:g}): {'AGREE' if gc_error <= CURVE_TOLERANCE else 'DIFFER'}.",
              ""]

    # 2. Quantus: its imputer on the pixels its ROAD loop picks, at percentages 10..90.
    quantus_counts = [int(n_pixels * p / 100) for p in PERCENTILES]
    legx_counts = np.floor(np.array(PERCENTILES) / 100 * n_pixels).astype(int).tolist()
    assert quantus_counts == legx_counts, (quantus_counts, legx_counts)
    legx_q_morf, legx_q_lerf = road_curves(model, images, maps, labels, fractions=np.array(PERCENTILES) / 100,
                                           noise=0.0)
    q_morf, q_lerf = quantus_curves(model, images, maps, labels, noise=0.0)
    q_error = max(np.abs(legx_q_morf - q_morf).max(), np.abs(legx_q_lerf - q_lerf).max())
    image_legx = linear_imputation(images[:1], torch.from_numpy(maps[:1] >= 0.5))
    image_quantus = quantus_imputed(images[:1], maps[:1], 50, True, 0.0)
    lines += ["## Quantus (noisy_linear_imputation, noise 0, its ROAD loop's pixel choice)", "",
              f"Percentage p removes int(H W p / 100) = {quantus_counts} pixels, legx floor(f H W) the same.",
              f"Max |legx - Quantus| over {args.count} images x 9 percentages x 2 orders: {q_error:.2e}"
              f" (tolerance {CURVE_TOLERANCE:g}): {'AGREE' if q_error <= CURVE_TOLERANCE else 'DIFFER'}.",
              f"Imputed pixels of image 0 at 50% MoRF, max |legx - Quantus|:"
              f" {(image_legx - image_quantus).abs().max().item():.2e}.", ""]

    # 3. Differences by design, shown.
    raw_counts = np.array([[gradcam_removed_counts(m, p) for p in PERCENTILES] for m in raw_maps])
    plateau = (raw_maps == raw_maps.reshape(len(raw_maps), -1).min(axis=1)[:, None, None]).mean(axis=(1, 2))
    lines += ["## Differences by design", "",
              "pytorch-grad-cam's threshold rule on the raw Grad-CAM maps (ReLU: a plateau at the"
              f" minimum covering {plateau.mean():.0%} of the pixels on average): the mean fraction removed at"
              " percentile p, against the 1 - p/100 it names:", "",
              "| p | named | MoRF removed (mean) | LeRF removed (mean) |", "|---|---|---|---|"]
    lines += [f"| {p} | {1 - p / 100:.2f} | {raw_counts[:, k, 0].mean() / n_pixels:.3f} |"
              f" {raw_counts[:, k, 1].mean() / n_pixels:.3f} |" for k, p in enumerate(PERCENTILES)]
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    nothing_kept = NoisyLinearImputer(noise=0.0)(images[0], torch.zeros(images.shape[2:]))
    lines += ["", "Where its rule removes every pixel, pytorch-grad-cam's imputer returns an image whose"
              f" largest absolute pixel is {nothing_kept.abs().max().item():g} (a black image, no warning)."]
    rgb = quantus_road_on_rgb(model, images[:4], maps[:4], labels[:4])
    with torch.no_grad():
        hits = np.stack([
            (model(quantus_imputed(images, maps, p, True, 0.0)).argmax(1).numpy() == labels) for p in PERCENTILES
        ], axis=1)
    accuracy = hits.mean(axis=0)
    lines += ["", f"`quantus.ROAD` on RGB images with one map per image: {rgb}",
              "(its ROAD broadcasts the map over the channels and indexes the flattened (C H W) order into"
              " an (H W) mask, so it runs on one-channel inputs only).",
              "Quantus's ROAD scores top-1 accuracy (argmax == label) per percentage, MoRF only; on its"
              f" imputations here: {np.round(accuracy, 3).tolist()}; legx's MoRF mean probability at the same"
              f" percentages: {np.round(legx_q_morf.mean(axis=0), 3).tolist()}.", ""]

    # 4. Time per image at each implementation's defaults (noise 0.01, 9 fractions, both orders).
    timed = slice(0, args.timing_count)
    start = time.perf_counter()
    road_curves(model, images, maps, labels)
    legx_s = (time.perf_counter() - start) / len(images)
    start = time.perf_counter()
    road_curves(model, images[timed], maps[timed], labels[timed], solver="cg")
    legx_cg_s = (time.perf_counter() - start) / args.timing_count
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    targets = [ClassifierOutputSoftmaxTarget(int(label)) for label in labels[timed]]
    start = time.perf_counter()
    for averager in (ROADMostRelevantFirstAverage(PERCENTILES), ROADLeastRelevantFirstAverage(PERCENTILES)):
        averager(images[timed], maps[timed], targets, model)
    gc_s = (time.perf_counter() - start) / args.timing_count
    start = time.perf_counter()
    quantus_curves(model, images[timed], maps[timed], labels[timed], noise=0.01)
    q_s = (time.perf_counter() - start) / args.timing_count
    lines += ["## Time per image (CPU, 1 torch thread, noise 0.01, 9 fractions x 2 orders)", "",
              "| implementation | images | s / image | vs legx |", "|---|---|---|---|",
              f"| legx road_curves (CPU default: one sparse LU per batch) | {len(images)} | {legx_s:.4f} | 1.0 |",
              f"| legx road_curves, solver='cg' (the accelerator path, run on the CPU) | {args.timing_count} |"
              f" {legx_cg_s:.4f} | {legx_cg_s / legx_s:.1f} |",
              f"| pytorch-grad-cam ROAD{{Most,Least}}RelevantFirstAverage | {args.timing_count} | {gc_s:.4f} |"
              f" {gc_s / legx_s:.1f} |",
              f"| Quantus noisy_linear_imputation + forwards | {args.timing_count} | {q_s:.4f} | {q_s / legx_s:.1f} |",
              ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
