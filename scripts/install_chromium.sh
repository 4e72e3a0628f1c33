#!/usr/bin/env bash
# Install Debian's chromium when it is missing (the UI test drives it headless against
# `dagster dev`). Needs root or sudo; the package comes from the Debian mirror.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends chromium fonts-liberation >/dev/null 2>&1 || {
  $SUDO apt-get update >/dev/null
  $SUDO apt-get install -y --no-install-recommends chromium fonts-liberation >/dev/null
}
command -v chromium
