#!/usr/bin/env bash
# Build .gpu/site.tar.xz (git-ignored) in the repo root: what the GPU box lacks, for its Python 3.12, in one file
# that travels with the working tree (the device tool's carry: [".gpu"]; at most 64 MiB travel in all).
# The GPU box (nvidia-h200) has python3 3.12 + torch 2.11 cu130 + numpy/pandas/scipy/tifffile/pyarrow/pyyaml/
# nvidia-ml-py ..., no network, and lacks ray, optuna, mlflow, imagecodecs and their deps: missing.txt, pinned.
# ray-2.60.0's cp312 wheel alone is 79 MB, so Ray is trimmed (no Java jars, RLlib, Serve, LLM, dashboard web
# build; binaries stripped), MLflow loses its UI bundle, and imagecodecs becomes a PackBits-only shim (shim/).
# Run on a machine that reaches PyPI, from anywhere:  bash benchmarks/perf/gpu/make_bundle.sh   (PY: the python
# whose pip downloads; any version: the wheels are chosen for cp312 by the platform flags)
set -euo pipefail
PY=${PY:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
LIMIT_MIB=${LIMIT_MIB:-40}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# 1. the pinned closure for cp312 of what the GPU image lacks (missing.txt)
grep -v '^\s*#' "$HERE/missing.txt" | grep . >"$W/req.txt"
"$PY" -m pip download -q --no-deps "${PLAT[@]}" -d "$W/whl" -r "$W/req.txt"
rm -f "$W"/whl/imagecodecs-*.whl
"$PY" -m pip install -q --no-deps --no-compile "${PLAT[@]}" --target "$W/site" "$W"/whl/*.whl
# 2. trim
( cd "$W/site" && rm -rf ray/jars ray/rllib ray/serve ray/llm ray/dashboard/client/build mlflow/server/js \
    && find . -name '*.js.map' -delete && find . -name '__pycache__' -prune -exec rm -rf {} + )
for f in ray/_raylet.so ray/core/src/ray/gcs/gcs_server ray/core/src/ray/raylet/raylet; do
  if [ -f "$W/site/$f" ]; then strip --strip-unneeded "$W/site/$f"; else echo "make_bundle: $f not in the wheel" >&2; fi
done
cp -r "$HERE/shim/imagecodecs" "$W/site/"
find "$W/site" -name '__pycache__' -prune -exec rm -rf {} +
# 3. pack
mkdir -p "$ROOT/.gpu"
XZ_OPT=-9e tar -cJf "$ROOT/.gpu/site.tar.xz.tmp" -C "$W/site" .
mv "$ROOT/.gpu/site.tar.xz.tmp" "$ROOT/.gpu/site.tar.xz"
bytes=$(stat -c %s "$ROOT/.gpu/site.tar.xz")
printf 'make_bundle: %s = %.1f MiB (%s packages; unpacked %s MiB)\n' "$ROOT/.gpu/site.tar.xz" \
  "$(awk "BEGIN {print $bytes / 1048576}")" "$(wc -l <"$W/req.txt")" "$(du -sm "$W/site" | cut -f1)"
if [ "$bytes" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "make_bundle: over ${LIMIT_MIB} MiB: trim more (the tree and the bundle travel together, 64 MiB at most)" >&2
  exit 1
fi
