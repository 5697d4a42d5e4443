"""ROAD beside deletion and insertion for every method's maps on the demo data.

Reads the maps ``scripts/compare_methods.py --save-maps MAPS.npz`` wrote (same ``--count`` and
``--seed``), regenerates the same demo images, scores every method's maps with
``compute_metrics`` (deletion and insertion AUC, ROAD MoRF / LeRF / combined at their defaults)
and prints a Markdown table: each mean with its 95% bootstrap interval over the images, then,
for every pair of methods, the paired mean difference of each score with its 95% bootstrap
interval, so that a ranking is only read where the interval excludes 0.

    python scripts/compare_methods.py --count 96 --methods grad-cam leg ... --save-maps maps.npz
    python scripts/road_method_table.py maps.npz --count 96 --out road_table.md
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from legx import methods
from legx.methods.metrics.catalogue import higher_is_better
from legx.methods.metrics.compute import compute_metrics
from legx.methods.metrics.intervals import mean_estimate
from legx.pipeline.demo.data import make_demo_arrays

SCORES = ["deletion_auc", "insertion_auc", "road_morf", "road_lerf", "road_combined"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("maps", help="the .npz of compare_methods.py --save-maps")
    parser.add_argument("--count", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    saved = dict(np.load(args.maps))
    pixels, labels, masks = make_demo_arrays(args.count, seed=args.seed)
    if not np.array_equal(saved.pop("masks"), masks):
        raise SystemExit("the saved maps are of other images: pass compare_methods.py's --count and --seed")
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    model = methods.load_model("demo", device="cpu")
    values: dict[str, dict[str, np.ndarray]] = {}
    start = time.perf_counter()
    for label, maps in saved.items():
        values[label] = compute_metrics(model, images, maps, labels, SCORES)
    seconds = time.perf_counter() - start
    arrows = {name: "↑" if higher_is_better(name) else "↓" for name in SCORES}
    lines = [f"{args.count} demo images (seed {args.seed}), demo model, maps of the true label; mean [95%"
             " bootstrap interval] over the images; ROAD at its defaults (fractions 0.1..0.9, noise 0.01).", "",
             "| method | " + " | ".join(f"{name} {arrows[name]}" for name in SCORES) + " |",
             "|---" * (len(SCORES) + 1) + "|"]
    for label, scores in values.items():
        lines.append(f"| {label} | " + " | ".join(mean_estimate(scores[name]).text() for name in SCORES) + " |")
    lines += ["", "Paired differences (row method minus column method, mean [95% bootstrap interval] of the"
              " per-image differences); **bold** where the interval excludes 0:", ""]
    for name in SCORES:
        lines += [f"### {name} {arrows[name]}", "", "| A - B | difference |", "|---|---|"]
        for first, second in itertools.combinations(values, 2):
            estimate = mean_estimate(values[first][name] - values[second][name])
            text = estimate.text()
            if estimate.n and (estimate.low > 0 or estimate.high < 0):
                text = f"**{text}**"
            lines.append(f"| {first} - {second} | {text} |")
        lines.append("")
    lines.append(f"Scoring time: {seconds:.0f} s for {len(values)} methods x {args.count} images (CPU,"
                 f" {args.threads} torch thread).")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
