"""``python -m pipeline.cli``: the ``legx`` command."""

from legx.pipeline.cli.main import main

raise SystemExit(main())
