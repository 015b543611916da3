#!/usr/bin/env bash
# Installs the Debian packages FedCoord needs, only those that are missing.
# Usage: .ci/install-deps.sh [extra-package …]
set -euo pipefail
wanted=(libssl-dev libprotobuf-c-dev pkg-config "$@")
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then exit 0; fi
echo "installing: ${missing[*]}"
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
