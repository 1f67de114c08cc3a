#!/usr/bin/env bash
# Installs what the project needs on a Debian/Ubuntu machine: Orthanc + its DICOMweb plugin (apt)
# and a virtualenv in .venv with the package and its test dependencies (pip). Safe to re-run:
# it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_install() {
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v Orthanc >/dev/null 2>&1 || [ ! -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
  echo "setup: installing Orthanc and its DICOMweb plugin (Debian packages)"
  # Our jobs and tests start their own Orthanc on free ports; the packaged service is not used.
  apt_install orthanc orthanc-dicomweb
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    apt_install python3-venv
    "$PYTHON" -m venv .venv
  fi
fi

stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages into .venv (apache-beam takes a minute)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# An editable install compiles nothing ahead, as a regular `pip install` does. Where the
# environment forbids writing bytecode (PYTHONDONTWRITEBYTECODE, a read-only checkout), every job
# would then compile the project's modules at each start (60-80 ms on 2 cores). Compiled once
# here; an edited module is newer than its .pyc and is simply compiled again when imported.
.venv/bin/python -m compileall -q -j 0 transforms pipelines >/dev/null
