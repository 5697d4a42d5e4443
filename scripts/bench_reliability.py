"""Is the predicted reliability of a LEG / LEG-TV map calibrated? Measured on the demo set.

    python scripts/bench_reliability.py [--images 12] [--seeds 4] [--budgets 342,2000]
                                        [--lambdas 0.1,0.3] [--no-legtv] [--statistics DIR]

For every budget (samples per channel; ``separate`` + antithetic, 3 forwards per sample, so 342
is the embedded default's 1,026 forwards per image and 2000 the reference's 6,000), each seed's
run predicts every map's reliability from its own samples (``methods.leg_uncertainty``), and
the maps of every pair of seeds give the measured seed-to-seed Spearman. The table compares
their means over images (and seeds, and seed pairs); Spearman-Brown on the observed split
halves is shown beside them, the estimator the design notes name as an example. Bundled demo
model, demo images 64 px, 8 x 8 grid, noise level 0.02, as the embedded default runs them.
``--statistics DIR`` keeps each run's sampled statistics there (``leg-BUDGET-SEED-IMAGES.pkl``)
and reuses them, so the estimators can be re-measured without the forwards.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from methods import load_model  # noqa: E402
from methods.leg import LEG  # noqa: E402
from methods.leg_solvers import leg_maps, legtv_solutions  # noqa: E402
from methods.leg_uncertainty import (  # noqa: E402
    legtv_reliability,
    reliability_at_half_and_full,
    spearman_rows,
)
from pipeline.demo.data import make_demo_arrays  # noqa: E402


def demo_images(count: int) -> torch.Tensor:
    arrays, _, _ = make_demo_arrays(count, seed=0, image_size=64)
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255


def sampled(model, images, budget: int, seed: int, directory: str | None):
    """The LEG statistics of one seed's run, from ``directory`` when it holds them."""
    path = Path(directory) / f"leg-{budget}-{seed}-{len(images)}.pkl" if directory else None
    if path is not None and path.exists():
        return pickle.loads(path.read_bytes())
    stats = LEG(n_samples=budget, grid_size=8, batch_size=512, seed=seed).sample(model, images)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(stats))
    return stats


def measured_agreement(maps: list[np.ndarray]) -> float:
    """Mean Spearman over images and pairs of seeds; maps: per seed (N, p)."""
    return float(np.mean([spearman_rows(a, b) for a, b in itertools.combinations(maps, 2)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--budgets", default="342,2000", help="samples per channel, comma-separated")
    parser.add_argument("--lambdas", default="0.1,0.3")
    parser.add_argument("--no-legtv", action="store_true", help="LEG only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--statistics", help="folder to keep and reuse the sampled statistics in")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("demo", device="cpu")
    images = demo_images(args.images)
    lambdas = [float(value) for value in args.lambdas.split(",")]
    print(f"demo model, {args.images} demo images, 8 x 8 grid, noise level 0.02, separate + "
          f"antithetic, {args.seeds} seeds ({args.seeds * (args.seeds - 1) // 2} pairs)\n")
    print("| map | samples / channel | forwards / image | predicted reliability (mean) "
          "| measured seed-to-seed Spearman | difference | Spearman-Brown on the halves |")
    print("|---|---|---|---|---|---|---|")
    for budget in (int(value) for value in args.budgets.split(",")):
        leg_maps_per_seed, predicted, brown = [], [], []
        tv_maps_per_seed, tv_predicted = [], []
        started = time.perf_counter()
        for seed in range(args.seeds):
            stats = sampled(model, images, budget, seed, args.statistics)
            leg_maps_per_seed.append(leg_maps(stats).reshape(len(images), -1))
            half, full = reliability_at_half_and_full(stats)
            predicted.append(full)
            brown.append(2 * half / (1 + half))
            if not args.no_legtv:
                solutions = legtv_solutions(stats, lambdas)
                tv_maps_per_seed.append(
                    np.stack([[s.map.ravel() for s in per_image] for per_image in solutions])
                )
                tv_predicted.append(legtv_reliability(stats, lambdas))
        forwards = stats.n_forwards
        rows = [("LEG", np.mean(predicted), measured_agreement(leg_maps_per_seed), np.mean(brown))]
        for position, lam in enumerate(lambdas if not args.no_legtv else []):
            measured = measured_agreement([maps[:, position] for maps in tv_maps_per_seed])
            rows.append((f"LEG-TV lambda {lam:g}", np.nanmean([p[:, position] for p in tv_predicted]),
                         measured, None))
        for label, mean_predicted, measured, brown_mean in rows:
            brown_text = f"{brown_mean:.3f}" if brown_mean is not None else "-"
            print(f"| {label} | {budget} | {forwards} | {mean_predicted:.3f} | {measured:.3f} "
                  f"| {mean_predicted - measured:+.3f} | {brown_text} |")
        print(f"(budget {budget}: {time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
