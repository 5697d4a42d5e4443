"""The ``legx`` command line: ``main`` dispatches to one module per subcommand (``main.SUBCOMMANDS``)."""

from legx.pipeline.cli.main import main

__all__ = ["main"]
