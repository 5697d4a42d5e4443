"""Fixed against adaptive LEG budgets: forwards per image to reach a target reliability, and the
job's total forwards at equal worst-image reliability.

    python scripts/bench_budgets.py --model demo [--images 8] [--target 0.9] [--max-samples 4096]
    python scripts/bench_budgets.py --model resnet18 [--size 64] [--grid 8] [--target 0.9]

``demo``: the bundled demo model over the demo images (64 px, 8 x 8 grid, as the embedded
default). ``resnet18``: torchvision's resnet18 with random weights (``torch.manual_seed(0)``),
saved as a state_dict into a temporary folder and loaded through the job's model spec
``torchvision:resnet18@PATH``, over the RGB photographs that ship with scikit-image, resized to
``--size`` px. Both: noise level 0.02, ``separate`` + antithetic, score 'prob'.

1. Adaptive: ``LEG(n_samples='auto', target_reliability=TARGET, max_samples=CAP,
   round_samples=ROUND)`` samples every image until its map's predicted reliability reaches the
   target or the cap; it reports each image's forwards and whether it was capped.
2. Fixed: the smallest fixed budget whose every map reaches the target. The search starts at
   the largest budget the adaptive run gave any image (rounded up to ``--round-samples``: a
   fixed budget below it would leave that image's map below target, up to noise; ``--fixed-from``
   starts it lower) and grows by ``--step`` until every map's predicted reliability reaches the
   target, or past the cap.

The table gives, per method, the forwards per image (mean, largest), the job's total forwards,
and the predicted reliability of the worst and the mean map, and the ratio of the totals
(the target: adaptive needs at most half the fixed total).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from legx.methods import load_model  # noqa: E402
from legx.methods.leg.explainer import LEG  # noqa: E402
from legx.methods.leg.uncertainty import reliability  # noqa: E402
from scripts.bench_reliability import demo_images  # noqa: E402

# The photographs scikit-image ships in its wheel (no download): colour first, then the grey ones,
# which enter as three equal channels (as a greyscale photograph in ImageNet does).
PHOTOGRAPHS = ("chelsea", "astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
               "retina", "camera", "coins", "moon", "clock", "grass", "brick", "gravel", "page", "text")


def photographs(count: int, size: int) -> torch.Tensor:
    """skimage.data's photographs, centre-cropped to a square and resized to size px."""
    import skimage.data

    if count > len(PHOTOGRAPHS):
        raise SystemExit(f"--images: scikit-image ships {len(PHOTOGRAPHS)} photographs, asked for {count}")
    images = []
    for name in PHOTOGRAPHS[:count]:
        array = getattr(skimage.data, name)()
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        side = min(array.shape[:2])
        top, left = (array.shape[0] - side) // 2, (array.shape[1] - side) // 2
        square = torch.from_numpy(np.ascontiguousarray(array[top : top + side, left : left + side]))
        images.append(F.interpolate(square.permute(2, 0, 1).float()[None] / 255, size=(size, size),
                                    mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(images).clamp(0, 1)


def random_resnet18(folder: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    path = Path(folder) / "resnet18-random.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return load_model(f"torchvision:resnet18@{path}", device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("demo", "resnet18"), default="demo")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="image side (resnet18's photographs)")
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--max-samples", type=int, default=4096, help="adaptive cap, per channel")
    parser.add_argument("--round-samples", type=int, default=64)
    parser.add_argument("--step", type=float, default=1.25, help="growth of the fixed budget search")
    parser.add_argument("--fixed-from", type=int,
                        help="start the fixed search at this many samples per channel (default: the "
                             "adaptive run's largest): a smaller budget may pass too, by the noise")
    parser.add_argument("--adaptive-only", action="store_true", help="skip the fixed budget search")
    parser.add_argument("--fixed-only", type=int, metavar="SAMPLES",
                        help="run this one fixed budget (samples per channel) and nothing else: to "
                             "place the smallest fixed budget between two that a search tried")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        if args.model == "demo":
            model, images, what = load_model("demo", device="cpu"), demo_images(args.images), "demo images"
        else:
            model = random_resnet18(folder)
            images = photographs(args.images, args.size)
            what = f"skimage.data photographs ({', '.join(PHOTOGRAPHS[:len(images)])})"
    print(f"{args.model}, {len(images)} {what}, {images.shape[-1]} px, {args.grid} x {args.grid} grid, "
          f"noise 0.02, separate + antithetic, target reliability {args.target}, seed {args.seed}\n")
    common = dict(grid_size=args.grid, batch_size=512, seed=args.seed)
    if args.fixed_only:
        values = reliability(LEG(n_samples=args.fixed_only, **common).sample(model, images))
        print(f"fixed {args.fixed_only} per channel ({3 * args.fixed_only * len(images):,} forwards): "
              f"reliability {np.round(values, 3).tolist()}, worst {values.min():.3f}, "
              f"{'every map reaches' if values.min() >= args.target else 'a map is below'} {args.target}")
        return

    started = time.perf_counter()
    adaptive = LEG(n_samples="auto", target_reliability=args.target, max_samples=args.max_samples,
                   round_samples=args.round_samples, **common)
    stats = adaptive.sample(model, images)
    adaptive_forwards = stats.image_forwards
    adaptive_reliability = reliability(stats)
    print(f"adaptive: forwards per image {adaptive_forwards.tolist()}, capped {int(stats.capped.sum())}, "
          f"reliability {np.round(adaptive_reliability, 3).tolist()} "
          f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    rows = [("adaptive", adaptive_forwards, adaptive_reliability, int(stats.capped.sum()))]
    samples = args.fixed_from or int(adaptive_forwards.max()) // 3
    fixed = None
    while samples <= args.max_samples and not args.adaptive_only:
        started = time.perf_counter()
        fixed_stats = LEG(n_samples=samples, **common).sample(model, images)
        fixed_reliability = reliability(fixed_stats)
        print(f"fixed {samples} per channel: reliability {np.round(fixed_reliability, 3).tolist()} "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        fixed = (f"fixed {samples} / channel", np.full(len(images), 3 * samples), fixed_reliability, 0)
        if fixed_reliability.min() >= args.target:
            break
        samples = math.ceil(samples * args.step / args.round_samples) * args.round_samples
    if fixed is not None:
        rows.append(fixed)
    print("| budget | forwards / image (mean; largest) | total forwards | worst map's reliability "
          "| mean reliability | capped |")
    print("|---|---|---|---|---|---|")
    for label, forwards, values, capped in rows:
        print(f"| {label} | {forwards.mean():,.0f}; {forwards.max():,} | {forwards.sum():,} "
              f"| {values.min():.3f} | {values.mean():.3f} | {capped} |")
    if fixed is not None:
        reached = fixed[2].min() >= args.target
        print(f"\nadaptive / fixed total forwards: {adaptive_forwards.sum() / fixed[1].sum():.2f}"
              + ("" if reached else f" (the last fixed budget tried left a map below {args.target})"))


if __name__ == "__main__":
    main()
