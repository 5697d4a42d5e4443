"""The report's "Trust" section: how far each method's sampled maps can be trusted.

Per method variant: the distribution of the maps' ``reliability`` (the predicted seed-to-seed
Spearman, docs/trust.md), the forwards its maps cost (``n_forwards``; a
sampling shared by LEG and LEG-TV counts on both, the manifest's totals once), the maps capped
before their target, and the maps below target, listed worst first. The target is a map's
``target_reliability`` parameter where its method has one (adaptive budgets), else
``DEFAULT_TARGET``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_TARGET = 0.9
MAX_FLAGGED = 50

_TARGET_SQL = (
    f"coalesce(try_cast(json_extract_string(params, '$.target_reliability') as double), {DEFAULT_TARGET})"
)


def trust_section(connection, variants: Sequence[Any], columns: Sequence[str],
                  table: Callable[..., str]) -> str:
    """HTML of the section; empty when the output has no ``reliability`` column or no value.
    ``variants`` are the report's (``where()`` gives their SQL condition); ``table`` renders a
    header and rows as the report's other tables."""
    if "reliability" not in columns:
        return ""
    rows = []
    for variant in variants:
        condition, values = variant.where()
        result = connection.execute(
            "select count(*) filter (where status = 'ok'), count(reliability),"
            " min(reliability), quantile_cont(reliability, 0.1), median(reliability),"
            " avg(reliability), sum(n_forwards), avg(n_forwards),"
            " count(*) filter (where capped),"
            f" count(*) filter (where reliability < {_TARGET_SQL})"
            f" from saliency where status = 'ok' and {condition}",
            values,
        ).fetchall()[0]
        if result[1]:
            rows.append([variant.label, *result])
    if not rows:
        return ""
    flagged = connection.execute(
        f"select image_id, method, lam, reliability, {_TARGET_SQL}, n_forwards, capped from saliency"
        f" where status = 'ok' and reliability < {_TARGET_SQL} order by reliability limit ?",
        [MAX_FLAGGED],
    ).fetchall()
    header = ["method", "maps", "with reliability", "min", "10%", "median", "mean",
              "forwards (sum)", "forwards / map", "capped", "below target"]
    parts = [
        "<h2>Trust in the maps</h2>",
        "<p>Reliability: the Spearman rank correlation expected between a map and the map of an"
        " independent run with the same budget (predicted from the run's own samples). Forwards"
        " count a sampling shared by several maps on each of them.</p>",
        table(header, rows, "trust"),
    ]
    if flagged:
        parts.append(f"<h3>Maps below target ({len(flagged)} shown, worst first)</h3>")
        parts.append(table(["image", "method", "lam", "reliability", "target", "forwards", "capped"],
                           flagged, "below-target"))
    else:
        parts.append("<p>Every map with a reliability reaches its target.</p>")
    return "".join(parts)
