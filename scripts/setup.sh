#!/usr/bin/env bash
# Creates .venv and installs the harness with its tools (EXTRAS, default "dev"; a cluster node: "cluster").
# Idempotent. torch is pinned on every path (TORCH_VERSION, default 2.13.0), and never installed twice:
#   - PYTHON already has a CUDA build of torch (a GPU image, a Deep Learning AMI): the venv is made with
#     --system-site-packages and uses it; pyproject's `torch>=2.4` is then satisfied, nothing is downloaded;
#   - an NVIDIA GPU (nvidia-smi) and no torch: torch==TORCH_VERSION, the CUDA build from the package index;
#   - otherwise the CPU build, torch==TORCH_VERSION from TORCH_INDEX_URL (default: PyTorch's CPU index;
#     pip's find-links, a local wheel, count too), so no GB of CUDA libraries; else the default index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${EXTRAS:-dev}
TORCH_VERSION=${TORCH_VERSION:-${TORCH_CPU_VERSION:-2.13.0}}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: $PY is $("$PY" -V 2>&1 || echo 'not runnable'); the harness needs Python >= 3.11 (set PYTHON=...)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  if "$PY" -c 'import sys, torch; sys.exit(not torch.version.cuda)' 2>/dev/null; then
    echo "setup: using the CUDA torch $("$PY" -c 'import torch; print(torch.__version__)') of $PY (--system-site-packages)"
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch==$TORCH_VERSION"
  else
    .venv/bin/pip install -q "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL" \
      || .venv/bin/pip install -q "torch==$TORCH_VERSION"
  fi
fi
.venv/bin/pip install -q -e ".[$EXTRAS]"
