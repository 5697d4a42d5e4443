"""MkDocs hook: lay out the package as it installs, for the API pages' static analysis.

The repository's ``methods/`` and ``pipeline/`` folders install as ``legx.methods`` and
``legx.pipeline`` (``pyproject.toml``'s ``[tool.setuptools.package-dir]``). Griffe, which reads
the docstrings for mkdocstrings, looks for ``legx`` on disk and would find ``src/legx`` alone in
an editable install. This hook builds the installed layout from links in a temporary folder,
from that same table, and points the Python handler at it; nothing is imported.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import tomllib
from pathlib import Path

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[2]


def package_tree(destination: Path) -> Path:
    """Links under ``destination`` that mirror the installed package; returns ``destination``."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items(), key=lambda item: item[0].count(".")):
        target = destination.joinpath(*package.split("."))
        if "." not in package:
            target.mkdir(parents=True)
            for child in (ROOT / folder).iterdir():
                (target / child.name).symlink_to(child)
        else:
            target.symlink_to(ROOT / folder, target_is_directory=True)
    return destination


@event_priority(100)  # before mkdocstrings reads its handler options
def on_config(config, **kwargs):
    tree = package_tree(Path(tempfile.mkdtemp(prefix="legx-api-")))
    atexit.register(shutil.rmtree, tree, ignore_errors=True)
    python = config.plugins["mkdocstrings"].config["handlers"]["python"]
    python["paths"] = [str(tree)]
    return config
