#!/usr/bin/env bash
# Install Debian's Java 17 runtime when no Java 17+ is present (PySpark 4 for the Spark offline
# store profile and its test). Needs root or sudo; the package comes from the Debian mirror.
set -euo pipefail
if command -v java >/dev/null 2>&1; then
  version=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  if [ "${version:-0}" -ge 17 ]; then
    exit 0
  fi
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends openjdk-17-jre-headless >/dev/null 2>&1 || {
  $SUDO apt-get update >/dev/null
  $SUDO apt-get install -y --no-install-recommends openjdk-17-jre-headless >/dev/null
}
command -v java
