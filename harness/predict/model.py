"""The network ``cloudmask predict`` uses, with the preprocessing it was trained with.

``--model`` is a harness checkpoint (``checkpoint.pt``, or a folder holding one: a sweep trial's checkpoint,
the sweep's ``best_checkpoint/``), or an MLflow model URI (``runs:/<run id>/<name>``, ``models:/<name>/<version>``:
a retrain ``cloudmask compare`` logged, with its preprocessing and config as the model's metadata). Either way
the preprocessing travels with the weights: the checkpoint holds the training config and the train split's
band statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from harness.config import TrainConfig
from harness.errors import InputError
from harness.predict.preprocessing import MODEL_METADATA_KEY, Preprocessing
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


def load_model(uri: str, device: torch.device | str = "cpu", *, tracking_uri: str | None = None) -> TrainedNetwork:
    """The network of a checkpoint file or folder or of an MLflow model URI, in eval mode on ``device``."""
    from harness.tracking.models import is_model_uri

    if is_model_uri(uri):
        return _from_mlflow(uri, torch.device(device), tracking_uri or "sqlite:///mlflow.db")
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


def _from_mlflow(uri: str, device: torch.device, tracking_uri: str) -> TrainedNetwork:
    from harness.config import from_flat
    from harness.tracking.models import load_logged_model

    # MLflow 3 logs the network as a torch.export program, exported in eval mode; it loads onto `device`.
    model, metadata = load_logged_model(uri, tracking_uri, map_location=str(device))
    recorded = metadata.get(MODEL_METADATA_KEY)
    if not isinstance(recorded, dict) or "preprocessing" not in recorded or "train_config" not in recorded:
        raise InputError(
            f"--model {uri}: the logged model has no `{MODEL_METADATA_KEY}` metadata (its band order, scaling and "
            "statistics): log it with `cloudmask compare`, or pass the run's checkpoint instead"
        )
    preprocessing = Preprocessing.from_dict(recorded["preprocessing"])
    config = from_flat(recorded["train_config"])
    return TrainedNetwork(model, preprocessing, config, Path(uri))


__all__ = ["TrainedNetwork", "load_model"]
