"""A full disk never costs a sweep: on real small file systems (tmpfs), the refusal before, the stop during, the resume.

Skipped, saying why, where the machine does not let the tests mount a tmpfs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState

from harness.cli import main
from harness.config import load_benchmark
from harness.sweep.disk import LAST_GOOD_DIR, low_water_bytes, sweep_estimate
from harness.sweep.storage import SweepStorage
from tests.conftest import SMOKE, fill, smoke_overrides
from tests.sweep.test_driver import (
    RESUMABLE,
    assert_one_run_per_trial_with_contiguous_steps,
    mlflow_runs,
    trials_with_checkpoints,
)


def test_a_sweep_that_cannot_fit_its_storage_is_refused_before_anything_is_written(
    small_filesystem, tmp_path, data_cache_dir, capsys
):
    volume = small_filesystem("vol", 1 << 20)  # 1 MiB: the case
    args = ["sweep", str(SMOKE)]
    for override in smoke_overrides(tmp_path, data_cache_dir, storage=volume / "st"):
        args += ["--set", override]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert f"error: storage {volume / 'st'}: needs about" in err and "trial checkpoints" in err
    assert "MB free; free" in err and "or choose another storage" in err
    assert not (volume / "st" / "sweep.json").exists()  # nothing of the sweep, and no Ray started


def test_a_disk_filling_up_mid_sweep_stops_it_cleanly_and_resume_keeps_every_trial(
    small_filesystem, ray_cluster, tmp_path, data_cache_dir
):
    overrides = smoke_overrides(tmp_path, data_cache_dir, **RESUMABLE)
    bench = load_benchmark(SMOKE, [*overrides, f"storage={tmp_path / 'vol' / 'st'}"])
    needed = sweep_estimate(bench, SweepStorage.parse(bench.storage)).total
    low_water = low_water_bytes(bench)
    volume = small_filesystem("vol", needed + low_water + 8 * 2**20)
    cmd = [sys.executable, "-m", "harness.sweep", str(SMOKE), "--address", ray_cluster.address]
    for override in [*overrides, f"storage={volume / 'st'}"]:
        cmd += ["--set", override]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    exp = volume / "st" / "unet"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and trials_with_checkpoints(exp) < 1:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep finished before the disk could fill"
    filler = fill(volume, low_water // 2)  # another user of the volume takes the space
    _, stderr = proc.communicate(timeout=180)
    (tmp_path / "stopped.log").write_text(stderr)
    assert proc.returncode == 4, stderr[-3000:]
    assert f"storage {volume / 'st'} is nearly full" in stderr and "continue with --resume" in stderr
    assert "Traceback" not in stderr.split("is nearly full")[-1]
    assert "finished" not in json.loads((volume / "st" / "sweep.json").read_text())
    client, parents, children = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "cloudmask-smoke")
    assert [p.info.status for p in parents] == ["KILLED"] and all(r.info.status != "RUNNING" for r in children)
    kept = {r.data.tags["trial_id"] for r in children if r.data.tags.get("stopped_by") in ("completed", "asha")}
    assert (exp / LAST_GOOD_DIR).is_dir()
    # The disk freed, the sweep resumes: every trial finished before the stop is kept, the budget is exact.
    filler.unlink()
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    (tmp_path / "resumed.log").write_text(resumed.stdout + resumed.stderr)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, parents, children = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "cloudmask-smoke")
    assert [p.info.status for p in parents] == ["FINISHED"] and len(children) == bench.search.num_samples
    assert kept <= {r.data.tags["trial_id"] for r in children}
    assert_one_run_per_trial_with_contiguous_steps(client, children)
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{volume / 'st' / 'optuna.db'}")
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert {t.user_attrs["ray_trial_id"] for t in finished} == {r.data.tags["trial_id"] for r in children}
    tune_trials = [d for d in exp.iterdir() if (d / "params.json").is_file()]
    assert len(tune_trials) == bench.search.num_samples  # Tune, Optuna and MLflow agree


def test_a_disk_below_the_low_water_mark_from_the_start_stops_before_any_trial_and_nothing_counts_as_finished(
    small_filesystem, ray_cluster, tmp_path, data_cache_dir, capsys
):
    # Room for the sweep's estimate, not for the margin it keeps while trials run: the guard stops it at
    # Tune's first step, before any trial reported.
    overrides = smoke_overrides(tmp_path, data_cache_dir, **RESUMABLE)
    bench = load_benchmark(SMOKE, [*overrides, f"storage={tmp_path / 'vol' / 'st'}"])
    needed = sweep_estimate(bench, SweepStorage.parse(bench.storage)).total
    assert needed + 2**20 < low_water_bytes(bench)
    volume = small_filesystem("vol", needed + 2**20)
    args = ["sweep", str(SMOKE), "--address", ray_cluster.address]
    for override in [*overrides, f"storage={volume / 'st'}"]:
        args += ["--set", override]
    assert main(args) == 4
    assert "is nearly full" in capsys.readouterr().err
    _, parents, _ = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "cloudmask-smoke")
    assert [p.info.status for p in parents] == ["KILLED"]  # not FINISHED: it did not run its trials
    # `cloudmask compare` without a benchmark finds no finished sweep: a message, not a traceback.
    assert main(["compare", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--out", str(tmp_path / "r")]) == 4
    err = capsys.readouterr().err
    assert "no finished sweep found (an interrupted one is finished with `cloudmask sweep --resume`)" in err
    assert "Traceback" not in err
