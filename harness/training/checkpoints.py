"""Training checkpoints: one ``checkpoint.pt`` per epoch, tensors and plain values only.

``torch.load(path, weights_only=True)`` reads them (a checkpoint is data, not code). The training config
is stored flat (``to_flat``) and read back typed, so a resume can refuse a checkpoint of another network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.config.train import MODEL_KEYS, TrainConfig, from_flat, to_flat
from harness.training.seeding import capture_rng_state, restore_rng_state

CHECKPOINT_FILENAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 2
#: Per-epoch checkpoints are written to ``<temp>/harness-checkpoint-<pid>-*`` and handed to ``report``.
SCRATCH_PREFIX = "harness-checkpoint-"


def scratch_dir() -> Path:
    """A new temporary folder for one epoch's checkpoint, named after this process."""
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))


def remove_orphaned_scratch(root: str | Path | None = None) -> list[Path]:
    """Delete checkpoint folders left by processes that no longer run (a killed trial); returns them.

    A trial killed between writing a checkpoint and handing it over never removes its folder: each holds
    a whole ``checkpoint.pt``, and a few killed sweeps would leave a dozen in the temp folder for ever.
    """
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        pid = folder.name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` with ``torch.save`` (tensors and plain values only)."""
    torch.save(state, path)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint safely (``weights_only=True``) onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_config(checkpoint: dict) -> TrainConfig:
    """The training config a checkpoint was written with."""
    return from_flat(checkpoint["config"])


def checkpoint_state(
    *,
    config: TrainConfig,
    epoch: int,
    model: nn.Module,
    optimiser,
    history,
    loader_generator,
    band_stats,
    scaler: torch.amp.GradScaler | None = None,
) -> dict:
    """Everything a resume needs after ``epoch``: weights, optimiser, history, random states, band stats.

    With fp16 training also the gradient scaler's state (its scale and growth tracker), else None.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "config": to_flat(config),
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "history": [dict(entry) for entry in history],
        "rng": capture_rng_state(loader_generator),
        "band_stats": None if band_stats is None else [np.asarray(s, dtype=np.float64).tolist() for s in band_stats],
        "scaler": None if scaler is None else scaler.state_dict(),
    }


def check_resumable(checkpoint: dict, config: TrainConfig, path: Path) -> None:
    """Refuse a checkpoint of another format or another network than ``config`` describes."""
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a checkpoint of format {CHECKPOINT_FORMAT}")
    stored = checkpoint["config"]
    differing = [key for key in MODEL_KEYS if stored.get(key) != getattr(config, key)]
    if differing:
        details = ", ".join(f"{k}: {stored.get(k)!r} vs {getattr(config, k)!r}" for k in differing)
        raise ValueError(f"{path}: checkpoint is for a different network ({details})")


def restore_training_state(
    checkpoint: dict, model: nn.Module, optimiser, loader_generator, *, scaler: torch.amp.GradScaler | None = None
) -> list[dict]:
    """Load weights, optimiser and RNG states from a checkpoint; returns its history (one entry per epoch).

    ``scaler`` (fp16 training) takes the checkpoint's scaler state when it has one; a checkpoint written in
    another precision leaves it at its initial scale.
    """
    model.load_state_dict(checkpoint["model"])
    optimiser.load_state_dict(checkpoint["optimiser"])
    if scaler is not None and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    # Last: building the model and the datasets drew from the global generators.
    restore_rng_state(checkpoint["rng"], loader_generator)
    history = [dict(entry) for entry in checkpoint["history"]]
    if len(history) != checkpoint["epoch"]:
        raise ValueError(f"checkpoint of epoch {checkpoint['epoch']} holds {len(history)} history entries")
    return history


def stored_band_stats(checkpoint: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The (mean, std) band statistics the checkpointed run trained with, or None."""
    stats = checkpoint.get("band_stats")
    return None if stats is None else tuple(np.asarray(s) for s in stats)
