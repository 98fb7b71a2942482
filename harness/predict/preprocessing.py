"""What a network needs of its input, recorded with it: band order, scaling, statistics, threshold (numpy only).

A network trained by the harness takes the four 38-Cloud bands in ``harness.data.layout.BANDS`` order (red,
green, blue, NIR: Landsat-8 bands 4, 3, 2, 5) as 16-bit digital numbers, scaled by 1/65535 (``scale``) or
standardised with the train split's per-band mean and standard deviation (``standardise``); its output is
two-class logits, and a pixel is cloud when the softmax cloud probability exceeds ``threshold`` (0.5: the
argmax the harness scores). :class:`Preprocessing` holds exactly that, from a checkpoint or a dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.data.layout import BANDS, LANDSAT_BANDS
from harness.data.normalisation import NORMALISATIONS, SCALE
from harness.errors import InputError

#: The key of a logged model's MLflow metadata under which the harness keeps its preprocessing and config.
MODEL_METADATA_KEY = "cloudmask"


@dataclass(frozen=True)
class Preprocessing:
    """How to turn a scene's digital numbers into the network's input, and its output into a mask."""

    normalisation: str = "scale"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    threshold: float = 0.5
    bands: tuple[str, ...] = field(default=BANDS)
    dtype: str = "uint16"

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise InputError(
                f"preprocessing.normalisation: expected one of {NORMALISATIONS}, got {self.normalisation!r}"
            )
        if self.normalisation == "standardise" and (self.mean is None or self.std is None):
            raise InputError("preprocessing: normalisation 'standardise' needs the band mean and std")
        if not 0 < self.threshold < 1:
            raise InputError(f"preprocessing.threshold: expected a probability in (0, 1), got {self.threshold}")

    def apply(self, dn: np.ndarray) -> np.ndarray:
        """(4, H, W) digital numbers in ``bands`` order -> float32 network input."""
        image = dn.astype(np.float32)
        if self.normalisation == "scale":
            return image * np.float32(SCALE)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(-1, 1, 1)
        return (image - mean) / std

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what a logged model's metadata holds)."""
        return {
            "bands": list(self.bands),
            "landsat_bands": [LANDSAT_BANDS[b] for b in self.bands],
            "dtype": self.dtype,
            "normalisation": self.normalisation,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """The inverse of :meth:`to_dict`; unknown keys are ignored (``landsat_bands`` follows from ``bands``)."""
        mean, std = data.get("mean"), data.get("std")
        return cls(
            normalisation=data.get("normalisation", "scale"),
            mean=None if mean is None else tuple(float(v) for v in mean),
            std=None if std is None else tuple(float(v) for v in std),
            threshold=float(data.get("threshold", 0.5)),
            bands=tuple(data.get("bands", BANDS)),
            dtype=str(data.get("dtype", "uint16")),
        )

    @classmethod
    def from_training(cls, normalisation: str, band_stats: Any = None, threshold: float = 0.5) -> Preprocessing:
        """What a network trained with ``normalisation`` and the train split's ``band_stats`` (mean, std) expects."""
        if band_stats is None:
            return cls(normalisation=normalisation, threshold=threshold)
        mean, std = (tuple(float(v) for v in s) for s in band_stats)
        return cls(normalisation=normalisation, mean=mean, std=std, threshold=threshold)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], threshold: float = 0.5) -> Preprocessing:
        """What the run that wrote ``checkpoint`` (``harness.training.loop.fit``) trained with."""
        normalisation = checkpoint["config"].get("normalisation", "scale")
        return cls.from_training(normalisation, checkpoint.get("band_stats"), threshold)


__all__ = ["MODEL_METADATA_KEY", "Preprocessing"]
