#!/usr/bin/env bash
# Install Debian's redis-server when it is missing (the Redis online-store profile and its
# tests). Needs root or sudo; the package comes from the Debian mirror.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends redis-server >/dev/null 2>&1 || {
  $SUDO apt-get update >/dev/null
  $SUDO apt-get install -y --no-install-recommends redis-server >/dev/null
}
# Debian starts a system service on install; the project runs its own on a free port.
($SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true)
command -v redis-server
