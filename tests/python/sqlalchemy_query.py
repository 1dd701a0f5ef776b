"""Connects to toolgate serve-sql through SQLAlchemy's PostgreSQL dialect, as Superset
and other BI tools do, with a driver (psycopg, pg8000), and prints the server version
it parsed and the query's value.

Usage: sqlalchemy_query.py DRIVER PORT USER PASSWORD SQL
"""

import json
import sys

from sqlalchemy import create_engine, text

driver, port, user, password, sql = sys.argv[1:6]
engine = create_engine(f"postgresql+{driver}://{user}:{password}@127.0.0.1:{port}/toolgate")
with engine.connect() as connection:
    value = connection.execute(text(sql)).scalar()
print(json.dumps({"server_version_info": list(engine.dialect.server_version_info), "value": value}))
