"""The network ``cloudmask predict`` uses, with the preprocessing it was trained with.

``--model`` is a harness checkpoint (``checkpoint.pt``, or a folder holding one: a sweep trial's
checkpoint, a retrain's ``retrain/`` folder, the sweep's ``best_checkpoint/``). The checkpoint holds the
training config (architecture, normalisation) and the train split's band statistics, so the
preprocessing travels with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from harness.config import TrainConfig
from harness.errors import InputError
from harness.predict.preprocessing import Preprocessing
from harness.training.checkpoints import CHECKPOINT_FILENAME, checkpoint_config, load_checkpoint
from harness.training.loop import model_from_checkpoint


@dataclass(frozen=True)
class TrainedNetwork:
    """A network ready to predict, what it expects of its input, and the config it was trained with."""

    model: torch.nn.Module
    preprocessing: Preprocessing
    config: TrainConfig
    source: Path

    def check_tile(self, tile: int) -> None:
        """Refuse tiles the network cannot take: a side must be divisible by 2**depth (its poolings)."""
        multiple = 2**self.config.depth
        if tile <= 0 or tile % multiple:
            raise InputError(
                f"--tile {tile}: {self.config.arch} of depth {self.config.depth} ({self.source}) takes tiles whose "
                f"side is a multiple of {multiple}"
            )


def load_model(uri: str, device: torch.device | str = "cpu") -> TrainedNetwork:
    """The network of a checkpoint file or folder, in eval mode on ``device``, with its preprocessing."""
    path = Path(uri)
    if path.is_dir():
        found = sorted(path.rglob(CHECKPOINT_FILENAME))
        if len(found) != 1:
            raise InputError(f"--model {uri}: expected one {CHECKPOINT_FILENAME} in the folder, found {len(found)}")
        path = found[0]
    if not path.is_file():
        raise InputError(f"--model {uri}: no such checkpoint file or folder")
    try:
        checkpoint = load_checkpoint(path)
        preprocessing = Preprocessing.from_checkpoint(checkpoint)
        config = checkpoint_config(checkpoint)
        model = model_from_checkpoint(path, device)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise InputError(f"--model {path}: not a harness checkpoint ({type(exc).__name__}: {exc})") from None
    return TrainedNetwork(model, preprocessing, config, path)


__all__ = ["TrainedNetwork", "load_model"]
