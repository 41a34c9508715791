#!/usr/bin/env bash
# Install the Debian packages listed in deploy/apt/*.txt that are not installed yet.
# Idempotent and quiet when everything is present, so `make demo` / `make test` can run it every time.
set -euo pipefail
cd "$(dirname "$0")/apt"
wanted=$(cat ./*.txt | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
missing=()
for pkg in $wanted; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
# npm is Debian's own package beside Debian's nodejs, but part of NodeSource's nodejs, which conflicts
# with Debian's npm: ask for it only when there is no npm command.
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "Installing system packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
