#!/usr/bin/env bash
# Creates .venv and installs the harness with its dev tools. Idempotent.
# On a machine without an NVIDIA GPU the CPU build of torch is installed first (pinned, from the
# local wheel where there is one), so the `torch>=2.4` requirement does not pull several GB of CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/pip install -q torch
  else
    .venv/bin/pip install -q "torch==${TORCH_CPU_VERSION:-2.13.0}" \
      || .venv/bin/pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
.venv/bin/pip install -q -e ".[dev]"
