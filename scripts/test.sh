#!/usr/bin/env bash
# Install what is missing, then lint and run the test suite (tests marked slow are left out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -m "not slow" "$@"
