"""``TrainConfig``: the one training-config schema, from a benchmark's ``train:`` section to ``fit``.

Every default is defined here and nowhere else. Vocabularies come from the modules that own them, none
of which imports torch: the model registry (:func:`harness.models.list_models`, its capabilities such as
deep supervision and depth range, ``harness.models.NORMS``), ``harness.training.loss_names.LOSSES`` and
``harness.data.normalisation.NORMALISATIONS``, so a value valid here is one ``fit`` can run. The config is
frozen: a variant is made with ``dataclasses.replace``. It is flattened to a plain dict only at the Ray
Tune boundary and in files (``to_flat`` / ``from_flat``), and read back typed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.config.fields import coerce
from harness.data.normalisation import NORMALISATIONS
from harness.errors import ConfigError
from harness.models import NORMS, list_models, shape_problem
from harness.training.loss_names import LOSSES

#: Training precision: "auto" is bf16 autocast on a CUDA device with bf16, fp16 autocast with a gradient
#: scaler on one without (T4, V100), float32 on the CPU; the others force that precision on any device.
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
#: Hard limits whatever a benchmark or search space says.
_RANGES = {
    "epochs": (1, 10_000),
    "batch_size": (1, 4096),
    "eval_batch_size": (1, 4096),
    "depth": (1, 6),
    "base_channels": (1, 1024),
    "num_workers": (0, 256),
}


@dataclass(frozen=True)
class TrainConfig:
    """How one network is trained: what a trial samples and what the final comparison retrains."""

    arch: str = "unet"
    epochs: int = 10
    batch_size: int = 8
    eval_batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    depth: int = 4
    base_channels: int = 32
    #: The encoder (backbone) of an architecture that takes one (``cloudmask models``); "" is its default.
    encoder: str = ""
    norm: str = "batch"
    deep_supervision: bool = False
    loss: str = "ce"
    augment: bool = True
    normalisation: str = "scale"
    num_workers: int = 0
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    #: False: fastest cuDNN kernels; GPU runs then no longer repeat exactly.
    deterministic: bool = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = coerce(f"train.{f.name}", getattr(self, f.name), _TYPES[f.name])
            # Frozen, so the coerced value (a numpy scalar from a sampler made plain) is set this way.
            object.__setattr__(self, f.name, value)
            problem = value_problem(f.name, value)
            if problem:
                raise ConfigError(f"train.{f.name}: {problem}")
        problem = shape_problem(
            self.arch,
            depth=self.depth,
            deep_supervision=self.deep_supervision,
            encoder=self.encoder,
            norm=self.norm,
            batch_size=self.batch_size,
        )
        if problem:
            key, why = problem
            raise ConfigError(f"train.{key}: {why}")


_TYPES: dict[str, type] = {f.name: type(f.default) for f in dataclasses.fields(TrainConfig)}
#: Keys that fix the network's shape: a checkpoint resumes only a config that agrees on them.
MODEL_KEYS = ("arch", "depth", "base_channels", "encoder", "norm", "deep_supervision")
#: Keys a search space may sample: all but the architecture and bookkeeping.
SEARCHABLE_KEYS = tuple(name for name in _TYPES if name not in {"arch", "device", "precision", "seed", "deterministic"})


def value_problem(key: str, value: Any) -> str | None:
    """Why ``value`` (already of the field's type) is not allowed for ``key``, or None."""
    vocabularies = {
        "arch": tuple(list_models()),
        "norm": NORMS,
        "loss": LOSSES,
        "normalisation": NORMALISATIONS,
        "precision": PRECISIONS,
    }
    if key in vocabularies and value not in vocabularies[key]:
        return f"expected one of {', '.join(vocabularies[key])}, got {value!r}"
    if key in _RANGES:
        low, high = _RANGES[key]
        if not low <= value <= high:
            return f"must be in {low}..{high}, got {value}"
    if key == "lr" and not value > 0:
        return f"must be > 0, got {value}"
    if key == "weight_decay" and value < 0:
        return f"must be >= 0, got {value}"
    if key == "device" and not _DEVICE.match(value):
        return f"expected auto, cpu, cuda or cuda:N, got {value!r}"
    return None


def check_value(key: str, value: Any) -> Any:
    """``value`` coerced to the type of field ``key`` and checked; ConfigError naming ``key`` otherwise."""
    if key not in _TYPES:
        raise ConfigError(f"{key}: not a training key; valid: {', '.join(_TYPES)}")
    value = coerce(key, value, _TYPES[key])
    problem = value_problem(key, value)
    if problem:
        raise ConfigError(f"{key}: {problem}")
    return value


def to_flat(config: TrainConfig) -> dict[str, Any]:
    """A plain dict of the config (for Ray Tune's param space, JSON files and MLflow params)."""
    return dataclasses.asdict(config)


def from_flat(flat: Mapping[str, Any], *, ignore: tuple[str, ...] = ()) -> TrainConfig:
    """The config a flat dict describes; unknown keys are an error unless listed in ``ignore``."""
    unknown = sorted(set(flat) - set(_TYPES) - set(ignore))
    if unknown:
        raise ConfigError(f"train.{unknown[0]}: unknown key; valid: {', '.join(_TYPES)}")
    return TrainConfig(**{k: v for k, v in flat.items() if k in _TYPES})
