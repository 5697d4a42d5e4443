"""``legx report OUTPUT [-o report.html]``: the command line of ``legx.pipeline.analysis.report``."""

from __future__ import annotations

import argparse
import sys

from legx.pipeline.analysis.query import EmptyOutputError
from legx.pipeline.analysis.report import summary_markdown, write_report
from legx.pipeline.cli.main import add_storage_arguments, storage_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="the job's output (local path or s3://)")
    parser.add_argument("-o", "--out", default="report.html", help="HTML file to write (default report.html)")
    parser.add_argument("--model", help="model spec for the sensitivity curves (e.g. 'demo'); skipped without")
    parser.add_argument("--device", help="device of the model (default: cuda when available)")
    parser.add_argument("--compare", help="a folder written by 'legx compare' to include")
    parser.add_argument("--sensitivity-images", type=int, default=4, help="images per method (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="picks the random gallery and sensitivity images")
    parser.add_argument("--markdown", help="also write the per-method table (means with 95%% intervals) as Markdown here")
    add_storage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        report = write_report(
            args.output, args.out, args.model, storage=storage_from(args), compare_dir=args.compare,
            sensitivity_images=args.sensitivity_images, seed=args.seed, device=args.device,
        )
    except (EmptyOutputError, OSError, ValueError) as error:
        print(f"legx: {error}", file=sys.stderr)
        return 1
    print(
        f"legx: wrote {report.path}: {report.rows} rows ({report.ok} ok, {report.errors} errors),"
        f" {len(report.variants)} method variant(s), {report.images} figure(s)"
    )
    for note in report.notes:
        print(f"legx: note: {note}")
    if args.markdown:
        table = summary_markdown(args.output, storage_from(args))
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write(table)
        print(f"legx: wrote {args.markdown}")
    return 0
