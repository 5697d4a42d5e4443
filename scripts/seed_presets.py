"""Meaningful Perturbation and the CNN perturbation with legx's defaults and with their seeds'
settings (``preset: seed``), on the demo data with the bundled demo model.

    python scripts/seed_presets.py --count 96 --out presets.md [--save-maps presets.npz]

For each method and preset: the tie-aware pointing game (``legx.methods.metrics.localisation``) with its 95%
Wilson interval and the mask energy (the share of |map| inside the object mask) with its 95%
bootstrap interval (``legx.methods.metrics.intervals``), beside their chance level (the masks' mean share of
the image), the forward+backward steps per image and the wall time. Every parameter is the
method's own: its defaults (preset ``legx``) or its seed's preset, nothing tuned here. The maps
explain the true label, on the same images as ``scripts/compare_methods.py`` (its data seed).

``--edges`` adds a model-free row: the image's own edge magnitude (Sobel, on the channel mean)
through the CNN perturbation's post-processing (power 6, 10% borders, the dilation), a map that
knows nothing of the model; a method that scores like it marks edges, not evidence.

Prints a Markdown table and writes it (and the maps) after every configuration, so a run cut
short keeps what it finished. ``--images START STOP`` explains only images START..STOP-1 of
the ``--count`` (to run parts in parallel); ``--score A.npz B.npz ...`` scores saved maps of
consecutive parts together (on ``--images`` of them when given), without running anything.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from legx import methods  # noqa: E402
from compare_methods import load_demo  # noqa: E402
from legx.methods.resize import upsample_maps  # noqa: E402
from legx.methods.metrics.intervals import mean_estimate, rate_estimate  # noqa: E402
from legx.methods.metrics.localisation import localisation, region_share  # noqa: E402

CONFIGURATIONS = (
    ("meaningful-perturbation", "legx"),
    ("meaningful-perturbation", "seed"),
    ("cnn-perturbation", "legx"),
    ("cnn-perturbation", "seed"),
)


def edge_maps(images: torch.Tensor) -> np.ndarray:
    """|Sobel gradient| of each image's channel mean, post-processed as the CNN perturbation's
    difference is (``CNNPerturbation._post_process`` with the grey image in place of G(x))."""
    from scipy.ndimage import sobel

    from legx.methods.cnn_perturbation import CNNPerturbation

    processing = CNNPerturbation()
    grey = images.mean(dim=1).numpy()
    maps = []
    for image in grey:
        magnitude = np.hypot(sobel(image, axis=0), sobel(image, axis=1))
        # _post_process takes |mean_c image - mean_c perturbed|: a zero "perturbed" image gives it
        # the magnitude itself.
        maps.append(processing._post_process(magnitude[None], np.zeros_like(magnitude)[None]))
    return np.stack(maps).astype(np.float32)


def score_saved(paths: list[Path], images: slice, args: argparse.Namespace) -> str:
    """The table rows of maps saved by parts of one run (``--save-maps``), concatenated in order,
    on ``images`` of them, with each map's Spearman correlation with the image-edge map (mean over
    images; the demo data of ``--count`` and ``--seed``, as the run used)."""
    from scipy.stats import spearmanr

    parts = [np.load(path) for path in paths]
    masks = np.concatenate([part["masks"] for part in parts])[images]
    with tempfile.TemporaryDirectory() as scratch:
        demo_images = load_demo(Path(scratch), args.count, args.seed)[0][images]
    edges = edge_maps(demo_images)
    lines = [f"{len(masks)} images from {len(parts)} part(s); chance level {np.nanmean(region_share(masks)):.3f}",
             "", "| method | preset | map size | pointing game | mask energy | Spearman with image edges |",
             "|---|---|---|---|---|---|"]
    for key in [key for key in parts[0].files if key != "masks"]:
        if not all(key in part.files for part in parts):
            continue
        maps = np.concatenate([part[key] for part in parts])[images]
        pointing, energy = localisation(maps, masks=masks)
        name, preset = key.split(":")
        full = upsample_maps(maps, *edges.shape[-2:])
        correlation = np.nanmean([spearmanr(m.ravel(), e.ravel()).statistic for m, e in zip(full, edges)])
        lines.append(f"| {name} | {preset} | {maps.shape[1]}x{maps.shape[2]} | "
                     f"{rate_estimate(pointing).text()} | {mean_estimate(energy).text()} | {correlation:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    return text


def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=96, help="demo images (default 96)")
    parser.add_argument("--seed", type=int, default=0, help="data seed (compare_methods' default)")
    parser.add_argument("--only", nargs="*", help="METHOD:PRESET pairs to run (default: all four; none: only --edges)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--edges", action="store_true", help="add the model-free edge-magnitude row")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--save-maps", type=Path)
    parser.add_argument("--images", nargs=2, type=int, metavar=("START", "STOP"), help="a part of the images")
    parser.add_argument("--score", nargs="+", type=Path, help="score saved maps (parts in order) and stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.score:
        return score_saved(args.score, slice(*args.images) if args.images else slice(None), args)

    model = methods.load_model("demo", device="cpu").eval()
    with tempfile.TemporaryDirectory() as scratch:
        images, labels, masks = load_demo(Path(scratch), args.count, args.seed)
    if args.images:
        part = slice(*args.images)
        images, labels, masks = images[part], labels[part], masks[part]
    chance = float(np.nanmean(region_share(masks)))
    header = [
        f"Model `{model.model_id}`, {args.count} demo images (64 px, data seed {args.seed}), maps of "
        f"the true label, CPU ({torch.get_num_threads()} threads). Mean [95% interval] over the "
        f"images: tie-aware pointing game (Wilson), mask energy (bootstrap); chance level of both "
        f"(the masks' mean share of the image): {chance:.3f}.",
        "",
        "| method | preset | steps / image | map size | pointing game | mask energy | s / image |",
        "|---|---|---|---|---|---|---|",
    ]
    rows: list[str] = []
    saved: dict[str, np.ndarray] = {"masks": masks}

    def table() -> str:
        return "\n".join(header + rows) + "\n"

    if args.edges:
        maps = edge_maps(images)
        pointing, energy = localisation(maps, masks=masks)
        rows.append(f"| image edges (model-free) | - | 0 | {maps.shape[1]}x{maps.shape[2]} | "
                    f"{rate_estimate(pointing).text()} | {mean_estimate(energy).text()} | - |")
        print(rows[-1], flush=True)
    wanted = [tuple(item.split(":")) for item in args.only] if args.only is not None else CONFIGURATIONS
    for name, preset in wanted:
        explainer = methods.get_explainer(name, preset=preset)
        start = time.perf_counter()
        maps = explainer.explain(model, images, labels)
        seconds = (time.perf_counter() - start) / args.count
        pointing, energy = localisation(maps, masks=masks)
        saved[f"{name}:{preset}"] = maps
        rows.append(
            f"| {name} | {preset} | {explainer.n_iterations} | {maps.shape[1]}x{maps.shape[2]} | "
            f"{rate_estimate(pointing).text()} | {mean_estimate(energy).text()} | {seconds:.2f} |"
        )
        print(rows[-1], flush=True)
        if args.out:
            args.out.write_text(table())
        if args.save_maps:
            np.savez_compressed(args.save_maps, **saved)
    print(table())
    return table()


if __name__ == "__main__":
    main()
