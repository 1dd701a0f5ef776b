#!/usr/bin/env bash
# Installs the PostgreSQL client (psql) from Debian if it is not on the PATH; the SQL
# tests drive `toolgate serve-sql` with it.
set -euo pipefail
if command -v psql >/dev/null 2>&1; then
    exit 0
fi
bash "$(dirname "$0")/apt-install.sh" postgresql-client
command -v psql
