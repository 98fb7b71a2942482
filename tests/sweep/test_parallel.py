"""search.parallel_architectures: architectures' Tuners side by side, each in a driver process of its own.

On the session's real Ray cluster (2 CPUs) with one trial at a time per architecture, the two Tuners of the
smoke benchmark must run at the same time (their MLflow parent runs overlap), each with its full budget,
and hand back the same kind of results as a sequential sweep.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from harness.config import load_benchmark
from harness.errors import ConfigError
from harness.sweep.driver import run_sweep
from tests.conftest import SMOKE, smoke_overrides
from tests.sweep.test_driver import (
    assert_one_run_per_trial_with_contiguous_steps,
    mlflow_runs,
    trials_with_checkpoints,
)

# As tests/sweep/test_driver.py's RESUMABLE, both architectures: ASHA's one rung at epoch 2 of 4, so the first
# trial past it runs every epoch and each architecture has a result to choose.
RESUMABLE_BOTH = {"train.epochs": 4, "asha.grace_period": 2}


def test_two_architectures_sweep_side_by_side_with_their_full_budgets(ray_cluster, tmp_path, data_cache_dir):
    overrides = {"search.parallel_architectures": 2, "search.max_concurrent": 1, "search.num_samples": 2}
    bench = load_benchmark(SMOKE, smoke_overrides(tmp_path, data_cache_dir, **overrides))
    results = run_sweep(bench)
    assert [r.arch for r in results] == ["unet", "unetpp"]
    assert all(len(r.trials) == 2 and r.best is not None for r in results)
    assert len({r.sweep_id for r in results}) == 1 and len({r.split_hash for r in results}) == 1
    client, parents, children = mlflow_runs(bench.tracking.uri, bench.tracking.experiment)
    assert sorted(p.data.tags["arch"] for p in parents) == ["unet", "unetpp"]
    assert all(p.info.status == "FINISHED" for p in parents)
    first, second = sorted(parents, key=lambda p: p.info.start_time)
    # Side by side: the second architecture started before the first one ended.
    assert second.info.start_time < first.info.end_time
    assert len(children) == 4
    assert_one_run_per_trial_with_contiguous_steps(client, children)


def test_parallel_architectures_must_be_positive(tmp_path, data_cache_dir):
    with pytest.raises(ConfigError, match="search.parallel_architectures: must be >= 1"):
        load_benchmark(SMOKE, smoke_overrides(tmp_path, data_cache_dir, **{"search.parallel_architectures": 0}))


def test_a_stop_signal_stops_every_architecture_and_resume_finishes_them_side_by_side(
    ray_cluster, tmp_path, data_cache_dir
):
    """SIGTERM to the driver reaches each architecture's process once: exit 143, both parents KILLED and
    resumable; ``--resume`` (side by side again) completes both."""
    overrides = smoke_overrides(
        tmp_path, data_cache_dir, **{**RESUMABLE_BOTH, "search.parallel_architectures": 2, "search.max_concurrent": 1}
    )
    cmd = [sys.executable, "-m", "harness.sweep", str(SMOKE), "--address", ray_cluster.address]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    storage = tmp_path / "storage"
    while time.monotonic() < deadline and min(trials_with_checkpoints(storage / a) for a in ("unet", "unetpp")) < 1:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "continue it with --resume" in stderr
    assert "finished" not in json.loads((storage / "sweep.json").read_text())
    _, parents, children = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "cloudmask-smoke")
    assert sorted(p.info.status for p in parents) == ["KILLED", "KILLED"]
    assert children and all(r.info.status != "RUNNING" for r in children)
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "finished" in json.loads((storage / "sweep.json").read_text())
    client, parents, children = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "cloudmask-smoke")
    assert sorted(p.info.status for p in parents) == ["FINISHED", "FINISHED"]
    assert len(children) == 2 * load_benchmark(SMOKE).search.num_samples
    assert all(r.info.status == "FINISHED" for r in children)
    assert_one_run_per_trial_with_contiguous_steps(client, children)
