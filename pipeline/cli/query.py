"""``legx query OUTPUT "SQL"``: DuckDB over a job's output (view ``saliency``, and ``runs``)."""

from __future__ import annotations

import argparse
import sys

import duckdb

from legx.pipeline.cli.main import add_storage_arguments, print_table, storage_from
from legx.pipeline.analysis.query import EmptyOutputError, run_query


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="the job's output (local path or s3://)")
    parser.add_argument("sql", help="SQL over the view 'saliency', e.g. \"select method, count(*) from saliency group by 1\"")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    add_storage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        columns, rows = run_query(args.output, args.sql, storage_from(args))
    except (EmptyOutputError, duckdb.Error) as error:
        print(f"legx: {error}", file=sys.stderr)
        return 1
    print_table(columns, rows, args.format)
    return 0
