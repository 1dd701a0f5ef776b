#!/usr/bin/env bash
# Installs the PostgreSQL client (psql) from Debian if it is not on the PATH; the SQL
# tests drive `toolgate serve-sql` with it.
set -euo pipefail
if command -v psql >/dev/null 2>&1; then
    exit 0
fi
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends postgresql-client >/dev/null
command -v psql
