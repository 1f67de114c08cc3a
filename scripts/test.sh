#!/usr/bin/env bash
# Every test layer (unit, composites, jobs, integration against a real Orthanc), plus lint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
