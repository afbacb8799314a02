#!/usr/bin/env bash
# Installs the Debian packages in infra/apt-packages.txt that are missing (idempotent).
# Daemons from these packages are started by the tests themselves, never by the package
# scripts: policy-rc.d blocks service starts during installation.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mapfile -t want < <(grep -v '^\s*#' "$here/apt-packages.txt" | awk 'NF {print $1}')
[ ${#want[@]} -eq 0 ] && exit 0
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
