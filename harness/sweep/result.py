"""The sweep's answer for one architecture, handed one way to the final comparison.

The sweep decides, once, through :func:`select_best`, and writes one :class:`SweepResult` per
architecture (``sweep_result.json`` on the architecture's parent MLflow run).
:func:`harness.compare.driver.load_sweep_results` reads it back typed and never re-decides. No Ray and no MLflow
here: the rule is tested without either.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.config.train import TrainConfig, from_flat, to_flat
from harness.errors import InputError

#: The MLflow artifact holding a SweepResult on the architecture's parent run.
SWEEP_RESULT_FILE = "sweep_result.json"
FORMAT = 1


@dataclass(frozen=True)
class TrialSummary:
    """One trial of a sweep: its config, how it ended, how far it ran and its last validation IoU."""

    trial_id: str
    run_id: str | None
    config: TrainConfig
    #: completed | asha | diverged | error (the MLflow ``stopped_by`` tag).
    stopped_by: str
    epochs: int
    val_iou: float
    seconds: float


@dataclass(frozen=True)
class SweepResult:
    """What one architecture's sweep produced: the chosen trial and the whole trial table."""

    sweep_id: str
    benchmark: str
    arch: str
    split_hash: str
    max_epochs: int
    #: None when no trial ran every epoch (the final comparison then refuses to run).
    best: TrialSummary | None
    trials: tuple[TrialSummary, ...]
    #: The data's content hash (``PreparedData.data_hash``); None in results of sweeps made before it existed.
    data_hash: str | None = None

    @property
    def best_config(self) -> TrainConfig:
        """The configuration the final comparison retrains; ValueError when the sweep chose none."""
        if self.best is None:
            raise InputError(
                f"sweep {self.sweep_id}, {self.arch}: no trial ran all {self.max_epochs} epochs; "
                "raise search.num_samples or lower asha.reduction_factor"
            )
        return self.best.config

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (configs flattened with ``to_flat``)."""
        return {
            "format": FORMAT,
            "sweep_id": self.sweep_id,
            "benchmark": self.benchmark,
            "arch": self.arch,
            "split_hash": self.split_hash,
            "data_hash": self.data_hash,
            "max_epochs": self.max_epochs,
            "best_trial_id": None if self.best is None else self.best.trial_id,
            "trials": [_trial_to_dict(t) for t in self.trials],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SweepResult:
        """Inverse of :meth:`to_dict`; ValueError when the dict is not a sweep result of this format."""
        if raw.get("format") != FORMAT:
            raise InputError(f"not a sweep result of format {FORMAT} (got format {raw.get('format')!r})")
        trials = tuple(_trial_from_dict(t) for t in raw["trials"])
        best = [t for t in trials if t.trial_id == raw["best_trial_id"]] or [None]
        if raw["best_trial_id"] is not None and best[0] is None:
            raise InputError(f"sweep result names best trial {raw['best_trial_id']!r}, which is not in its table")
        return cls(
            sweep_id=raw["sweep_id"],
            benchmark=raw["benchmark"],
            arch=raw["arch"],
            split_hash=raw["split_hash"],
            max_epochs=int(raw["max_epochs"]),
            best=best[0],
            trials=trials,
            data_hash=raw.get("data_hash"),
        )


def _trial_to_dict(trial: TrialSummary) -> dict[str, Any]:
    out = dataclasses.asdict(trial)
    out["config"] = to_flat(trial.config)
    return out


def _trial_from_dict(raw: Mapping[str, Any]) -> TrialSummary:
    return TrialSummary(**{**raw, "config": from_flat(raw["config"])})


def ran_every_epoch(trial: TrialSummary, max_epochs: int) -> bool:
    """True for a trial that completed all ``max_epochs`` epochs with a finite validation IoU."""
    return trial.stopped_by == "completed" and trial.epochs >= max_epochs and math.isfinite(trial.val_iou)


def select_best(trials: Iterable[TrialSummary], max_epochs: int) -> TrialSummary | None:
    """The trial with the highest final validation IoU among those that ran every epoch, or None.

    Trials stopped early by ASHA are left out: their IoU is of a shorter training and would compare
    unequal budgets. Ties go to the trial that comes first by id, so the choice never depends on order.
    """
    full = [t for t in trials if ran_every_epoch(t, max_epochs)]
    if not full:
        return None
    return min(full, key=lambda t: (-t.val_iou, t.trial_id))
