"""Checkpoints: the typed config round-trips; a checkpoint of another network or format is refused."""

import os
from pathlib import Path

import pytest
import torch

from harness.config import TrainConfig
from harness.training.checkpoints import (
    CHECKPOINT_FORMAT,
    SCRATCH_PREFIX,
    check_resumable,
    checkpoint_config,
    checkpoint_state,
    load_checkpoint,
    remove_orphaned_scratch,
    save_checkpoint,
    scratch_dir,
)
from harness.training.loop import model_from_config


def _state(config: TrainConfig) -> dict:
    model = model_from_config(config)
    optimiser = torch.optim.Adam(model.parameters())
    return checkpoint_state(
        config=config, epoch=0, model=model, optimiser=optimiser, history=[], loader_generator=None, band_stats=None
    )


def test_checkpoint_round_trips_with_weights_only(tmp_path: Path):
    config = TrainConfig(arch="unetpp", depth=2, base_channels=4, lr=1e-5)
    save_checkpoint(tmp_path / "c.pt", _state(config))
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["format"] == CHECKPOINT_FORMAT
    assert checkpoint_config(loaded) == config
    check_resumable(loaded, TrainConfig(arch="unetpp", depth=2, base_channels=4, lr=1.0), tmp_path)


def test_other_network_or_format_is_refused(tmp_path: Path):
    state = _state(TrainConfig(depth=2, base_channels=4))
    with pytest.raises(ValueError, match="different network.*depth"):
        check_resumable(state, TrainConfig(depth=3, base_channels=4), tmp_path)
    with pytest.raises(ValueError, match="format"):
        check_resumable({**state, "format": 1}, TrainConfig(depth=2, base_channels=4), tmp_path)


def test_scratch_folders_of_dead_processes_are_removed(tmp_path: Path):
    import subprocess
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    orphan = tmp_path / f"{SCRATCH_PREFIX}{dead_pid}-abc"
    orphan.mkdir()
    (orphan / "checkpoint.pt").write_bytes(b"x")
    mine = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-def"
    mine.mkdir()
    assert remove_orphaned_scratch(tmp_path) == [orphan]
    assert not orphan.exists() and mine.exists()
    fresh = scratch_dir()
    assert fresh.name.startswith(f"{SCRATCH_PREFIX}{os.getpid()}-")
    fresh.rmdir()
