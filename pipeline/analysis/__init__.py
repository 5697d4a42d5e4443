"""Tools that read a job's output (DuckDB over Parquet): query, report, compare, sanity, show.
They import neither torch nor Ray unless a command is given a model."""
