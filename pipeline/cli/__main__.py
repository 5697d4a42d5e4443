"""``python -m pipeline.cli``: the ``legx`` command."""

from pipeline.cli.main import main

raise SystemExit(main())
