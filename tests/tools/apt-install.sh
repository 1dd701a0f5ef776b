#!/usr/bin/env bash
# Installs the Debian packages named, quietly and without recommends: what the
# ensure-*.sh scripts run once they find their program missing.
set -euo pipefail
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends "$@" >/dev/null
