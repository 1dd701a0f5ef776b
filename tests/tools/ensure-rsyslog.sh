#!/usr/bin/env bash
# Installs rsyslog with its TLS driver from Debian if rsyslogd is missing; the SIEM
# tests send syslog (TCP and TLS) to a real rsyslogd they start themselves.
set -euo pipefail
if command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ]; then
    exit 0
fi
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends rsyslog rsyslog-gnutls openssl >/dev/null
ls -l /usr/sbin/rsyslogd
