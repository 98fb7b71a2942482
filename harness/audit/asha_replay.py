"""Replay: asynchronous successive halving over a finished sweep's recorded curves, for many schedules.

A sweep whose trials all ran every epoch (``asha.enabled: false``, any sampler) holds, for each trial, the
validation IoU it would have reported at every epoch under any schedule: training is deterministic, so a
trial ASHA stops after r epochs has exactly its first r values. Replaying Ray's ASHA decision rule over
those curves answers, in seconds and without training, what a grace period and reduction factor would
have cost: the best final IoU the sweep would still have found and the fraction of epochs it would have
spent, over many random arrival orders of the trials, per architecture.

* :class:`AshaReplay` is Ray's ``AsyncHyperBandScheduler`` decision rule (one bracket, mode max, trials
  stopped at ``max_t``) in plain Python; ``tests/audit/test_asha_replay.py`` checks it against Ray's own scheduler and
  a real Tune run, trial stop for trial stop.
* :func:`replay_schedule` runs trials in a given order, ``concurrency`` at a time; each epoch takes its
  recorded duration (or one unit), and the scheduler sees results in the order they would arrive.
* :func:`harness.audit.search_replay.replay_search` replays a searcher (TPE or random) with or without ASHA
  over a pool of recorded configurations (``benchmarks/perf/search_efficiency.py``).

``cloudmask replay`` / ``python -m harness.replay`` reads the sweep from MLflow
(:mod:`harness.audit.curves`) and prints the table (:func:`harness.audit.command.replay_command`).
"""

from __future__ import annotations

import heapq
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.audit.ranks import TrialCurve
from harness.errors import ReplayError
from harness.sweep.result import SweepResult

#: Columns of the summary table (one row per architecture and schedule).
SUMMARY_COLUMNS = (
    "arch",
    "asha",
    "grace_period",
    "reduction_factor",
    "orders",
    "best_iou_mean",
    "best_iou_p05",
    "best_iou_median",
    "p_found_best",
    "epochs_fraction_mean",
    "epochs_fraction_max",
    "completed_mean",
)


class AshaReplay:
    """Ray's ASHA decision rule (``AsyncHyperBandScheduler``, one bracket, mode max) in plain Python.

    The same milestones (``grace_period * reduction_factor**k``, as many as Ray makes), the same cutoff
    (``np.nanpercentile`` of the scores recorded at the rung, at ``(1 - 1/rf) * 100``), the same order
    of checks, and a trial stopped when it reaches ``max_t``.
    """

    def __init__(self, grace_period: float, reduction_factor: float, max_t: int) -> None:
        """Make the rungs exactly as ``ray.tune.schedulers.async_hyperband._Bracket`` does (s = 0)."""
        if not (max_t > 0 and 0 < grace_period <= max_t and reduction_factor > 1):
            raise ValueError(f"invalid ASHA settings: grace {grace_period}, factor {reduction_factor}, max_t {max_t}")
        self.rf, self.max_t = reduction_factor, max_t
        count = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1)
        self.rungs: list[tuple[float, dict[str, float]]] = [
            (grace_period * reduction_factor**k, {}) for k in reversed(range(count))
        ]

    def _cutoff(self, recorded: dict[str, float]) -> float | None:
        if not recorded:
            return None
        with warnings.catch_warnings():  # all NaN (diverged trials) gives NaN, as in Ray: no stop
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanpercentile(list(recorded.values()), (1 - 1 / self.rf) * 100)

    def _bracket(self, trial_id: str, iteration: float, value: float) -> bool:
        for milestone, recorded in self.rungs:
            if iteration < milestone or trial_id in recorded:
                continue
            cutoff = self._cutoff(recorded)
            recorded[trial_id] = value
            return cutoff is not None and value < cutoff
        return False

    def on_result(self, trial_id: str, iteration: float, value: float) -> bool:
        """One reported result; True when the trial must stop (below the rung's cutoff, or at ``max_t``)."""
        if iteration >= self.max_t:
            return True
        return self._bracket(trial_id, iteration, value)

    def on_complete(self, trial_id: str, iteration: float, value: float) -> None:
        """The trial ended with this last result (Tune passes it to the scheduler once more)."""
        self._bracket(trial_id, iteration, value)


@dataclass(frozen=True)
class ScheduleRun:
    """One replayed schedule: epochs each trial ran (by trial index) and the results in arrival order."""

    order: tuple[int, ...]
    epochs: tuple[int, ...]
    #: (trial index, epoch) in the order the scheduler saw them.
    events: tuple[tuple[int, int], ...]
    #: Trials the scheduler stopped before their recorded curve ended.
    stopped: frozenset[int]


def replay_schedule(
    curves: Sequence[Sequence[float]],
    order: Sequence[int],
    *,
    grace_period: float,
    reduction_factor: float,
    max_epochs: int,
    concurrency: int = 1,
    durations: Sequence[Sequence[float]] | None = None,
) -> ScheduleRun:
    """Replay ASHA over recorded curves: trials start in ``order``, ``concurrency`` at a time.

    Epoch ``e`` of trial ``t`` ends ``durations[t][e - 1]`` after the previous one (1 when None); the
    scheduler sees results in time order (ties: the earlier-started trial first), and a freed slot starts
    the next trial at once. A curve shorter than ``max_epochs`` (a diverged trial) ends by itself.
    """
    asha = AshaReplay(grace_period, reduction_factor, max_epochs)
    pending = iter(order)
    heap: list[tuple[float, int, int, int]] = []
    epochs = [0] * len(curves)
    events, stopped, started = [], set(), 0

    def start(now: float) -> None:
        nonlocal started
        t = next(pending, None)
        if t is not None:
            heapq.heappush(heap, (now + _duration(durations, t, 1), started, t, 1))
            started += 1

    for _ in range(max(1, concurrency)):
        start(0.0)
    while heap:
        now, seq, t, e = heapq.heappop(heap)
        value = float(curves[t][e - 1])
        events.append((t, e))
        epochs[t] = e
        stop = asha.on_result(str(t), e, value)
        if stop or e >= len(curves[t]):
            asha.on_complete(str(t), e, value)
            if stop and e < len(curves[t]):
                stopped.add(t)
            start(now)
        else:
            heapq.heappush(heap, (now + _duration(durations, t, e + 1), seq, t, e + 1))
    return ScheduleRun(tuple(order), tuple(epochs), tuple(events), frozenset(stopped))


def _duration(durations: Sequence[Sequence[float]] | None, t: int, epoch: int) -> float:
    return 1.0 if durations is None else float(durations[t][epoch - 1])


def best_final(curves: Sequence[Sequence[float]], epochs: Sequence[int], max_epochs: int) -> float:
    """Best last-epoch IoU among trials that ran all ``max_epochs`` epochs (the sweep's choice); NaN if none."""
    ran = [c for c, e in zip(curves, epochs, strict=True) if e >= max_epochs and len(c) >= max_epochs]
    finals = [float(c[max_epochs - 1]) for c in ran if math.isfinite(float(c[max_epochs - 1]))]
    return max(finals) if finals else math.nan


def replay_grid(
    curves: Sequence[Sequence[float]],
    *,
    max_epochs: int,
    grace_periods: Sequence[float],
    reduction_factors: Sequence[float],
    orders: int = 200,
    concurrency: int = 1,
    durations: Sequence[Sequence[float]] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Replay every (grace period, reduction factor) over the same ``orders`` random arrival orders.

    One row per replayed schedule: ``grace_period, reduction_factor, order, best_iou, epochs,
    epochs_fraction`` (of the epochs the recorded curves hold), ``completed`` (trials run to the end).
    """
    rng = np.random.default_rng(seed)
    perms = [tuple(int(i) for i in rng.permutation(len(curves))) for _ in range(orders)]
    total = sum(len(c) for c in curves)
    rows = []
    for grace in grace_periods:
        for rf in reduction_factors:
            for k, order in enumerate(perms):
                run = replay_schedule(
                    curves,
                    order,
                    grace_period=grace,
                    reduction_factor=rf,
                    max_epochs=max_epochs,
                    concurrency=concurrency,
                    durations=durations,
                )
                rows.append(
                    {
                        "grace_period": grace,
                        "reduction_factor": rf,
                        "order": k,
                        "best_iou": best_final(curves, run.epochs, max_epochs),
                        "epochs": sum(run.epochs),
                        "epochs_fraction": sum(run.epochs) / total,
                        "completed": sum(e >= max_epochs for e in run.epochs),
                    }
                )
    return pd.DataFrame(rows)


def summarise(arch: str, runs: pd.DataFrame, curves: Sequence[Sequence[float]], max_epochs: int) -> pd.DataFrame:
    """Per schedule: the distribution of the best final IoU found and of the epochs spent, plus no ASHA."""
    full_best = best_final(curves, [len(c) for c in curves], max_epochs)
    rows = [
        {
            "arch": arch,
            "asha": "off",
            "grace_period": None,
            "reduction_factor": None,
            "orders": 1,
            "best_iou_mean": full_best,
            "best_iou_p05": full_best,
            "best_iou_median": full_best,
            "p_found_best": 1.0,
            "epochs_fraction_mean": 1.0,
            "epochs_fraction_max": 1.0,
            "completed_mean": float(sum(len(c) >= max_epochs for c in curves)),
        }
    ]
    for (grace, rf), group in runs.groupby(["grace_period", "reduction_factor"], sort=True):
        best = group["best_iou"].to_numpy(dtype=float)
        rows.append(
            {
                "arch": arch,
                "asha": "on",
                "grace_period": grace,
                "reduction_factor": rf,
                "orders": len(group),
                "best_iou_mean": float(np.nanmean(best)) if np.isfinite(best).any() else math.nan,
                "best_iou_p05": float(np.nanquantile(best, 0.05)) if np.isfinite(best).any() else math.nan,
                "best_iou_median": float(np.nanmedian(best)) if np.isfinite(best).any() else math.nan,
                "p_found_best": float(np.mean(best >= full_best)),
                "epochs_fraction_mean": float(group["epochs_fraction"].mean()),
                "epochs_fraction_max": float(group["epochs_fraction"].max()),
                "completed_mean": float(group["completed"].mean()),
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


# -- a finished sweep's curves ------------------------------------------------------------------
def check_replayable(sweep: SweepResult, curves: Sequence[TrialCurve]) -> None:
    """ReplayError unless every trial ran every epoch (or diverged by itself) and has its whole curve."""
    stopped = [t.trial_id for t in sweep.trials if t.stopped_by in ("asha", "error")]
    if stopped:
        raise ReplayError(
            f"sweep {sweep.sweep_id}, {sweep.arch}: {len(stopped)} trial(s) did not run every epoch "
            f"(stopped by ASHA or an error), so their later epochs are unknown: {', '.join(stopped)}; "
            "replay a sweep run with `asha.enabled: false`"
        )
    have = {c.trial_id: c for c in curves}
    short = [
        t.trial_id
        for t in sweep.trials
        if t.trial_id not in have or (t.stopped_by == "completed" and have[t.trial_id].epochs < sweep.max_epochs)
    ]
    if short:
        raise ReplayError(f"sweep {sweep.sweep_id}, {sweep.arch}: no whole val_iou curve in MLflow: {', '.join(short)}")


# -- a whole sweep, every architecture --------------------------------------------------------------
def default_grace_periods(max_epochs: int) -> list[int]:
    """1, 2, 4, ... below ``max_epochs``: every grace period that leaves ASHA a rung to decide at."""
    return [2**k for k in range(max_epochs.bit_length()) if 2**k < max_epochs] or [1]


def replay_sweep(
    sweeps: Mapping[str, SweepResult],
    curves: Mapping[str, tuple[list[TrialCurve], list[list[float]] | None]],
    *,
    grace_periods: Sequence[float] | None = None,
    reduction_factors: Sequence[float] = (2, 3, 4),
    orders: int = 200,
    concurrency: int = 1,
    timing: str = "recorded",
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, per-order rows) for every architecture; ReplayError naming every trial that blocks it."""
    problems = []
    for arch, sweep in sweeps.items():
        try:
            check_replayable(sweep, curves[arch][0])
        except ReplayError as exc:
            problems.append(str(exc))
    if problems:
        raise ReplayError("; ".join(problems))
    summaries, runs = [], []
    for arch, sweep in sweeps.items():
        arch_curves, durations = curves[arch]
        values = [c.values for c in arch_curves]
        rows = replay_grid(
            values,
            max_epochs=sweep.max_epochs,
            grace_periods=grace_periods or default_grace_periods(sweep.max_epochs),
            reduction_factors=reduction_factors,
            orders=orders,
            concurrency=concurrency,
            durations=durations if timing == "recorded" else None,
            seed=seed,
        )
        runs.append(rows.assign(arch=arch))
        summaries.append(summarise(arch, rows, values, sweep.max_epochs))
    return pd.concat(summaries, ignore_index=True), pd.concat(runs, ignore_index=True)
