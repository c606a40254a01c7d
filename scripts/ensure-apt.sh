#!/usr/bin/env bash
# Install the Debian packages given as arguments, but only those that are missing, so
# that `make` is fast on a machine that has them and works on one that does not.
set -euo pipefail
missing=()
for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# An install interrupted earlier (a killed make) leaves dpkg refusing all work until
# it is finished; finishing it is what apt-get itself asks for.
dpkg --configure -a >/dev/null 2>&1 || true
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
