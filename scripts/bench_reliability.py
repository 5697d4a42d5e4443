"""Is the predicted reliability of a LEG / LEG-TV map calibrated? Measured on the demo set.

    python scripts/bench_reliability.py [--images 12] [--seeds 4] [--budgets 342,2000]
                                        [--lambdas 0.1,0.3] [--no-legtv] [--statistics DIR]
                                        [--only-from K]
                                        [--schemes separate:random,separate:sobol,joint,shared]

For every budget (samples per channel; ``separate`` + antithetic, 3 forwards per sample, so 342
is the embedded default's 1,026 forwards per image and 2000 the reference's 6,000), each seed's
run predicts every map's reliability from its own samples (``legx.methods.leg.uncertainty``), and
the maps of every pair of seeds give the measured seed-to-seed Spearman. The table compares
their means over images (and seeds, and seed pairs); Spearman-Brown on the observed split
halves is shown beside them, the textbook correction. Bundled demo
model, demo images 64 px, 8 x 8 grid, noise level 0.02, as the embedded default runs them.
``--statistics DIR`` keeps each run's sampled statistics there (``leg-BUDGET-SEED-IMAGES.pkl``
for the default scheme, ``leg-MODE-DRAWS-BUDGET-SEED-IMAGES.pkl`` for others) and reuses them,
so the estimators can be re-measured without the forwards.

``--linear`` measures the draws on a model whose LEG is known instead: the graded linear logit
of ``tests/methods/leg/test_leg_uncertainty.py`` (6 x 6 grid, score 'logit', a mid-grey image, 16
seeds): per budget and draws, the channels' RMSE against the closed form, the coverage of the
nominal 95% intervals, and predicted against measured reliability.

``--schemes`` compares sampling schemes, each ``CHANNEL_MODE[:DRAWS]`` (``LEG``'s channel_mode
and draws), at equal forwards: a budget is samples per channel of the ``separate`` mode
(3 forwards each); ``joint`` and ``shared`` get 3 times as many samples, one forward each. Each
row also gives the forwards per image that would reach reliability 0.9, extrapolated from the
gain in odds, r / (1 - r), from the observed split halves to the predicted reliability at the
full budget (one doubling of the draws; both averaged over images and seeds, since one image's
gain is too noisy to extrapolate), assumed to hold for every further doubling. For Sobol draws
a doubling of the groups' points gains at least what a doubling of independent replicates
does, so their extrapolation is on the safe side.
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

from legx.methods import load_model  # noqa: E402
from legx.methods.leg.explainer import LEG  # noqa: E402
from legx.methods.leg.solvers import leg_maps, legtv_solutions  # noqa: E402
from legx.methods.leg.uncertainty import (  # noqa: E402
    legtv_reliability,
    reliability_at_half_and_full,
    spearman_rows,
)
from legx.pipeline.demo.data import make_demo_arrays  # noqa: E402


def demo_images(count: int) -> torch.Tensor:
    arrays, _, _ = make_demo_arrays(count, seed=0, image_size=64)
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255


DEFAULT_SCHEME = ("separate", "random")
TARGET = 0.9


def parse_scheme(text: str) -> tuple[str, str]:
    mode, _, draws = text.partition(":")
    return mode, draws or "random"


def sampled(model, images, budget: int, seed: int, directory: str | None,
            scheme: tuple[str, str] = DEFAULT_SCHEME):
    """The LEG statistics of one seed's run, from ``directory`` when it holds them; ``budget``
    is samples per channel of the separate mode (see the module docstring)."""
    mode, draws = scheme
    prefix = "leg" if scheme == DEFAULT_SCHEME else f"leg-{mode}-{draws}"
    path = Path(directory) / f"{prefix}-{budget}-{seed}-{len(images)}.pkl" if directory else None
    if path is not None and path.exists():
        return pickle.loads(path.read_bytes())
    samples = budget if mode == "separate" else 3 * budget
    stats = LEG(n_samples=samples, grid_size=8, batch_size=512, seed=seed, channel_mode=mode,
                draws=draws).sample(model, images)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(stats))
    return stats


def measured_agreement(maps: list[np.ndarray]) -> float:
    """Mean Spearman over images and pairs of seeds; maps: per seed (N, p)."""
    return float(np.mean([spearman_rows(a, b) for a, b in itertools.combinations(maps, 2)]))


def _odds(r: np.ndarray) -> np.ndarray:
    r = np.clip(r, 1e-6, 1 - 1e-6)
    return r / (1 - r)


def forwards_to_target(half: float, full: float, forwards: int) -> float:
    """The forwards extrapolated to reach ``TARGET`` (module docstring); inf where the map gains
    nothing from its halves to its full budget."""
    gain = float(np.log(_odds(np.array(full)) / _odds(np.array(half))))
    doublings = float(np.log(_odds(np.array(TARGET)) / _odds(np.array(full))))
    if gain <= 0:
        return float("inf")
    return forwards * 2.0 ** max(doublings / gain, 0.0)


def linear_table(budgets: list[int], seeds: int = 16, grid: int | None = None, size: int | None = None) -> None:
    """``--linear``: see the module docstring."""
    from legx.methods.leg.moments import GROUPS
    from legx.methods.leg.uncertainty import channel_estimates, channel_standard_errors, reliability
    from tests.methods.leg.test_leg_uncertainty import GRID, SIZE, graded_gradient, graded_linear_model

    grid, size = grid or GRID, size or SIZE
    model = graded_linear_model(grid, size)
    truth = graded_gradient(model, grid)
    grey = torch.full((1, 3, size, size), 0.5)
    print(f"graded linear logit, {grid} x {grid} grid (p = {grid * grid}), {size} px, separate + "
          f"antithetic, score logit, {seeds} seeds\n")
    print("| draws | samples / channel | points per group and sequence | channel RMSE "
          "| 95% interval coverage | predicted reliability | measured seed-to-seed Spearman |")
    print("|---|---|---|---|---|---|---|")
    for budget, draws in itertools.product(budgets, ("random", "sobol")):
        errors, hits, predicted, maps = [], [], [], []
        for seed in range(seeds):
            stats = LEG(n_samples=budget, grid_size=grid, score="logit", seed=seed, batch_size=2048,
                        draws=draws).sample(model, grey, [0])
            error = channel_estimates(stats)[0] - truth
            errors.append(error)
            hits.append(np.abs(error) <= 1.96 * channel_standard_errors(stats)[0])
            maps.append(leg_maps(stats).reshape(1, -1))
            predicted.append(reliability(stats)[0])
        rmse = np.sqrt(np.mean(np.square(errors)))
        print(f"| {draws} | {budget} | {budget // 2 // GROUPS} | {rmse:.4f} | {np.mean(hits):.3f} "
              f"| {np.mean(predicted):.3f} | {measured_agreement(maps):.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--budgets", default="342,2000", help="samples per channel, comma-separated")
    parser.add_argument("--lambdas", default="0.1,0.3")
    parser.add_argument("--no-legtv", action="store_true", help="LEG only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--statistics", help="folder to keep and reuse the sampled statistics in")
    parser.add_argument("--schemes", default="separate:random",
                        help="CHANNEL_MODE[:DRAWS], comma-separated, compared at equal forwards")
    parser.add_argument("--only-from", type=int, default=0, metavar="K",
                        help="measure on images K.. only (the statistics still cover all --images): "
                             "to check an estimator on images it was not chosen on")
    parser.add_argument("--linear", action="store_true",
                        help="random against Sobol draws on a linear logit whose LEG is known")
    parser.add_argument("--grid", type=int, help="--linear: grid size (default 6)")
    parser.add_argument("--size", type=int, help="--linear: image side, a multiple of --grid (default 24)")
    parser.add_argument("--linear-seeds", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.linear:
        linear_table([int(value) for value in args.budgets.split(",")], args.linear_seeds, args.grid, args.size)
        return
    model = load_model("demo", device="cpu")
    images = demo_images(args.images)
    lambdas = [float(value) for value in args.lambdas.split(",")]
    schemes = [parse_scheme(text) for text in args.schemes.split(",")]
    shown = f" (measured on images {args.only_from}-{args.images - 1})" if args.only_from else ""
    print(f"demo model, {args.images} demo images{shown}, 8 x 8 grid, noise level 0.02, antithetic, "
          f"{args.seeds} seeds ({args.seeds * (args.seeds - 1) // 2} pairs)\n")
    print("| map | scheme | samples / channel | forwards / image | predicted reliability (mean) "
          "| measured seed-to-seed Spearman | difference | Spearman-Brown on the halves "
          f"| forwards to {TARGET}, extrapolated |")
    print("|---|---|---|---|---|---|---|---|---|")
    for budget, scheme in itertools.product((int(value) for value in args.budgets.split(",")), schemes):
        leg_maps_per_seed, halves, predicted, brown = [], [], [], []
        tv_maps_per_seed, tv_predicted = [], []
        started = time.perf_counter()
        for seed in range(args.seeds):
            stats = sampled(model, images, budget, seed, args.statistics, scheme)
            if args.only_from:
                stats = stats.concat([stats[i] for i in range(args.only_from, len(images))])
            leg_maps_per_seed.append(leg_maps(stats).reshape(len(stats), -1))
            half, full = reliability_at_half_and_full(stats)
            halves.append(half)
            predicted.append(full)
            brown.append(2 * half / (1 + half))
            if not args.no_legtv:
                solutions = legtv_solutions(stats, lambdas)
                tv_maps_per_seed.append(
                    np.stack([[s.map.ravel() for s in per_image] for per_image in solutions])
                )
                tv_predicted.append(legtv_reliability(stats, lambdas))
        forwards = stats.n_forwards
        needed_text = f"{forwards_to_target(np.mean(halves), np.mean(predicted), forwards):,.0f}"
        rows = [("LEG", np.mean(predicted), measured_agreement(leg_maps_per_seed), np.mean(brown),
                 needed_text)]
        for position, lam in enumerate(lambdas if not args.no_legtv else []):
            measured = measured_agreement([maps[:, position] for maps in tv_maps_per_seed])
            rows.append((f"LEG-TV lambda {lam:g}", np.nanmean([p[:, position] for p in tv_predicted]),
                         measured, None, "-"))
        scheme_text = ":".join(scheme)
        samples = budget if scheme[0] == "separate" else 3 * budget
        for label, mean_predicted, measured, brown_mean, needed_cell in rows:
            brown_text = f"{brown_mean:.3f}" if brown_mean is not None else "-"
            print(f"| {label} | {scheme_text} | {samples} | {forwards} | {mean_predicted:.3f} "
                  f"| {measured:.3f} | {mean_predicted - measured:+.3f} | {brown_text} "
                  f"| {needed_cell} |", flush=True)
        print(f"(budget {budget}, {scheme_text}: {time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
