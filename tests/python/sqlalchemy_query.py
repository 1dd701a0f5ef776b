"""Connects to toolgate serve-sql through SQLAlchemy's PostgreSQL dialect (pg8000), as
Superset and other BI tools do, and prints the server version it parsed and a count.

Usage: sqlalchemy_query.py PORT USER PASSWORD SQL
"""

import json
import sys

from sqlalchemy import create_engine, text

port, user, password, sql = sys.argv[1:5]
engine = create_engine(f"postgresql+pg8000://{user}:{password}@127.0.0.1:{port}/toolgate")
with engine.connect() as connection:
    value = connection.execute(text(sql)).scalar()
print(json.dumps({"server_version_info": list(engine.dialect.server_version_info), "value": value}))
