#!/usr/bin/env bash
# Install the Debian packages listed in scripts/debian-packages.txt that are not there yet.
set -euo pipefail
here=$(dirname "$0")
missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < "$here/debian-packages.txt"
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Without systemd the packaged services do not start; tests run their own servers on 127.0.0.1.
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
