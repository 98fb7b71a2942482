"""Search spaces as Optuna sees them, the seeded samplers, and what a finished trial is told to Optuna.

A benchmark's search spaces are read and checked by :mod:`harness.config.search_spaces` (YAML -> one
validated dict per key); here they become Optuna distributions (:func:`to_optuna`). No Ray here: the Ray
searcher in :mod:`harness.sweep.searcher` asks :func:`trial_outcome` what to tell Optuna, so that logic is
tested without training anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from harness.errors import ConfigError


def to_optuna(space: Mapping[str, Mapping[str, Any]]) -> dict[str, BaseDistribution]:
    """Convert a validated search space into Optuna distributions (the define-and-run form)."""
    dists: dict[str, BaseDistribution] = {}
    for key, spec in space.items():
        kind = spec["type"]
        if kind == "categorical":
            dists[key] = CategoricalDistribution(spec["choices"])
        elif kind == "int":
            dists[key] = IntDistribution(spec["low"], spec["high"], log=spec["log"], step=spec["step"])
        else:
            dists[key] = FloatDistribution(spec["low"], spec["high"], log=spec["log"], step=spec["step"])
    return dists


def tpe_startup_trials(budget: int) -> int:
    """Random start-up trials before TPE models the space: a quarter of the budget, at least 4, at most 10.

    With Optuna's default of 10, a sweep of 8 trials per architecture never leaves random search; a
    quarter keeps TPE guiding most of the budget. Below 4, TPE models the space from too few trials: with
    8 trials, 4 start-up trials find a better configuration than 2 (+0.007 to +0.011 IoU over 100
    searcher seeds, with or without ASHA), and at 16 trials 4 is as good as 8 ("Search efficiency" in
    benchmarks/perf/RESULTS.md).
    """
    return max(4, min(10, budget // 4))


def make_sampler(name: str, seed: int, *, budget: int = 40) -> optuna.samplers.BaseSampler:
    """The seeded sampler every architecture's study uses: TPE, or random search as a baseline."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tpe_startup_trials(budget))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"search.sampler: expected tpe or random, got {name!r}")


def trial_outcome(
    last_result: Mapping[str, Any] | None, *, metric: str, error: bool
) -> tuple[TrialState, float | None]:
    """What to tell Optuna about a finished Ray trial: (state, value).

    Ray's stock searcher reports every trial it did not see fail as COMPLETE with its last score,
    so a trial ASHA stopped after one epoch teaches TPE its truncated score as if it were final.
    Here only a trial whose training loop said ``status == "completed"`` (it ran every epoch) is
    COMPLETE; a diverged or errored trial (Tune's error, or ``status == "error"``: a configuration the
    trial found it cannot run) is FAIL; anything else was stopped early by the scheduler and is PRUNED
    (Optuna keeps its intermediate values, reported per epoch).
    """
    if error:
        return TrialState.FAIL, None
    status = (last_result or {}).get("status")
    if status == "completed":
        value = (last_result or {}).get(metric)
        if value is None or not math.isfinite(float(value)):
            return TrialState.FAIL, None
        return TrialState.COMPLETE, float(value)
    if status in ("diverged", "error"):
        return TrialState.FAIL, None
    return TrialState.PRUNED, None


def stopped_by(last_result: Mapping[str, Any] | None, *, error: bool) -> str:
    """The MLflow ``stopped_by`` tag for a finished trial: completed | asha | diverged | error."""
    if error:
        return "error"
    status = (last_result or {}).get("status")
    if status in ("completed", "diverged", "error"):
        return status
    return "asha"
