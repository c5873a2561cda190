#!/usr/bin/env bash
# Installs the Debian packages that the test suite starts as real servers or browsers.
# Idempotent: apt runs only when something is missing. Needs root (CI and dev machines here are root).
set -euo pipefail
# Remotes: sshd for the SSH remote, OpenStack Swift + its S3 layer + memcached for the S3 remote.
remote_pkgs=(openssh-server openssh-client swift swift-proxy swift-account swift-container swift-object memcached)
# Plots: headless Chromium to check that `dvc plots show` renders offline.
browser_pkgs=(chromium)
pkgs=(git "${remote_pkgs[@]}" "${browser_pkgs[@]}")
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "system-deps: missing ${missing[*]} (install them as root); their tests will be skipped" >&2; exit 0; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
