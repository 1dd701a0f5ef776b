#!/usr/bin/env bash
# Installs socat from Debian if it is not on the PATH: the Kafka TLS test puts it in
# front of tansu, which checks SASL/SCRAM but does not serve TLS itself.
set -euo pipefail
if command -v socat >/dev/null 2>&1; then
    exit 0
fi
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends socat >/dev/null
command -v socat
