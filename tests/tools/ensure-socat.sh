#!/usr/bin/env bash
# Installs socat from Debian if it is not on the PATH: the Kafka TLS test puts it in
# front of tansu, which checks SASL/SCRAM but does not serve TLS itself.
set -euo pipefail
if command -v socat >/dev/null 2>&1; then
    exit 0
fi
bash "$(dirname "$0")/apt-install.sh" socat
command -v socat
