"""harness.sweep.disk: the storage estimate against real checkpoints; the last good Tune state of real experiments."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from harness.config import from_flat, load_benchmark
from harness.errors import SweepError
from harness.sweep.disk import (
    LAST_GOOD_DIR,
    checkpoint_bytes,
    largest_config,
    last_good,
    low_water_bytes,
    snapshot_state,
    sweep_estimate,
)
from harness.sweep.resume import STATE_READERS, check_restorable
from harness.sweep.storage import SweepStorage
from tests.conftest import SMOKE, smoke_overrides


def test_the_checkpoint_estimate_bounds_every_real_checkpoint_of_a_sweep(smoke_sweep):
    bench, _, _ = smoke_sweep
    checked = 0
    for checkpoint in Path(bench.storage).glob("*/*/checkpoint_*/checkpoint.pt"):
        config = from_flat(json.loads((checkpoint.parents[1] / "params.json").read_text()))
        estimate, actual = checkpoint_bytes(config), checkpoint.stat().st_size
        assert actual <= estimate <= 1.1 * actual + 128 * 1024, (config.arch, config.depth, actual, estimate)
        checked += 1
    assert checked == 2 * bench.search.num_samples  # one kept per trial (num_to_keep=1)


def test_the_estimate_takes_the_largest_network_and_what_a_resume_still_has_to_write(tmp_path, data_cache_dir):
    bench = load_benchmark(SMOKE, smoke_overrides(tmp_path, data_cache_dir))
    largest = largest_config(bench, "unet")
    assert (largest.depth, largest.base_channels) == (3, bench.train.base_channels)  # depth: int 1..3
    storage = SweepStorage.parse(bench.storage)
    fresh = sweep_estimate(bench, storage)
    per_arch = [checkpoint_bytes(largest_config(bench, a)) for a in bench.architectures]
    in_flight = bench.search.max_concurrent
    assert fresh.parts["trial checkpoints"] == sum((bench.search.num_samples + in_flight) * c for c in per_arch)
    # Two unet trials already in the storage: only the rest is still to be written.
    for i in range(2):
        trial = Path(bench.storage) / "unet" / f"train_trial_{i}"
        trial.mkdir(parents=True)
        (trial / "params.json").write_text("{}")
    resumed = sweep_estimate(bench, storage)
    assert fresh.parts["trial checkpoints"] - resumed.parts["trial checkpoints"] == 2 * per_arch[0]
    assert low_water_bytes(bench) == 2 * in_flight * max(per_arch) + 16 * 2**20


def test_a_cut_state_is_restored_from_the_last_good_copy_saying_which_trials(smoke_sweep, tmp_path, caplog):
    bench, _, _ = smoke_sweep
    storage = SweepStorage.parse(str(tmp_path / "storage"))
    exp = tmp_path / "storage" / "unet"
    shutil.copytree(Path(bench.storage) / "unet", exp)
    snapshot = snapshot_state(exp, STATE_READERS)
    assert snapshot is not None and len(snapshot.trials) == bench.search.num_samples
    assert {status for _, status in snapshot.trials} == {"TERMINATED"}
    (state,) = exp.glob("experiment_state-*.json")
    good = state.read_bytes()
    state.write_bytes(good[: len(good) // 2])  # what a full disk leaves of Tune's in-place write
    # A cut state never replaces the good copy.
    assert snapshot_state(exp, STATE_READERS) is None and last_good(exp).trials == snapshot.trials
    with caplog.at_level(logging.WARNING, logger="harness.sweep"):
        check_restorable(storage, ("unet",))
    assert state.read_bytes() == good
    assert (exp / f"{state.name}.cut").read_bytes() == good[: len(good) // 2]
    message = caplog.text
    assert f"restoring unet from the copy of its last good state (taken {snapshot.taken})" in message
    assert f"takes back {bench.search.num_samples} trial(s) ({bench.search.num_samples} TERMINATED)" in message
    assert all(trial_id in message for trial_id, _ in snapshot.trials)
    check_restorable(storage, ("unet",))  # restored: readable


def test_a_cut_state_without_a_good_copy_is_refused_naming_it(smoke_sweep, tmp_path):
    bench, _, _ = smoke_sweep
    storage = SweepStorage.parse(str(tmp_path / "storage"))
    exp = tmp_path / "storage" / "unet"
    shutil.copytree(Path(bench.storage) / "unet", exp)
    shutil.rmtree(exp / LAST_GOOD_DIR, ignore_errors=True)
    (state,) = exp.glob("experiment_state-*.json")
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(SweepError, match="cannot be read .*no copy of a last good state to restore instead"):
        check_restorable(storage, ("unet",))
