"""Compare every registered saliency method on the demo model and demo data.

For each method: the tie-aware pointing game (the share of the upsampled map's maximal pixels
inside the object mask, ``legx.methods.metrics.localisation``), averaged over images with its 95% Wilson
interval, the mean share of |map| inside the mask with its 95% bootstrap interval
(``legx.methods.metrics.intervals``), both beside their chance level (the masks' mean share of the image),
and the mean wall time per image, with the maps explaining the true label. Budgets are comparable: every sampling or
optimisation method gets the same number of forward-equivalents per image, a backward pass
counted as two forwards (so gradient methods take budget / 3 steps); Grad-CAM and Guided
Grad-CAM need one forward and one backward by construction.

    python scripts/compare_methods.py --count 200 --out compare.md
    python scripts/compare_methods.py --quick            # 16 images, budget 200: a smoke run

Prints a Markdown table (and writes it to --out). Methods whose module is missing or fails are
listed under the table with the reason instead of silently dropped.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from legx import methods
from legx.methods.metrics.intervals import mean_estimate, rate_estimate
from legx.methods.metrics.localisation import localisation, region_share
from legx.pipeline.demo.data import ANNOTATIONS_FILE, write_demo_dataset

# The demo images are 64 px: a 16 x 16 mask (4 px blocks) for Meaningful Perturbation; LEG
# estimates p = grid^2 unknowns per channel from its samples, so at these budgets it works on
# an 8 x 8 grid (8 px blocks), where p = 64.
GRID = 16
LEG_GRID = 8


def method_settings(budget: int, seed: int) -> dict[str, tuple[dict, int]]:
    """Constructor parameters and forward-equivalents per image, per registered method."""
    steps = max(1, budget // 3)
    # LEG's default perturbs one channel per forward: n_samples per channel, 3 n forwards.
    per_channel = max(2, steps - steps % 2)
    return {
        "leg": (dict(n_samples=per_channel, grid_size=LEG_GRID, seed=seed), 3 * per_channel),
        "leg-tv": (dict(n_samples=per_channel, grid_size=LEG_GRID, lambdas=(0.1, 0.3), seed=seed),
                   3 * per_channel),
        "lime": (dict(n_samples=budget, seed=seed), budget),
        "kernel-shap": (dict(n_samples=budget, seed=seed), budget),
        "partition-shap": (dict(max_evals=budget), budget),
        "expected-gradients": (dict(n_samples=steps, seed=seed), 3 * steps),
        "meaningful-perturbation": (dict(n_iterations=steps, mask_size=GRID, seed=seed), 3 * steps),
        "cnn-perturbation": (dict(n_iterations=steps, seed=seed), 3 * steps),
        "grad-cam": (dict(), 3),
        "guided-grad-cam": (dict(), 3),
    }


def load_demo(
    directory: Path, count: int, seed: int
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Images (N, 3, H, W) in [0, 1], labels (N,) and object masks (N, H, W) of the demo data."""
    write_demo_dataset(directory, count, seed=seed)
    table = pq.read_table(directory / ANNOTATIONS_FILE).to_pylist()
    images = np.stack(
        [np.asarray(Image.open(directory / row["image_id"]).convert("RGB")) for row in table]
    )
    masks = np.stack(
        [np.asarray(row["mask"], dtype=bool).reshape(row["height"], row["width"]) for row in table]
    )
    labels = np.array([row["label"] for row in table])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, labels, masks


def labelled_maps(name: str, params: dict, maps: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """LEG-TV returns one map per lambda (N, L, h, w): one table row each."""
    if maps.ndim == 3:
        return [(name, maps)]
    return [(f"{name} (lambda {lam:g})", maps[:, i]) for i, lam in enumerate(params["lambdas"])]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100, help="demo images (default 100)")
    parser.add_argument("--budget", type=int, default=1000, help="forward-equivalents per image")
    parser.add_argument("--quick", action="store_true", help="16 images, budget 200")
    parser.add_argument("--methods", nargs="*", help="subset of methods (default: all)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
    parser.add_argument("--seed", type=int, default=0, help="data and method seed")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared, oversubscribed machine the spin-waits "
        "of several threads make small ops 10x slower)",
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown table here (after every method)")
    parser.add_argument("--save-maps", type=Path, help="also save every method's maps and the masks (.npz)")
    args = parser.parse_args(argv)
    count, budget = (16, 200) if args.quick else (args.count, args.budget)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)

    model = methods.load_model("demo", device=device).eval()
    with tempfile.TemporaryDirectory() as scratch:
        images, labels, masks = load_demo(Path(scratch), count, args.seed)
    with torch.no_grad():
        accuracy = float((model(images.to(device)).argmax(1).cpu().numpy() == labels).mean())

    chance = float(np.nanmean(region_share(masks)))
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    header = [
        f"Model `{getattr(model, 'model_id', 'demo')}`, {count} demo images (64 px, seed "
        f"{args.seed}), maps of the true label, "
        f"budget {budget} forward-equivalents per image, {device_name} "
        f"({torch.get_num_threads()} threads); model top-1 accuracy {accuracy:.3f}. "
        f"Mean [95% interval] over the images: pointing game (tie-aware) with Wilson's interval, "
        f"mass in mask with a bootstrap interval, over the n images whose map has mass (all of them "
        f"unless n is given); chance level of both (the masks' mean share of the image): "
        f"{chance:.3f}.",
        "",
        "| method | forwards / image | map size | pointing game | mass in mask | ms / image |",
        "|---|---|---|---|---|---|",
    ]
    settings = method_settings(budget, args.seed)
    names = args.methods or methods.available()
    rows, problems, saved = [], [], {"masks": masks}

    def table() -> str:
        return "\n".join(header + rows + ([""] + problems if problems else [])) + "\n"

    for name in names:
        params, forwards = settings.get(name, ({}, None))
        try:
            explainer = methods.get_explainer(name, **params)
            methods.get_explainer(name, **params).explain(model, images[:1], labels[:1])  # warm-up
            start = time.perf_counter()
            all_maps = explainer.explain(model, images, labels)
            seconds = (time.perf_counter() - start) / count
        except Exception as error:  # a missing or failing method is reported, not fatal
            problems.append(f"- `{name}`: {type(error).__name__}: {error}")
            continue
        budget_text = "?" if forwards is None else str(forwards)
        for label, maps in labelled_maps(name, params, all_maps):
            saved[label] = maps
            pointing, energy = localisation(maps, masks=masks)
            hits, mass = rate_estimate(pointing), mean_estimate(energy, seed=args.seed)
            # A map with no mass (all zero) has no peak: it is left out, and the count says so.
            scored = "" if hits.n == count else f" (n={hits.n})"
            rows.append(
                f"| {label} | {budget_text} | {maps.shape[1]}x{maps.shape[2]} | "
                f"{hits.text()}{scored} | {mass.text()}{scored} | {seconds * 1000:.1f} |"
            )
        print(f"{name}: done in {seconds * count:.1f} s", flush=True)
        # Written after every method, so that a run cut short keeps the rows it finished.
        if args.out:
            args.out.write_text(table())
        if args.save_maps:
            np.savez_compressed(args.save_maps, **saved)

    print(table())
    if args.out:
        args.out.write_text(table())
    return table()


if __name__ == "__main__":
    main()
