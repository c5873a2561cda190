#!/usr/bin/env bash
# Installs the Debian packages the tests start as real servers / browsers. Idempotent; needs root.
set -euo pipefail
pkgs=(git)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "system-deps: missing ${missing[*]} (run as root or install them)" >&2; exit 0; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
