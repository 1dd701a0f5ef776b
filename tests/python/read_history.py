"""Reads a toolgate Parquet history with two other engines and prints, as JSON, the
row count of every table and the distinct event/finding ids each engine saw.

usage: read_history.py HISTORY_DIR
"""
import json
import pathlib
import sys

import duckdb
import pyarrow.dataset as ds

TABLES = ["tool_calls", "tool_results", "tool_lists", "user_messages", "findings", "decisions"]
ID = {"findings": "finding_id", "decisions": "decision_id"}

root = pathlib.Path(sys.argv[1])
out = {}
con = duckdb.connect()
for table in TABLES:
    path = root / table
    if not path.exists() or not any(path.rglob("*.parquet")):
        out[table] = {"pyarrow": 0, "duckdb": 0, "pyarrow_ids": 0, "duckdb_ids": 0}
        continue
    id_col = ID.get(table, "event_id")
    data = ds.dataset(str(path), format="parquet", partitioning="hive").to_table()
    assert "date" in data.column_names and "hour" in data.column_names, data.column_names
    glob = str(path / "**" / "*.parquet")
    rows, ids = con.execute(
        f"SELECT count(*), count(DISTINCT {id_col}) FROM read_parquet('{glob}', hive_partitioning = true)"
    ).fetchone()
    out[table] = {
        "pyarrow": data.num_rows,
        "duckdb": rows,
        "pyarrow_ids": len(set(data.column(id_col).to_pylist())),
        "duckdb_ids": ids,
    }
print(json.dumps(out, sort_keys=True))
