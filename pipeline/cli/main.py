"""``legx``: run explanation jobs and look at their results.

    legx run                                   the embedded default (demo model and images)
    legx run CONFIG.yaml [--set key=value ...] a job from a config file
    legx run --input URI --output URI [--model SPEC] [--methods leg,leg-tv] [--samples N]
    legx query OUTPUT "SQL"                    DuckDB over the output (view ``saliency``)
    legx show OUTPUT IMAGE_ID [--method M] [--style overlay|heatmap|gray] [--signed] -o out.png
    legx demo-data DIR --count N               write the demo dataset
    legx report OUTPUT [-o report.html] [--model SPEC] [--compare DIR]
    legx compare OUTPUT_A OUTPUT_B [-o DIR]    how maps and metrics moved between two outputs
    legx sanity [CONFIG.yaml] [--images N] [--max-layers K]   OUTPUT/sanity/ for the report

    legx -v COMMAND ...  /  legx -q COMMAND ...   debug messages / warnings only

A subcommand is a module with ``add_arguments(parser)`` and ``run(args) -> int``, listed in
``SUBCOMMANDS``; modules are imported only when their command runs.

Library code reports through ``logging`` (a logger per module, under ``pipeline`` and
``methods``); the command line configures those two loggers: messages as ``legx: MESSAGE``,
progress on stdout and warnings on stderr, INFO by default. A command's result (a table, a
summary, the file it wrote) is printed whatever the verbosity.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
from collections.abc import Sequence

# name -> (module, one-line help). Adding a subcommand is one line here plus its module.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("legx.pipeline.cli.run", "run an explanation job (no arguments: the embedded demo)"),
    "query": ("legx.pipeline.cli.query", "SQL over a job's output with DuckDB (view 'saliency')"),
    "show": ("legx.pipeline.cli.show", "render one image's saliency map to a PNG"),
    "demo-data": ("legx.pipeline.cli.demo", "write the synthetic demo dataset to a folder"),
    "report": ("legx.pipeline.cli.report", "render the HTML report of a job's output"),
    "compare": ("legx.pipeline.cli.compare", "compare the maps and metrics of two outputs"),
    "sanity": ("legx.pipeline.cli.sanity", "cascading-randomisation sanity check of the configured methods"),
}


# The loggers of legx's library code; other libraries' (Ray's, botocore's) keep their own setup.
LIBRARY_LOGGERS = ("legx",)
VERBOSITY_LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class ConsoleHandler(logging.Handler):
    """Records below WARNING to stdout, the rest to stderr, as the command's prints go. The
    streams are looked up per record, so that a redirected sys.stdout (tests) is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # logging's contract: a failing handler reports, never raises
            self.handleError(record)


def configure_logging(verbosity: int = 0) -> None:
    """Show the library loggers' messages at ``verbosity`` -1 (warnings only), 0 (INFO) or 1
    (DEBUG, with the logger's name). Replaces an earlier call's handler."""
    handler = ConsoleHandler()
    detail = "%(name)s: " if verbosity > 0 else ""
    handler.setFormatter(logging.Formatter(f"legx: {detail}%(message)s"))
    for name in LIBRARY_LOGGERS:
        library_logger = logging.getLogger(name)
        for old in [h for h in library_logger.handlers if isinstance(h, ConsoleHandler)]:
            library_logger.removeHandler(old)
        library_logger.addHandler(handler)
        library_logger.setLevel(VERBOSITY_LEVELS[verbosity])


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (all are listed in the help)."""
    parser = argparse.ArgumentParser(
        prog="legx", description="Dataset-scale saliency maps (LEG, LEG-TV and more) on Ray Data."
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=0,
                           help="also show debug messages")
    verbosity.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1,
                           help="show warnings and errors only (results are still printed)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        if not _installed(module):
            continue
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    configure_logging(args.verbosity)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.run(args) or 0)


def print_table(columns: list[str], rows: list[tuple], output_format: str = "table", file=None) -> None:
    """Rows as an aligned text table, CSV or JSON lines."""
    file = file or sys.stdout
    if output_format == "json":
        for row in rows:
            print(json.dumps(dict(zip(columns, row)), default=str), file=file)
        return
    if output_format == "csv":
        import csv

        # Unix line ends: a shell's $(legx query ... | tail -1) must not carry a carriage return.
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)), file=file)
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", file=file)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)) and len(value) > 6:
        head = ", ".join(_cell(v) for v in value[:3])
        return f"[{head}, ... {len(value)} values]"
    return "NULL" if value is None else str(value)


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    """--endpoint-url, --region, --anonymous (credentials come from the AWS chain)."""
    parser.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)")
    parser.add_argument("--region", help="S3 region (default: the bucket's)")
    parser.add_argument("--anonymous", action="store_true", help="read public buckets without credentials")


def storage_from(args: argparse.Namespace):
    from legx.pipeline.engine.storage import StorageOptions

    return StorageOptions(endpoint_url=args.endpoint_url, region=args.region, anonymous=args.anonymous)

