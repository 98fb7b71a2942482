import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "perf" / "gpu_check.sh"
SHIM = ROOT / "benchmarks" / "perf" / "gpu" / "shim"


def run_check(tmp_path: Path, *args: str, deadline: int, **env: str) -> tuple[subprocess.CompletedProcess, dict, str]:
    out = tmp_path / "out"
    environ = {
        **os.environ,
        "PY": sys.executable,
        "PYTHONPATH": str(ROOT),
        "GC_TMP": str(tmp_path / "gc"),
        "OUT": str(out),
        "DEADLINE_S": str(deadline),
        **env,
    }
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=280
    )
    summary = json.loads((out / "summary.json").read_text())
    return proc, summary, (out / "steps.log").read_text()


def test_dry_run_env_and_fit_paths(tmp_path):
    proc, summary, log = run_check(
        tmp_path, "--dry-run", "--steps", "env,paths", deadline=300, GC_PATHS_SECTIONS="env,fit"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary["dry_run"] is True and summary["steps_requested"] == ["env", "paths"]
    assert {name: step["rc"] for name, step in summary["steps"].items()} == {"env": 0, "paths": 0}, log
    assert "START env" in log and "END env rc=0" in log and "END paths rc=0" in log and "SKIP" not in log
    env = summary["env"]
    assert env["torch"] and env["harness.training.loop"] == "ok" and env["cuda"] is False
    paths = summary["paths"]
    assert paths["env"]["device"] == "cpu" and paths["env"]["resolve_auto"] == "cpu"
    assert paths["data"]["train"] > 0
    for arch in ("unet", "unetpp"):
        fit = paths[f"fit_{arch}"]
        assert "error" not in fit, fit
        assert fit["status"] == "completed" and len(fit["history"]) == 2
        assert fit["param_channels_last"] is True
        seen = fit["seen_inside_fit"]
        assert [loader["num_workers"] for loader in seen["loaders"]] == [2, 2]
        assert seen["train_forward"]["input_channels_last"] is True
        assert seen["train_forward"]["deterministic_algorithms"] is True
        assert seen["eval_forward"]["grad_enabled"] is False
    assert (tmp_path / "out" / "gc.tar.gz").stat().st_size > 0


def test_too_little_deadline_skips_and_says_so(tmp_path):
    proc, summary, log = run_check(tmp_path, "--dry-run", "--steps", "paths,throughput", deadline=1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SKIP paths" in log and "SKIP throughput" in log and "START" not in log
    assert summary["steps"] == {
        "paths": {"status": "skip", "rc": None, "seconds": 0},
        "throughput": {"status": "skip", "rc": None, "seconds": 0},
    }


def test_unknown_step_is_refused(tmp_path):
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--steps", "env,nope"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "unknown step nope" in proc.stderr


def test_imagecodecs_shim_round_trips_packbits(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    code = (
        "import sys, numpy as np, imagecodecs, tifffile\n"
        "assert imagecodecs.__version__.endswith('gpu-shim'), imagecodecs.__file__\n"
        "rng = np.random.default_rng(0)\n"
        "a = (rng.integers(0, 4, (64, 48)) * 1000).astype(np.uint16)\n"
        "raw = imagecodecs.packbits_encode(a.tobytes())\n"
        "assert imagecodecs.packbits_decode(raw) == a.tobytes()\n"
        "tifffile.imwrite(sys.argv[1], a, compression='packbits', metadata=None)\n"
    )
    path = tmp_path / "band.tif"
    env = {**os.environ, "PYTHONPATH": f"{SHIM}{os.pathsep}{ROOT}"}
    subprocess.run([sys.executable, "-c", code, str(path)], env=env, check=True, timeout=60)
    expected = (np.random.default_rng(0).integers(0, 4, (64, 48)) * 1000).astype(np.uint16)
    assert np.array_equal(tifffile.imread(path), expected)
