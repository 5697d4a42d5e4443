"""HTML and figure helpers of the report (``legx.pipeline.analysis.report``): escaped text, numbers
shown with three decimals ('–' for missing or non-finite), tables, and matplotlib figures drawn on
the Agg canvas and embedded as base64 PNG, so the file opens without the output or a network."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str = "", sortable: bool = False) -> str:
    """An HTML table; ``sortable``: a click on a heading sorts by that column (``SORT_SCRIPT``)."""
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(number(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    identifier = f' id="{escape(table_id)}"' if table_id else ""
    if sortable:
        identifier += ' class="sortable"'
    return f"<table{identifier}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure_html(figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{encoded}">'


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    # Figure() draws on the Agg canvas without pyplot's global state or a display.
    return Figure(figsize=(width, height))


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } .note { color: #555; font-style: italic; }
.scroll { max-height: 40em; overflow-y: auto; } .scroll th { position: sticky; top: 0; }
table.sortable th { cursor: pointer; }
"""

# Sorts a table.sortable by the clicked column (numbers as numbers, '–' last; a second click
# reverses), so that a table of 1,000 classes can be read by any column.
SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach((th, column) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const ascending = th.dataset.order !== 'asc';
  th.dataset.order = ascending ? 'asc' : 'desc';
  const key = row => { const text = row.cells[column].textContent.trim(); const value = parseFloat(text);
    return text === '–' ? null : (isNaN(value) ? text : value); };
  const rows = Array.from(body.rows).sort((a, b) => { const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);
    const order = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
    return ascending ? order : -order; });
  rows.forEach(row => body.appendChild(row));
}));
"""
