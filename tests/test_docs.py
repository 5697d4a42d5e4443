"""The documentation: the site builds with ``mkdocs build --strict`` (a broken link, a page missing
from the navigation or an API directive naming a moved object fails), and the Markdown files
outside the site link only to files that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Relative Markdown links: [text](target) where target is not a URL or an in-page anchor.
_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s#]+)(?:#[^)\s]*)?\)")


def test_site_builds_strictly(tmp_path: Path) -> None:
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env=environment,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
    leg_api = (tmp_path / "site" / "api" / "leg" / "index.html").read_text()
    assert "Stein" in leg_api, "the LEG API page does not show LEG's module docstring"


def test_front_page_links_resolve() -> None:
    broken = [
        f"{document.name}: {target}"
        for document in (ROOT / "README.md", ROOT / "CONTRIBUTING.md")
        for target in _LINK.findall(document.read_text())
        if not (document.parent / target).exists()
    ]
    assert not broken, f"links to files that do not exist: {broken}"


# What a reader of the repository cannot open: this project's issue numbers, notes kept
# elsewhere, and the README cited as the evidence of a measurement (the docs pages hold them).
_UNREADABLE = re.compile(r"\bissue \d+|\(issue\b|design notes|the issue's|[(,] ?README\b", re.IGNORECASE)


def test_nothing_cites_what_a_reader_cannot_open() -> None:
    texts = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").rglob("*.md")]
    texts += [path for folder in ("src", "methods", "pipeline", "scripts", "tests", "cluster")
              for path in (ROOT / folder).rglob("*.py") if path != Path(__file__)]
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in texts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _UNREADABLE.search(line)
    ]
    assert not found, "point at the docs page instead:\n" + "\n".join(found)
