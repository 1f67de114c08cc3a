#!/usr/bin/env bash
# The main job on bundled sample data against a local Orthanc it starts (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pipelines.demo "$@"
