"""harness.sweep.resume: what a resumed sweep refuses, on real Tune experiment directories and benchmarks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.config import load_benchmark
from harness.errors import SweepError
from harness.sweep.disk import LAST_GOOD_DIR
from harness.sweep.resume import check_restorable, check_same_benchmark
from harness.sweep.storage import SweepStorage
from tests.conftest import SMOKE, smoke_overrides


def test_resume_refuses_a_changed_benchmark_naming_each_key(tmp_path, data_cache_dir):
    storage = SweepStorage.parse(str(tmp_path / "storage"))
    started = load_benchmark(SMOKE, smoke_overrides(tmp_path, data_cache_dir))
    moved = smoke_overrides(tmp_path / "elsewhere", data_cache_dir, **{"resources.cpu": 2, "ray.num_cpus": 4})
    check_same_benchmark(started.to_dict(), load_benchmark(SMOKE, moved), storage)  # where and on what: fine
    changed = load_benchmark(SMOKE, [*moved, "train.epochs=8", "asha.grace_period=2"])
    with pytest.raises(SweepError, match=r"asha.grace_period \(1 -> 2\), train.epochs \(4 -> 8\); a resumed"):
        check_same_benchmark(started.to_dict(), changed, storage)


def test_resume_refuses_an_unreadable_experiment_state_naming_it(tmp_path):
    storage = SweepStorage.parse(str(tmp_path / "storage"))
    exp = tmp_path / "storage" / "unet"
    exp.mkdir(parents=True)
    check_restorable(storage, ("unet", "unetpp"))  # nothing saved yet: a fresh start, nothing to refuse
    (exp / "tuner.pkl").write_bytes(b"")
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text("")
    with pytest.raises(SweepError, match=f"experiment state in {exp} cannot be read.*move {exp} aside"):
        check_restorable(storage, ("unet", "unetpp"))


@pytest.mark.parametrize("pattern", ["search_gen_state-*.json", "searcher-state-*.pkl"])
def test_resume_refuses_an_unreadable_search_state_naming_it(smoke_sweep, tmp_path, pattern):
    """A kill while Tune copied its search state leaves the newest file cut short: Tune would restart from nothing."""
    bench, _, _ = smoke_sweep
    storage = SweepStorage.parse(str(tmp_path / "storage"))
    shutil.copytree(Path(bench.storage) / "unet", tmp_path / "storage" / "unet")
    exp = tmp_path / "storage" / "unet"
    check_restorable(storage, ("unet",))  # a finished sweep's own files: readable
    # Without the copy of the last good state (a sweep from before the harness kept one; tests/sweep/test_disk.py
    # has the restore from it): refused.
    shutil.rmtree(exp / LAST_GOOD_DIR, ignore_errors=True)
    newest = max(exp.glob(pattern))
    newest.write_bytes(newest.read_bytes()[:0])
    with pytest.raises(SweepError, match=f"search state {exp}/{newest.name} cannot be read.*move {exp} aside"):
        check_restorable(storage, ("unet",))
