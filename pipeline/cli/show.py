"""``legx show OUTPUT IMAGE_ID -o out.png``: one image with its saliency map."""

from __future__ import annotations

import argparse
import sys

from legx.pipeline.cli.main import add_storage_arguments, storage_from
from legx.pipeline.analysis.show import STYLES, show


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="the job's output (local path or s3://)")
    parser.add_argument("image_id", help="the image's id as stored (path relative to the input root)")
    parser.add_argument("--method", help="method name (default: any, 'ok' rows first)")
    parser.add_argument("--lam", type=float, help="lambda of methods that have several (leg-tv)")
    parser.add_argument("--run-id", help="run id (default: the newest row)")
    parser.add_argument("--style", choices=STYLES, default="overlay")
    parser.add_argument("--signed", action="store_true", help="keep the sign of the map (diverging colours)")
    parser.add_argument("--significant", action="store_true",
                        help="grey out the cells whose interval (from the stored standard errors, LEG"
                        " only) contains zero, holding the false-discovery rate over the map's cells"
                        " at --fdr (Benjamini-Hochberg on the cells' normal p-values)")
    parser.add_argument("--fdr", type=float, default=0.05, help="false-discovery rate of --significant")
    parser.add_argument("-o", "--out", required=True, help="PNG file to write")
    add_storage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        row = show(args.output, args.image_id, args.out, storage_from(args), method=args.method,
                   lam=args.lam, run_id=args.run_id, style=args.style, signed=args.signed,
                   significant=args.significant, fdr=args.fdr)
    except (LookupError, ValueError, OSError) as error:
        print(f"legx: {error}", file=sys.stderr)
        return 1
    lam = f" lam={row['lam']:g}" if row["lam"] is not None else ""
    print(f"legx: wrote {args.out} ({row['image_id']}, {row['method']}{lam}, run {row['run_id']})")
    return 0
