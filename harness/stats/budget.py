"""Expected best validation score vs tuning budget (Dodge et al. 2019, "Show Your Work"), on plain arrays.

:func:`expected_max_curve`, :func:`expected_cost_curve`; ``budget.csv`` is built from them by
:func:`harness.compare.tables.budget_table`.
"""

from __future__ import annotations

import numpy as np

from harness.stats.arrays import finite


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
    v = np.sort(finite(scores))
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
    c = finite(costs)
    if c.size == 0:
        raise ValueError("expected_cost_curve needs at least one finite cost")
    n_max = c.size if n_max is None else int(n_max)
    return np.arange(1, n_max + 1) * float(c.mean())
