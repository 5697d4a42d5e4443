"""``legx demo-data DIR --count N``: the synthetic demo dataset (images + annotations.parquet)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="folder to write (created if missing)")
    parser.add_argument("--count", type=int, default=64, help="number of images (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64)


def run(args: argparse.Namespace) -> int:
    from legx.pipeline.demo.data import write_demo_dataset

    write_demo_dataset(args.directory, args.count, seed=args.seed, image_size=args.image_size)
    print(f"legx: wrote {args.count} demo images and annotations.parquet to {args.directory}")
    return 0
