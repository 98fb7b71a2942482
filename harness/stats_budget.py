"""Expected best validation score vs tuning budget (Dodge et al. 2019, "Show Your Work"), and ``budget.csv``.

Part of :mod:`harness.stats` (which re-exports everything here): :func:`expected_max_curve`,
:func:`expected_cost_curve` on plain arrays, and :func:`budget_table`, the builder of the results
directory's ``budget.csv`` from a sweep's trial table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Sweep trial endings that produced no usable model: budget_table counts them at the floor score.
FAILED_TRIALS = ("diverged", "error")


def _finite(values) -> np.ndarray:
    """1-D float array of ``values`` without NaNs."""
    v = np.asarray(values, dtype=float).ravel()
    return v[~np.isnan(v)]


def expected_max_curve(scores, n_max: int | None = None, *, return_std: bool = False):
    """Expected best validation score after ``n = 1..n_max`` trials (Dodge et al. 2019, "Show Your Work").

    The ``N`` observed trial scores are treated as the distribution of one trial's outcome; ``n`` trials
    are ``n`` draws with replacement. With sorted scores ``v(1) <= ... <= v(N)``,
    ``P(max_n = v(i)) = (i/N)^n - ((i-1)/N)^n`` and ``E[max_n] = sum_i v(i) * P(max_n = v(i))``.
    ``n_max`` defaults to ``N`` (it may exceed ``N``: draws are with replacement). The curve is
    non-decreasing, starts at the mean and tends to the best observed score. NaN scores are dropped.

    Returns ``E[max_n]`` for ``n = 1..n_max`` (float array of length ``n_max``); with
    ``return_std=True`` also the standard deviation of ``max_n`` (the band of Dodge et al.'s figures).
    """
    v = np.sort(_finite(scores))
    if v.size == 0:
        raise ValueError("expected_max_curve needs at least one finite score")
    n_max = v.size if n_max is None else int(n_max)
    i = np.arange(1, v.size + 1) / v.size
    n = np.arange(1, n_max + 1)[:, None]
    weights = i[None, :] ** n - (i[None, :] - 1 / v.size) ** n  # (n_max, N); each row sums to 1
    mean = weights @ v
    if not return_std:
        return mean
    var = np.clip(weights @ v**2 - mean**2, 0.0, None)  # clip rounding below zero
    return mean, np.sqrt(var)


def expected_cost_curve(costs, n_max: int | None = None) -> np.ndarray:
    """Expected cumulative cost (e.g. device-hours) of ``n = 1..n_max`` trials: ``n * mean(costs)``.

    The companion x-axis of :func:`expected_max_curve`: the same with-replacement model makes each draw
    cost one observed trial's cost on average, so ``n`` draws cost ``n`` times the mean. Trials that
    ASHA stopped early are cheap and count with their real (short) cost, which is what a budget buys.
    """
    c = _finite(costs)
    if c.size == 0:
        raise ValueError("expected_cost_curve needs at least one finite cost")
    n_max = c.size if n_max is None else int(n_max)
    return np.arange(1, n_max + 1) * float(c.mean())


def budget_table(trials: pd.DataFrame, *, n_max: int | None = None, floor: float = 0.0) -> pd.DataFrame:
    """``budget.csv`` from one row per sweep trial: ``arch``, ``val_iou``, ``device_hours``, ``stopped_by``.

    Every trial is one draw of the budget. ``val_iou`` is the validation IoU the trial ended with: a
    completed trial's final score, an ASHA-stopped trial's score *when stopped* (it would likely have
    risen had it run on). A trial that diverged or failed (``stopped_by`` in :data:`FAILED_TRIALS`, or
    a NaN ``val_iou``) produced no usable model: it counts as a draw at ``floor`` (IoU 0 by default)
    rather than being dropped, which would flatter an architecture that diverges. ``stopped_by`` is
    optional (without it only NaN scores count as failed). ``device_hours`` is what the trial cost.

    Returns per arch and ``n = 1..n_max`` (default: that arch's number of trials): ``arch, n_trials,
    expected_best_val_iou, expected_best_val_iou_sd, device_hours`` (:func:`expected_max_curve`,
    :func:`expected_cost_curve`). Near ``n = N`` the estimator is biased low: draws with replacement
    repeat trials, so it stays below the best trial found.
    """
    parts = []
    for arch, group in trials.groupby("arch", sort=False):
        scores = group["val_iou"].to_numpy(float)
        failed = ~np.isfinite(scores)
        if "stopped_by" in group.columns:
            failed |= group["stopped_by"].isin(FAILED_TRIALS).to_numpy()
        mean, sd = expected_max_curve(np.where(failed, floor, scores), n_max, return_std=True)
        parts.append(
            pd.DataFrame(
                {
                    "arch": arch,
                    "n_trials": np.arange(1, mean.size + 1),
                    "expected_best_val_iou": mean,
                    "expected_best_val_iou_sd": sd,
                    "device_hours": expected_cost_curve(group["device_hours"], mean.size),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)
