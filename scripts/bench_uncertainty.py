"""What LEG's uncertainty statistics cost beside its forwards, measured side by side.

    python scripts/bench_uncertainty.py [--images 4] [--samples 342] [--grid-size 8] [--repeats 3]
                                        [--model demo] [--image-size 64]

``LEG.sample`` keeps every response and, after the forwards, computes the per-draw terms'
second moments and group means (``LEG._uncertainty``; ``legx.methods.leg.uncertainty``). This script
times ``sample`` as it is against the same call with that step skipped (repeats interleaved, the
median kept), and times the step alone at the ImageNet setting (grid 28, 2,000 samples per
channel, 8 images per call) with synthetic responses, where its cost is largest. Then the
solve stage's side: per image, the LEG map with and without its standard errors and
reliability, and the LEG-TV programs with and without the reliability's split-half programs
(``--lambdas``; the demo's statistics).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from legx.methods import load_model  # noqa: E402
from legx.methods.leg.explainer import LEG  # noqa: E402
from legx.methods.leg.solvers import leg_maps, legtv_solutions  # noqa: E402
from legx.methods.leg.uncertainty import legtv_reliability, map_standard_errors, reliability  # noqa: E402
from legx.pipeline.demo.data import make_demo_arrays  # noqa: E402


class LEGWithoutUncertainty(LEG):
    """Today's sampling before the uncertainty step: responses are still kept, nothing else."""

    def _uncertainty(self, responses, noise):
        empty = torch.zeros(responses.shape[0], 0)
        return empty, empty, None


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--samples", type=int, default=342, help="n_samples per channel")
    parser.add_argument("--grid-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lambdas", default="0.1,0.3")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model, device="cpu")
    arrays, _, _ = make_demo_arrays(args.images, seed=0, image_size=args.image_size)
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255
    common = dict(n_samples=args.samples, grid_size=args.grid_size, batch_size=512)
    with_moments, without = LEG(**common), LEGWithoutUncertainty(**common)
    with_moments.sample(model, images)  # warm-up
    times = {"with": [], "without": []}
    for _ in range(args.repeats):
        times["without"].append(timed(lambda: without.sample(model, images)))
        times["with"].append(timed(lambda: with_moments.sample(model, images)))
    base, full = statistics.median(times["without"]), statistics.median(times["with"])
    print(f"{args.model}, {args.images} images, {args.samples} samples per channel, grid "
          f"{args.grid_size}, {args.repeats} repeats, {args.threads} thread(s)")
    print(f"sample() without the uncertainty step: {base:.3f} s; with: {full:.3f} s; "
          f"extra {100 * (full - base) / base:+.1f}%")

    stats = with_moments.sample(model, images)
    per_image = len(images)
    leg_alone = statistics.median(timed(lambda: leg_maps(stats)) for _ in range(args.repeats))
    certified = statistics.median(
        timed(lambda: (leg_maps(stats), map_standard_errors(stats), reliability(stats)))
        for _ in range(args.repeats)
    )
    print(f"solve stage per image: LEG map {1000 * leg_alone / per_image:.2f} ms; with standard "
          f"errors and reliability {1000 * certified / per_image:.2f} ms")
    lambdas = [float(value) for value in args.lambdas.split(",")]
    legtv_solutions(stats[0], lambdas)  # builds the program once
    programs = statistics.median(timed(lambda: legtv_solutions(stats, lambdas)) for _ in range(args.repeats))
    halves = statistics.median(timed(lambda: legtv_reliability(stats, lambdas)) for _ in range(args.repeats))
    print(f"LEG-TV per image ({len(lambdas)} lambdas): programs {1000 * programs / per_image:.1f} ms; "
          f"reliability (one split: 2 more programs per channel and lambda, and LEG's bootstrap) "
          f"{1000 * halves / per_image:.1f} ms")

    imagenet = LEG(n_samples=2000, grid_size=28)
    n_images, forwards, n_cells = 8, imagenet.forwards_per_image, 28 * 28
    responses = torch.randn(n_images, forwards, dtype=torch.float64) * 1e-3
    noise = imagenet._draw_noise(torch.device("cpu"))
    step = statistics.median(timed(lambda: imagenet._uncertainty(responses, noise)) for _ in range(args.repeats))
    print(f"uncertainty step alone at grid 28, 2000 samples per channel, {n_images} images "
          f"({n_images * forwards} forwards, p = {n_cells}): {step:.3f} s per call, "
          f"{1000 * step / (n_images * forwards):.4f} ms per forward")


if __name__ == "__main__":
    main()
