"""The DuckDB side of benches/history.rs: the same queries over the same Parquet files,
timed the same way (one warm-up, then REPEAT runs), on as many threads as DataFusion
gets. The bench takes medians over the runs of every round, so this reports each run.

usage: history_duckdb.py HISTORY_DIR THREADS REPEAT QUERY_NAME=SQL...
SQL names the table as {tool_calls}; it is replaced by a hive-partitioned read_parquet.
Prints one JSON object: {name: {"times_s", "rows"}}.
"""
import json
import sys
import time

import duckdb

root, threads, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
source = f"read_parquet('{root}/tool_calls/**/*.parquet', hive_partitioning = true)"
out = {}
for arg in sys.argv[4:]:
    name, sql = arg.split("=", 1)
    sql = sql.replace("{tool_calls}", source)
    rows = con.execute(sql).fetchall()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        rows = con.execute(sql).fetchall()
        times.append(time.perf_counter() - start)
    out[name] = {
        "times_s": times,
        "rows": len(rows),
    }
print(json.dumps(out))
