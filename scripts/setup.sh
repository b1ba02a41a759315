#!/usr/bin/env bash
# Idempotent set-up: Debian packages (packages.txt + the corpus builder's and the browser test's),
# then a virtual environment from requirements.txt.  Re-runs only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS="$(grep -v '^#' packages.txt | xargs) mma openttd-openmsx freedoom chromium chromium-driver"
missing=""
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  $PY -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat $stamp 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python requirements"
  .venv/bin/pip install -q -r requirements.txt
  echo "$want" > $stamp
fi
