"""Which LEG sampling scheme gives the best map per forward? Measured, to choose the defaults.

    python scripts/bench_estimator.py [--images 16] [--budget 1024] [--repeats 3]

LEG estimates, per channel, the gradient of the score summed over each grid block (for small
noise). On the bundled demo model that target is known exactly through autograd, so each
scheme (channel mode separate: the reference, one channel per forward; joint; shared; each with
and without antithetic pairs) is scored at the same number of forwards per image by

  error         ||map - exact|| / ||exact||, exact = mean_c |block-summed gradient_c| (for
                'shared', whose statistic is the gradient of a grey perturbation, |sum_c ...|);
  Spearman      rank correlation of map and exact map;
  variability   E ||m_seed1 - m_seed2||^2 / E ||m||^2 between independent seeds;
  pointing      pointing-game hit rate on the demo object masks.

The exact gradient's own pointing rate is printed first: the ceiling of any gradient estimator
on this model. It prints a Markdown table (docs/benchmarks/index.md, "LEG estimator schemes").

    python scripts/bench_estimator.py --clip-effect [--images 48] [--budget 1026]

instead measures what clipping perturbed pixels to [0, 1] (legx's default; the reference code
does not clip) changes on the same draws: per image ||LEG_clip - LEG_noclip||^2 / ||LEG_clip||^2,
its mean over images, the image it moves most and that image's share of saturated pixels (0 or
1 in some channel), for the separate channel mode with and without antithetic pairs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from legx.methods import load_model  # noqa: E402
from legx.methods.metrics.localisation import localisation  # noqa: E402
from legx.methods.leg.explainer import LEG  # noqa: E402
from legx.pipeline.demo.data import write_demo_dataset  # noqa: E402

SCHEMES = [
    ("separate", False),
    ("separate", True),
    ("joint", False),
    ("joint", True),
    ("shared", False),
    ("shared", True),
]


def load_demo(directory: Path, count: int) -> tuple[torch.Tensor, np.ndarray]:
    write_demo_dataset(directory, count=count, seed=2024)
    table = pq.read_table(directory / "annotations.parquet").to_pylist()
    images = np.stack([np.asarray(Image.open(directory / row["image_id"]).convert("RGB")) for row in table])
    masks = np.stack(
        [np.asarray(row["mask"], dtype=bool).reshape(row["height"], row["width"]) for row in table]
    )
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, masks


def block_gradient(model, images: torch.Tensor, targets: torch.Tensor, grid_size: int) -> np.ndarray:
    """d f / d (block-constant perturbation) per channel and cell: (N, 3, g, g), f = softmax
    probability of the target. Blocks follow methods.leg.grid_to_image."""
    images = images.clone().requires_grad_(True)
    probabilities = model(images).softmax(dim=1).gather(1, targets[:, None]).sum()
    (gradient,) = torch.autograd.grad(probabilities, images)
    height, width = images.shape[-2:]
    rows = np.arange(height) * grid_size // height
    cols = np.arange(width) * grid_size // width
    cells = torch.as_tensor(rows[:, None] * grid_size + cols[None, :]).flatten()
    sums = torch.zeros(*gradient.shape[:2], grid_size * grid_size)
    sums.index_add_(2, cells, gradient.flatten(2))
    return sums.reshape(*gradient.shape[:2], grid_size, grid_size).numpy()


def pointing(maps: np.ndarray, masks: np.ndarray) -> float:
    """Mean pointing-game hit rate, scored as the pipeline scores it."""
    return float(np.nanmean(localisation(maps, masks=masks)[0]))


def clip_effect(model, images: torch.Tensor, targets: torch.Tensor, args: argparse.Namespace) -> None:
    saturated = ((images == 0) | (images == 1)).any(dim=1).float().mean(dim=(1, 2)).numpy()
    n_samples = args.budget // 3
    n_samples -= n_samples % 2
    print(f"demo model, {len(images)} demo images, {args.grid_size} x {args.grid_size} grid, noise level "
          f"{args.noise_level}, {n_samples} samples per channel (channels separate), seed 0 on both sides; "
          f"median share of saturated pixels {np.median(saturated):.3f}\n")
    print("| draws | mean ||LEG_clip - LEG_noclip||^2 / ||LEG_clip||^2 | median | largest (image, its saturated share) |")
    print("|---|---|---|---|")
    for antithetic in (False, True):
        common = dict(n_samples=n_samples, grid_size=args.grid_size, noise_level=args.noise_level,
                      antithetic=antithetic, batch_size=512, seed=0)
        clipped = LEG(clip=True, **common).explain(model, images, targets)
        unclipped = LEG(clip=False, **common).explain(model, images, targets)
        change = ((clipped - unclipped) ** 2).sum(axis=(1, 2)) / (clipped**2).sum(axis=(1, 2))
        worst = int(np.argmax(change))
        label = "antithetic pairs (legx default)" if antithetic else "plain i.i.d. (reference default)"
        print(f"| {label} | {change.mean():.4f} | {np.median(change):.4f} | "
              f"{change[worst]:.4f} (image {worst}, {saturated[worst]:.3f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--budget", type=int, default=1024, help="forwards per image")
    parser.add_argument("--repeats", type=int, default=3, help="seeds per scheme")
    parser.add_argument("--grid-size", type=int, default=8)
    parser.add_argument("--noise-level", type=float, default=0.02)
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "legx-bench-estimator"))
    parser.add_argument("--clip-effect", action="store_true",
                        help="measure what clipping to [0, 1] changes on the same draws, and stop")
    args = parser.parse_args()

    model = load_model("demo", device="cpu")
    images, masks = load_demo(Path(args.data), args.images)
    with torch.no_grad():
        targets = model(images).argmax(dim=1)
    if args.clip_effect:
        clip_effect(model, images, targets, args)
        return
    gradient = block_gradient(model, images, targets, args.grid_size)
    exact = {"per_channel": np.abs(gradient).mean(axis=1), "grey": np.abs(gradient.sum(axis=1))}
    print(f"demo model, {args.images} demo images, {args.grid_size} x {args.grid_size} grid, "
          f"noise level {args.noise_level}, {args.budget} forwards per image, {args.repeats} seeds")
    print(f"exact block gradient (autograd): pointing game {pointing(exact['per_channel'], masks):.2f}\n")
    print("| scheme | forwards / image | error vs exact | Spearman vs exact | seed-to-seed variability | pointing game |")
    print("|---|---|---|---|---|---|")
    common = dict(grid_size=args.grid_size, noise_level=args.noise_level, batch_size=512)
    for channel_mode, antithetic in SCHEMES:
        n_samples = args.budget // 3 if channel_mode == "separate" else args.budget
        n_samples -= n_samples % 2
        maps = [
            LEG(n_samples=n_samples, channel_mode=channel_mode, antithetic=antithetic, seed=seed,
                **common).explain(model, images, targets)
            for seed in range(args.repeats)
        ]
        truth = exact["grey" if channel_mode == "shared" else "per_channel"]
        error = np.mean([np.linalg.norm(m[i] - truth[i]) / np.linalg.norm(truth[i])
                         for m in maps for i in range(len(images))])
        spearman = np.mean([spearmanr(m[i].ravel(), truth[i].ravel()).statistic
                            for m in maps for i in range(len(images))])
        pairs = [(a, b) for i, a in enumerate(maps) for b in maps[i + 1:]]
        variability = np.mean([np.sum((a - b) ** 2) / 2 for a, b in pairs]) / np.mean(
            [np.sum(m**2) for m in maps]
        )
        hits = np.mean([pointing(m, masks) for m in maps])
        forwards = 3 * n_samples if channel_mode == "separate" else n_samples
        label = f"{channel_mode}{' + antithetic' if antithetic else ''}"
        print(f"| {label} | {forwards} | {error:.3f} | {spearman:.3f} | {variability:.3f} | {hits:.2f} |")


if __name__ == "__main__":
    main()
