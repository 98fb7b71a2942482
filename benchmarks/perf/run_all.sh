#!/usr/bin/env bash
# Run every perf script; JSON into benchmarks/perf/results/, logs next to it.
#   bash benchmarks/perf/run_all.sh [--quick]      (--quick: all of them in ~15 min on 2 CPU cores)
# PYTHON=... picks the interpreter (default .venv/bin/python); RESULTS=... another output folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
OUT=${RESULTS:-benchmarks/perf/results}
mkdir -p "$OUT"
MODE=()
[[ "${1:-}" == "--quick" ]] && MODE=(--quick)
status=0
for script in overhead data_path compute scheduling search_efficiency scale gpu_throughput predict; do
    echo "== $script ${MODE[*]}" >&2
    start=$(date +%s)
    if "$PY" "benchmarks/perf/$script.py" "${MODE[@]}" --json "$OUT/$script.json" >"$OUT/$script.log" 2>&1; then
        echo "   ok in $(( $(date +%s) - start )) s -> $OUT/$script.json" >&2
    else
        echo "   FAILED (see $OUT/$script.log)" >&2
        status=1
    fi
done
exit $status
