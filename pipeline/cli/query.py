"""``legx query OUTPUT "SQL"``: DuckDB over a job's output (view ``saliency``, and ``runs``).
``legx query OUTPUT per-class`` runs the per-class audit (``legx.pipeline.analysis.per_class``)."""

from __future__ import annotations

import argparse
import sys

import duckdb

from legx.pipeline.cli.main import add_storage_arguments, print_table, storage_from
from legx.pipeline.analysis.query import EmptyOutputError, run_query


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="the job's output (local path or s3://)")
    parser.add_argument("sql", help="SQL over the view 'saliency', e.g. \"select method, count(*) from saliency"
                        " group by 1\"; or per-class: the per-class audit")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    add_storage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        if args.sql == "per-class":
            from legx.pipeline.analysis.per_class import per_class
            from legx.pipeline.analysis.query import connect
            from legx.pipeline.analysis.report_data import saliency_columns

            connection = connect(args.output, storage_from(args))
            columns, rows = per_class(connection, saliency_columns(connection))
        else:
            columns, rows = run_query(args.output, args.sql, storage_from(args))
    except (EmptyOutputError, duckdb.Error) as error:
        print(f"legx: {error}", file=sys.stderr)
        return 1
    print_table(columns, rows, args.format)
    return 0
