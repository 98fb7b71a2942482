#!/usr/bin/env bash
# Creates .venv and installs the harness with its tools (EXTRAS, default "dev"; a cluster node: "cluster").
# Idempotent. torch and torchvision (segmentation_models_pytorch needs it) are pinned on every path and
# torch is never installed twice:
#   - PYTHON already has a CUDA build of torch (a GPU image, a Deep Learning AMI): the venv is made with
#     --system-site-packages and uses it; only a torchvision of the same release line (torch 2.N pairs
#     with torchvision 0.N+15) is added, with --no-deps so that pip cannot swap the torch under it;
#   - an NVIDIA GPU (nvidia-smi) and no torch: torch==TORCH_VERSION and torchvision==TORCHVISION_VERSION,
#     the CUDA builds from the package index;
#   - otherwise the CPU builds from TORCH_INDEX_URL (default: PyTorch's CPU index, tried once with a short
#     timeout); where that index cannot be reached, the same pins from the default index (CUDA builds,
#     ~5.5 GB, which run on a CPU). A CPU wheel of another torch release cannot be used: torchvision from
#     the package index is built against its own torch release and fails to import beside another.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${EXTRAS:-dev}
TORCH_VERSION=${TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.29.1}
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
if .venv/bin/python -c "import torch" 2>/dev/null; then
  if ! .venv/bin/python -c "import torchvision" 2>/dev/null; then
    minor=$(.venv/bin/python -c 'import torch; print(torch.__version__.split(".")[1])')
    .venv/bin/pip install -q --no-deps "torchvision==0.$((minor + 15)).*"
  fi
else
  pins=("torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION")
  if command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/pip install -q "${pins[@]}"
  else
    .venv/bin/pip install -q "${pins[@]}" --index-url "$TORCH_INDEX_URL" --retries 1 --timeout 5 2>/dev/null \
      || { echo "setup: $TORCH_INDEX_URL has no ${pins[*]} here; installing them from the package index"
           .venv/bin/pip install -q "${pins[@]}"; }
  fi
fi
.venv/bin/pip install -q -e ".[$EXTRAS]"
