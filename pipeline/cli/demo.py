"""``legx demo-data DIR --count N``: the synthetic demo dataset (images + annotations.parquet),
or with ``--layout imagenet`` the same images as ImageNet's validation set ships (flat
ILSVRC2012_val_XXXXXXXX.JPEG files, LOC_val_solution.csv, LOC_synset_mapping.txt)."""

from __future__ import annotations

import argparse

LAYOUTS = ("legx", "imagenet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="folder to write (created if missing)")
    parser.add_argument("--count", type=int, default=64, help="number of images (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--layout", choices=LAYOUTS, default="legx",
                        help="legx: PNG files and annotations.parquet (default); imagenet: JPEG files"
                             " named and annotated as ImageNet's validation set")


def run(args: argparse.Namespace) -> int:
    from legx.pipeline.demo.data import (
        IMAGENET_LOC_FILE,
        IMAGENET_MAPPING_FILE,
        write_demo_dataset,
        write_imagenet_layout,
    )

    if args.layout == "imagenet":
        write_imagenet_layout(args.directory, args.count, seed=args.seed, image_size=args.image_size)
        print(f"legx: wrote {args.count} demo images, {IMAGENET_LOC_FILE} and {IMAGENET_MAPPING_FILE}"
              f" to {args.directory} (ImageNet's layout)")
        return 0
    write_demo_dataset(args.directory, args.count, seed=args.seed, image_size=args.image_size)
    print(f"legx: wrote {args.count} demo images and annotations.parquet to {args.directory}")
    return 0
