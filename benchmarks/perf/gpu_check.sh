#!/usr/bin/env bash
# ONE-SHOT GPU check of cloudmask-harness on a CUDA machine without network (issue 20). See benchmarks/perf/gpu/README.md.
#
# Run from the repo root:  bash benchmarks/perf/gpu_check.sh [--dry-run] [--steps env,paths,...]   (about 9 minutes)
# The GPU box (NVIDIA H200, 16 cores): python3 3.12 with torch 2.11+cu130, numpy, pandas, scipy, tifffile, pyarrow,
# nvidia-ml-py ...; NO network. What it lacks (ray, optuna, mlflow + deps, imagecodecs) travels as .gpu/site.tar.xz
# (git-ignored), built on a machine with PyPI by benchmarks/perf/gpu/make_bundle.sh, carried with the tree.
# Steps run in order of value under one deadline (DEADLINE_S, default 540 s): a step that would start with less
# than its minimum left is skipped and says SKIP; each step is time-limited; a failing step does not stop the next.
# Everything comes back under $OUT: summary.json (the figures, the steps' rc and seconds), steps.log, gc.tar.gz
# (every JSON and log, the comparison's report).
#   --dry-run   CPU, tiny sizes, no bundle, the current python ($PY, else python3): checks the commands cheaply
#   --steps     a comma-separated subset of: env,paths,sweep,compare,throughput,compile,compute
set -u
ALL_STEPS=env,paths,sweep,compare,throughput,compile,compute
DRY=0
STEPS=$ALL_STEPS
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --steps) STEPS=${2:?--steps needs a list}; shift ;;
    --steps=*) STEPS=${1#--steps=} ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --dry-run, --steps a,b,c)" >&2; exit 2 ;;
  esac
  shift
done
for s in ${STEPS//,/ }; do
  case ",$ALL_STEPS," in *",$s,"*) ;; *) echo "gpu_check.sh: unknown step $s (known: $ALL_STEPS)" >&2; exit 2 ;; esac
done
START=$(date +%s)
DEADLINE_S=${DEADLINE_S:-540}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
GPU_DIR=$ROOT/benchmarks/perf/gpu
BUNDLE=$ROOT/.gpu/site.tar.xz
PY=${PY:-python3}
T=${GC_TMP:-$(mktemp -d)}
OUT=${OUT:-$T/out}
mkdir -p "$OUT" "$T/json" "$T/logs"
: >"$OUT/steps.log"
: >"$T/steps.tsv"
export GC_TMP=$T PYTHONUNBUFFERED=1 HARNESS_PERF_DIR=$T/perf RAY_AIR_NEW_OUTPUT=0 RAY_DEDUP_LOGS=0 \
  RAY_USAGE_STATS_ENABLED=0 MPLBACKEND=Agg
left() { echo $((DEADLINE_S - ($(date +%s) - START))); }
log() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$OUT/steps.log"; }
wanted() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$T/steps.tsv"; }  # name status rc seconds
# step NAME MIN_S MAX_S command...: runs with timeout min(MAX_S, time left), output to $T/logs/NAME.log
step() {
  local name=$1 min=$2 max=$3; shift 3
  wanted "$name" || return 0
  local l; l=$(left)
  if [ "$l" -lt "$min" ]; then log "SKIP $name (${l}s left < ${min}s)"; record "$name" skip "" 0; return 0; fi
  local lim=$((l < max ? l : max)) t0; t0=$(date +%s)
  log "START $name (limit ${lim}s)"
  timeout -k 5 "$lim" "$@" >"$T/logs/$name.log" 2>&1
  local rc=$? status=ok
  [ $rc = 0 ] || status=fail
  [ $rc = 124 ] || [ $rc = 137 ] && status=timeout
  log "END $name rc=$rc $status ($(($(date +%s) - t0))s)"
  record "$name" "$status" "$rc" $(($(date +%s) - t0))
  tail -n 15 "$T/logs/$name.log" | sed "s/^/    $name| /" >>"$OUT/steps.log"
}
# skip NAME WHY: a step that cannot run here, said in the log
skip() { wanted "$1" || return 0; log "SKIP $1 ($2)"; record "$1" skip "" 0; }

# ---- 0. dependencies (no network: the carried bundle, then the repo on PYTHONPATH) -------------------------
HAVE_BUNDLE=0
if [ "$DRY" = 1 ]; then
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} GC_DEVICE=cpu GC_PATCH=64 GC_BASE=8 GC_WORKERS=2 \
    GC_COMPILE_BACKEND=aot_eager
  log "dry run on CPU with $PY ($("$PY" -V 2>&1)); deadline ${DEADLINE_S}s; steps $STEPS"
elif [ -f "$BUNDLE" ]; then
  if mkdir -p "$T/site" && tar -xJf "$BUNDLE" -C "$T/site"; then
    HAVE_BUNDLE=1
    export PYTHONPATH=$T/site:$ROOT
    log "bundle unpacked ($(du -sm "$T/site" | cut -f1) MiB) in $(($(date +%s) - START))s; deadline ${DEADLINE_S}s"
  else
    log "bundle unpack FAILED: $BUNDLE"
  fi
fi
if [ "$DRY" = 0 ] && [ "$HAVE_BUNDLE" = 0 ]; then
  # Only torch is needed by paths/throughput/compile/compute; the harness's decoder imports imagecodecs: the shim.
  export PYTHONPATH=$GPU_DIR/shim:$ROOT
  log "NO BUNDLE at .gpu/site.tar.xz: ray, optuna, mlflow are missing, so the sweep and compare steps are skipped."
  log "  Build it on a machine that reaches PyPI, from the repo root: bash benchmarks/perf/gpu/make_bundle.sh"
  log "  then run this script with the device tool's carry: [\".gpu\"] (see benchmarks/perf/gpu/README.md)."
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$T/json/nvidia-smi.csv" 2>&1

step env 10 60 "$PY" - <<'EOF'
import importlib, json, os, sys
r = {"python": sys.version.split()[0], "executable": sys.executable}
for m in ("torch", "numpy", "pandas", "scipy", "tifffile", "pyarrow", "yaml", "ray", "optuna", "mlflow", "sqlalchemy",
          "pynvml", "imagecodecs", "protobuf:google.protobuf", "pydantic", "psutil", "matplotlib"):
    name, _, mod = m.partition(":")
    try:
        module = importlib.import_module(mod or name)
        r[name] = getattr(module, "__version__", "?")
    except Exception as e:  # noqa: BLE001
        r[name] = f"IMPORT FAILED: {type(e).__name__}: {e}"
import torch
r.update(cuda=torch.cuda.is_available(), device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
         bf16=torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None)
for m in ("harness.training.loop", "harness.data.prepare", "harness.cluster", "harness.sweep.driver",
          "harness.compare.driver", "harness.tracking.system"):
    try:
        importlib.import_module(m)
        r[m] = "ok"
    except Exception as e:  # noqa: BLE001
        r[m] = f"IMPORT FAILED: {type(e).__name__}: {e}"
try:
    import harness.cluster as cluster
    r["cluster.device_for_task"] = "present" if hasattr(cluster, "device_for_task") else "absent"
except Exception as e:  # noqa: BLE001
    r["cluster.device_for_task"] = f"FAILED: {e}"
if torch.cuda.is_available():
    try:
        from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
        g = GPUMonitor()
        g.collect_metrics()
        r["mlflow_gpu_monitor"] = sorted(g.metrics)
    except Exception as e:  # noqa: BLE001
        r["mlflow_gpu_monitor"] = f"FAILED: {type(e).__name__}: {e}"
failed = sorted(k for k, v in r.items() if isinstance(v, str) and "FAILED" in v)
r["failed"] = failed
json.dump(r, open(os.environ["GC_TMP"] + "/json/env.json", "w"), indent=1)
print(json.dumps(r, indent=1))
EOF

# ---- 1. harness code paths on CUDA: fit (pinned memory, 4 workers, autocast, channels_last, deterministic),
#         repeatability, bf16 vs fp32 masks, peak memory per config -------------------------------------------
step paths 60 170 "$PY" "$GPU_DIR/gpu_paths.py" "$T/json/paths.json" "${GC_PATHS_SECTIONS:-env,fit,repeat,bf16,memory}"

# ---- 2. smoke sweep: 2 archs x 4 trials, 4 at once at resources.gpu 0.25 on the one card ---------------------
#         train.device stays "auto": each trial resolves it from the GPU Ray gave it.
SET=(--set resources.gpu=0.25 --set resources.cpu=2 --set search.max_concurrent=4 --set ray.num_cpus=16
     --set tracking.system_metrics_s=1 --set "data.cache_dir=$T/smoke/cache")
[ "$DRY" = 1 ] && SET=(--set resources.gpu=0 --set resources.cpu=1 --set search.max_concurrent=4 --set ray.num_cpus=4
     --set train.device=cpu --set tracking.system_metrics_s=1 --set "data.cache_dir=$T/smoke/cache")
COMMON=(--storage "$T/smoke/sweep" --tracking-uri "sqlite:///$T/smoke/mlflow.db")
SAMPLER=
if command -v nvidia-smi >/dev/null 2>&1; then
  ( while sleep 1; do nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader 2>/dev/null \
      | sed "s/^/$(date +%s),/"; done ) >"$T/json/gpu_procs.csv" &
  SAMPLER=$!
fi
if [ "$DRY" = 1 ] || [ "$HAVE_BUNDLE" = 1 ]; then
  step sweep 90 200 "$PY" -m harness.sweep benchmarks/smoke.yaml "${COMMON[@]}" "${SET[@]}"
  # ---- 3. the final comparison end to end: 2 archs x 2 seeds retrained as Ray tasks at 0.25 GPU -------------
  step compare 90 200 "$PY" -m harness.final_compare benchmarks/smoke.yaml "${COMMON[@]}" "${SET[@]}" \
    --out "$T/smoke/compare"
else
  skip sweep "needs ray/optuna/mlflow: no bundle"
  skip compare "needs ray/optuna/mlflow: no bundle"
fi
[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null

# ---- 4. throughput / MFU per model (eager; bf16, channels_last, pinned uint16 batches) ------------------------
step throughput 45 100 "$PY" benchmarks/perf/gpu_throughput.py --quick --json "$T/json/gpu_throughput.json"

# ---- 5. torch.compile on CUDA: graph breaks, compile time, recompiles on a last batch / eval batch ------------
step compile 60 120 "$PY" "$GPU_DIR/gpu_paths.py" "$T/json/compile.json" compile

# ---- 6. compute.py on CUDA: harness loop vs plain loops, deterministic vs fastest kernels ---------------------
if [ "$DRY" = 1 ]; then
  skip compute "dry run: compute.py's CPU figures are RESULTS.md section 3"
else
  step compute 60 120 "$PY" benchmarks/perf/compute.py --quick --json "$T/json/compute-gpu.json"
fi

# ---- summary -------------------------------------------------------------------------------------------------
export GC_DRY=$DRY GC_BUNDLE=$HAVE_BUNDLE GC_START=$START GC_DEADLINE=$DEADLINE_S GC_STEPS=$STEPS
"$PY" - <<'EOF' >"$OUT/summary.json.tmp" 2>>"$OUT/steps.log"
import glob, json, os, time
T = os.environ["GC_TMP"]
s = {"dry_run": os.environ["GC_DRY"] == "1", "bundle": os.environ["GC_BUNDLE"] == "1",
     "deadline_s": int(os.environ["GC_DEADLINE"]), "steps_requested": os.environ["GC_STEPS"].split(","),
     "steps": {}}
for line in open(T + "/steps.tsv"):
    name, status, rc, seconds = line.rstrip("\n").split("\t")
    s["steps"][name] = {"status": status, "rc": int(rc) if rc else None, "seconds": int(seconds)}
for f in sorted(glob.glob(T + "/json/*.json")):
    key = os.path.basename(f)[:-5]
    try:
        s[key] = json.load(open(f))
    except Exception as e:  # noqa: BLE001
        s[key] = f"unreadable: {e}"
for k in ("paths", "compile"):  # the traces are in the tarball
    for sec in (s.get(k) or {}).values() if isinstance(s.get(k), dict) else ():
        if isinstance(sec, dict):
            sec.pop("trace", None)
if any(s["steps"].get(k, {}).get("status", "skip") != "skip" for k in ("sweep", "compare")):
    try:  # sweep and compare: the runs, how they ended, GPU system metrics present
        from mlflow.tracking import MlflowClient
        c = MlflowClient(f"sqlite:///{T}/smoke/mlflow.db")
        rows = []
        for e in c.search_experiments():
            if e.name == "Default":
                continue
            for r in c.search_runs([e.experiment_id], max_results=200):
                rows.append({"exp": e.name, "role": r.data.tags.get("role"), "arch": r.data.tags.get("arch"),
                             "status": r.info.status, "stopped_by": r.data.tags.get("stopped_by"),
                             "device": r.data.params.get("device"), "val_iou": r.data.metrics.get("val_iou"),
                             "ips": r.data.metrics.get("train_images_per_second"),
                             "gpu_metrics": sorted(k for k in r.data.metrics if k.startswith("system/gpu"))[:4]})
        s["mlflow_runs"] = rows
    except Exception as e:  # noqa: BLE001
        s["mlflow_runs"] = f"FAILED: {type(e).__name__}: {e}"
    try:  # the nvidia-smi sampler's file: none where there is no nvidia-smi
        per_t = {}
        if os.path.exists(T + "/json/gpu_procs.csv"):
            for line in open(T + "/json/gpu_procs.csv"):
                t, pid = line.split(",")[:2]
                per_t.setdefault(t, set()).add(pid.strip())
        s["most_gpu_processes_at_once"] = max((len(v) for v in per_t.values()), default=None)
    except Exception as e:  # noqa: BLE001
        s["most_gpu_processes_at_once"] = f"FAILED: {type(e).__name__}: {e}"
    try:
        s["compare_meta"] = json.load(open(T + "/smoke/compare/meta.json"))
    except Exception as e:  # noqa: BLE001
        s["compare_meta"] = f"FAILED: {type(e).__name__}: {e}"
s["wall_s"] = int(time.time()) - int(os.environ["GC_START"])
print(json.dumps(s, indent=1, default=str))
EOF
mv "$OUT/summary.json.tmp" "$OUT/summary.json"
cp "$OUT/steps.log" "$T/logs/steps.log"
tar -czf "$OUT/gc.tar.gz" -C "$T" json logs $(cd "$T" && ls -d smoke/compare 2>/dev/null) 2>/dev/null
log "done in $(($(date +%s) - START))s; $(left)s of the deadline left; under $OUT: summary.json steps.log gc.tar.gz"
