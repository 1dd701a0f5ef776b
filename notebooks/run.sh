#!/usr/bin/env bash
# Executes every notebook headless against a history that `toolgate analyze` writes
# from the shared AgentDojo runs. Builds the venv from requirements.txt once (under
# target/), reuses it afterwards. CI runs this; so can you.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/notebook-venv
if ! "$venv/bin/python" -c "import datafusion, nbclient, matplotlib" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r notebooks/requirements.txt
fi
archive=../shared/datasets/agentdojo/runs-workspace-travel-banking.tar.gz
events=target/notebook-events.jsonl.gz
history=target/notebook-history
# CI passes the binary its tests built (TOOLGATE=target/debug/toolgate): `cargo run`
# resolves the root package's features alone and would rebuild part of the tree.
if [ -n "${TOOLGATE:-}" ]; then
    toolgate=("$TOOLGATE")
else
    toolgate=(cargo run --quiet --)
fi
"${toolgate[@]}" import agentdojo --input "$archive" --output "$events"
rm -rf "$history"
"${toolgate[@]}" analyze --input "$events" --history "$history" --output /dev/null
TOOLGATE_HISTORY="$PWD/$history" \
    "$venv/bin/python" notebooks/execute.py target/notebooks-executed notebooks/*.ipynb
