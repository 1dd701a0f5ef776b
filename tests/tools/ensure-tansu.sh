#!/usr/bin/env bash
# Installs tansu 0.6.0, the Kafka-compatible broker the end-to-end Kafka tests run
# against (see "Real parts in tests" in DESIGN.md), under target/tools/tansu-0.6.0
# unless it is there already. Built from crates.io with the two storage engines the
# tests use: dynostore's in-memory one, and libsql's SQLite file, which survives a
# restart (SCRAM users can only be created while authentication is off, so the TLS and
# SCRAM test provisions a file and restarts the broker on it with authentication on).
# An unoptimised build (opt-level 0, no LTO, no debug info): the broker is a test
# fixture that carries a few hundred records, and this takes 6 minutes on 2 cores where
# opt-level 1 took 9 and the default profile 15.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=target/tools/tansu-0.6.0
if [ -x "$root/bin/tansu" ]; then
    exit 0
fi
CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_LTO=false \
CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo install tansu@0.6.0 --locked --quiet --no-default-features \
    --features dynostore,libsql --root "$root"
"$root/bin/tansu" --version
