"""The predict tests' network: fitted once per session by ``fit`` on tiny synthetic patches."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from harness.config import TrainConfig
from harness.training.checkpoints import CHECKPOINT_FILENAME
from harness.training.loop import fit

TINY = TrainConfig(arch="unet", depth=2, base_channels=8, batch_size=4, lr=1e-2, seed=3, device="cpu")
SYNTHETIC = {"scenes": 4, "patch_size": 32, "seed": 5, "grid": [3, 4]}


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A network fitted for 2 epochs (standardised bands: the statistics travel in the checkpoint)."""
    from harness.data.prepare import prepare_data

    data = prepare_data(synthetic=SYNTHETIC, cache_dir=tmp_path_factory.mktemp("predict-data") / "cache")
    keep = tmp_path_factory.mktemp("predict-model")

    def report(metrics, checkpoint_dir):
        if checkpoint_dir is not None and metrics["epoch"] == 2:
            shutil.copy(Path(checkpoint_dir) / CHECKPOINT_FILENAME, keep / CHECKPOINT_FILENAME)

    fit(replace(TINY, epochs=2, normalisation="standardise"), data, report)
    return keep
