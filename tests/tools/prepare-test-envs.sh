#!/usr/bin/env bash
# Makes the Python venvs and the npm packages the tests use (under target/), as the
# tests would on first use, so that `.ci/run` can make them in the background while
# tansu and the workspace compile: on a clean clone they cost the test run a minute or
# two of downloads. A venv made here carries the stamp its test checks (the contents of
# its requirements file); a test finding no stamp, or another one, makes its own, so a
# gap here costs time, never a result.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p target

# venv <dir under target/> <requirements file> <stamp file name>
venv() {
    local dir="target/$1" requirements="$2" stamp="$3"
    if cmp -s "$requirements" "$dir/$stamp" 2>/dev/null; then
        return 0
    fi
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet -r "$requirements"
    cp "$requirements" "$dir/$stamp"
}

# tests/integration (python_venv): the stamp is `.requirements`.
venv test-venv-prometheus tests/requirements-prometheus.txt .requirements &
venv test-venv-history tests/requirements-history.txt .requirements &
venv test-venv-ocsf tests/requirements-ocsf.txt .requirements &
wait
venv test-venv-otel tests/requirements-otel.txt .requirements &
venv test-venv-webhooks tests/requirements-webhooks.txt .requirements &
venv test-venv-pysigma tests/requirements-sigma.txt .requirements &
wait
# sink-agent/tests/integration/mcp_peers.rs: the stamp is `requirements.txt`, and the
# reference servers are `npm ci`'d from the committed lockfile.
venv test-venv-mcp sink-agent/tests/peers/requirements.txt requirements.txt &
(
    peers=target/mcp-peers
    if ! cmp -s sink-agent/tests/peers/package-lock.json "$peers/package-lock.json" \
        || [ ! -d "$peers/node_modules" ]; then
        mkdir -p "$peers"
        cp sink-agent/tests/peers/package.json sink-agent/tests/peers/package-lock.json "$peers/"
        (cd "$peers" && npm ci --no-audit --no-fund --silent)
    fi
) &
# notebooks/run.sh checks the imports itself.
if ! target/notebook-venv/bin/python -c "import datafusion, nbclient, matplotlib" 2>/dev/null; then
    venv notebook-venv notebooks/requirements.txt .requirements &
fi
wait
