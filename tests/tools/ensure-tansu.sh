#!/usr/bin/env bash
# Installs tansu 0.6.0, the Kafka-compatible broker the end-to-end Kafka tests run
# against (see "Real parts in tests" in DESIGN.md), under target/tools/tansu unless it
# is there already. Builds from crates.io: about 15 minutes on 2 cores, once per
# machine. 0.6.0's default features have no storage engine; dynostore brings the
# in-memory one the tests use.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=target/tools/tansu
if [ -x "$root/bin/tansu" ]; then
    exit 0
fi
cargo install tansu@0.6.0 --locked --quiet --no-default-features --features dynostore \
    --root "$root"
"$root/bin/tansu" --version
