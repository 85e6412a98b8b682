#!/usr/bin/env bash
# Install what is missing, then run LeaF's whole pipeline on the planted-confounder testbed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/leaf demo "$@"
