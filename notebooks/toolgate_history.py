"""Opens a toolgate Parquet history with the Python `datafusion` package.

The history is a directory (or any path DataFusion can list) holding one directory per
table, each partitioned hive-style by `date=YYYY-MM-DD/hour=HH`. The notebooks find it
in the TOOLGATE_HISTORY environment variable (default: ../toolgate-data/history).
"""
import os
import pathlib

import pyarrow as pa
from datafusion import SessionContext

TABLES = ["tool_calls", "tool_results", "tool_lists", "user_messages", "findings", "decisions"]


def history_path() -> pathlib.Path:
    return pathlib.Path(os.environ.get("TOOLGATE_HISTORY", "../toolgate-data/history"))


def connect(path=None) -> SessionContext:
    """A session with every table of the history that has files registered."""
    root = pathlib.Path(path) if path else history_path()
    if not root.is_dir():
        raise SystemExit(f"no history at {root}: write one with `toolgate analyze --history {root}`")
    ctx = SessionContext()
    for table in TABLES:
        directory = root / table
        if not any(directory.rglob("*.parquet")):
            continue
        ctx.register_listing_table(
            table,
            str(directory) + "/",
            table_partition_cols=[("date", pa.string()), ("hour", pa.string())],
            file_extension=".parquet",
        )
    return ctx


def sql(ctx: SessionContext, query: str):
    """Runs a query and returns a pandas DataFrame."""
    return ctx.sql(query).to_pandas()
