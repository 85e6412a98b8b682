#!/usr/bin/env bash
# Install what is missing into ./.venv: CPU PyTorch 2.13.0 (never a CUDA build), then leaf.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
fi
# With torch already present, leaf's "torch>=2.4" installs nothing more.
.venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
# Liger-Kernel, the peer that the benchmark tests run beside leaf's loss (bench_kl.py --peers):
# its chunked losses are plain PyTorch and run on a CPU; --no-deps keeps its GPU-only
# dependency (triton) out. Optional for leaf itself (the `bench` extra).
if ! .venv/bin/python -c "import liger_kernel" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check --no-deps "liger-kernel==0.8.5"
fi
