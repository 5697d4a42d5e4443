"""``legx compare OUTPUT_A OUTPUT_B [-o DIR]``: the command line of ``legx.pipeline.analysis.compare``."""

from __future__ import annotations

import argparse
import sys

from legx.pipeline.analysis.compare import PAIRS_FILE, SUMMARY_FILE, compare_runs
from legx.pipeline.analysis.query import EmptyOutputError
from legx.pipeline.cli.main import add_storage_arguments, storage_from
from legx.pipeline.engine.storage import join


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_a", help="the baseline output (local path or s3://)")
    parser.add_argument("output_b", help="the output to compare with it")
    parser.add_argument("-o", "--out", default="legx-compare",
                        help="folder for pairs.parquet and summary.json (default legx-compare)")
    parser.add_argument("--top", type=int, default=20, help="how many moved pairs to list (default 20)")
    add_storage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        summary = compare_runs(args.output_a, args.output_b, args.out, storage_from(args), args.top)
    except (EmptyOutputError, OSError, ValueError) as error:
        print(f"legx: {error}", file=sys.stderr)
        return 1
    print(f"legx: {summary['matched']} matched maps ({summary['only_a']} only in A,"
          f" {summary['only_b']} only in B); wrote {join(args.out, PAIRS_FILE)} and {SUMMARY_FILE}")
    for label, entry in summary["methods"].items():
        mean = entry["spearman_mean"]
        rate = entry["target_changed_rate"]
        print(f"  {label}: {entry['pairs']} pairs, mean Spearman "
              f"{'n/a' if mean is None else f'{mean:.3f}'} {_bracket(entry['spearman_interval'])},"
              f" {entry['target_changed']} target(s) changed"
              f" (rate {_bracket([rate['low'], rate['high']])})")
        for metric, shift in entry["metric_shift"].items():
            before, after = entry["metric_a"][metric], entry["metric_b"][metric]
            chance = before["chance"] if before["chance"] is not None else after["chance"]
            print(f"    {metric}: A {_value(before['mean'])} {_bracket([before['low'], before['high']])},"
                  f" B {_value(after['mean'])} {_bracket([after['low'], after['high']])},"
                  f" shift {_value(shift)} {_bracket(entry['metric_shift_interval'][metric])}"
                  + ("" if chance is None else f"; chance {chance:.3f}"))
    return 0


def _value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _bracket(bounds: list[float | None]) -> str:
    """'[low, high]' of a 95% interval from the JSON summary (None: not estimable)."""
    if bounds[0] is None or bounds[1] is None:
        return "[n/a]"
    return f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"
