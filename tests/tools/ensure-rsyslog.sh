#!/usr/bin/env bash
# Installs rsyslog with its TLS driver from Debian if rsyslogd is missing; the SIEM
# tests send syslog (TCP and TLS) to a real rsyslogd they start themselves.
set -euo pipefail
if command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ]; then
    exit 0
fi
bash "$(dirname "$0")/apt-install.sh" rsyslog rsyslog-gnutls openssl
ls -l /usr/sbin/rsyslogd
