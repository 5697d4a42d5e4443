"""legx's Ray Data job and the tools around it (docs/development/architecture.md):

    engine/    the job, one module per stage (``engine.run.run_job`` chains them)
    analysis/  reading outputs: query, report, compare, sanity, show
    cli/       the ``legx`` command, one module per subcommand
    demo/      the bundled demo dataset
"""
