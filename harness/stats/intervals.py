"""Intervals and paired tests on plain arrays (numpy/scipy only): the statistics of the final comparison.

:func:`t_interval`, :func:`paired_t_test`, :func:`bootstrap_ci`, :func:`paired_bootstrap_ci`,
:func:`wilcoxon_signed_rank`, :func:`prob_a_beats_b`. The hierarchical bootstrap over seeds, scenes and
images is :mod:`harness.stats.hierarchical`; expected best score vs budget is :mod:`harness.stats.budget`;
the tables of the results directory that use them are built by :mod:`harness.compare.tables`.

Conventions shared by every function of :mod:`harness.stats`:

* The unit of replication of a final comparison is the training seed. Intervals of a mean over seeds
  are Student-t intervals (a percentile bootstrap over 3 seeds is their min-max, which covers the mean
  about 76 % of the time, not 95 %); the headline paired comparison is the t interval over per-seed
  differences, for "this test set, new training seeds" (:mod:`harness.stats.paired`). Image-level
  intervals and tests are kept, and labelled as such.
* NaN marks "undefined"; primitives drop NaNs before computing (pairwise for paired inputs), never
  turning them into 0 or 1.
* Randomness comes only from ``np.random.default_rng(seed)``: the same inputs and seed give the same
  interval, so a report can be rebuilt bit for bit.
* Nothing here imports torch, ray, mlflow or pandas.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import scipy.stats

from harness.stats.arrays import CHUNK_ELEMENTS, finite, win_tie_loss

__all__ = [
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "paired_t_test",
    "prob_a_beats_b",
    "t_interval",
    "wilcoxon_signed_rank",
]


def _apply_stat(stat: Callable, samples: np.ndarray) -> np.ndarray:
    """``stat`` of each row of ``samples``; vectorised when ``stat`` takes ``axis`` (np.mean, np.median)."""
    try:
        out = np.asarray(stat(samples, axis=1), dtype=float)
        if out.shape == (samples.shape[0],):
            return out
    except TypeError:
        pass
    return np.array([stat(row) for row in samples], dtype=float)


def bootstrap_ci(
    values,
    *,
    stat: Callable = np.mean,
    n_boot: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of ``stat(values)``.

    Returns ``(estimate, low, high)`` where ``estimate = stat(values)`` on the data itself and
    ``low``/``high`` are the ``alpha/2`` and ``1 - alpha/2`` quantiles of ``stat`` over ``n_boot``
    resamples drawn with replacement. NaNs are dropped first. With fewer than two values there is no
    spread to resample: the result is ``(value, nan, nan)`` (``(nan, nan, nan)`` when empty).

    Not for a handful of values: over 3 seeds the percentile interval is their min-max (coverage about
    76 % instead of 95 %); use :func:`t_interval` for means over seeds.
    """
    v = finite(values)
    if v.size == 0:
        return (float("nan"), float("nan"), float("nan"))
    estimate = float(stat(v))
    if v.size < 2:
        return (estimate, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // v.size)
    boot = []
    for start in range(0, n_boot, rows_per_chunk):
        rows = min(rows_per_chunk, n_boot - start)
        boot.append(_apply_stat(stat, v[rng.integers(0, v.size, size=(rows, v.size))]))
    low, high = np.quantile(np.concatenate(boot), [alpha / 2, 1 - alpha / 2])
    return (estimate, float(low), float(high))


def t_interval(values, *, alpha: float = 0.05) -> tuple[float, float, float]:
    """Student-t ``1 - alpha`` interval of the mean: ``mean ± t(1 - alpha/2, n - 1) * sd / sqrt(n)``.

    ``sd`` is the sample standard deviation (ddof=1). The interval for a mean over a few seeds: it
    assumes roughly normal seed-to-seed variation and widens honestly as n shrinks (t = 4.30 for 3
    values, 2.78 for 5). NaNs are dropped; fewer than two values give ``(mean, nan, nan)`` (``(nan,
    nan, nan)`` when empty); equal values give a zero-width interval. Returns ``(mean, low, high)``.
    """
    v = finite(values)
    if v.size == 0:
        return (float("nan"), float("nan"), float("nan"))
    mean = float(v.mean())
    if v.size < 2:
        return (mean, float("nan"), float("nan"))
    half = float(scipy.stats.t.ppf(1 - alpha / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return (mean, mean - half, mean + half)


def paired_t_test(a, b) -> float:
    """Two-sided paired t-test p-value of ``mean(a - b) = 0`` (e.g. per-seed scores of two architectures).

    Pairs with a NaN are dropped. Fewer than two pairs give NaN; differences that are all equal give 1.0
    when they are all zero and 0.0 otherwise (no spread: scipy would return NaN).
    """
    d = _paired_differences(a, b)
    if d.size < 2:
        return float("nan")
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    return float(scipy.stats.ttest_1samp(d, 0.0).pvalue)


def _paired_differences(a, b) -> np.ndarray:
    """``a - b`` for paired samples, dropping every pair in which either side is NaN."""
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    return finite(a - b)


def paired_bootstrap_ci(
    a, b, *, n_boot: int = 10_000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Bootstrap interval of the mean paired difference ``mean(a - b)``.

    Pairs (not the two samples independently) are resampled, so whatever the pair shares (the same test
    image, the same seed) cancels out. Returns ``(mean_difference, low, high)``; identical inputs give
    ``(0.0, 0.0, 0.0)``. Pairs with a NaN on either side are dropped.
    """
    return bootstrap_ci(_paired_differences(a, b), n_boot=n_boot, alpha=alpha, seed=seed)


def wilcoxon_signed_rank(a, b) -> float:
    """Two-sided Wilcoxon signed-rank p-value for paired samples ``a`` and ``b``.

    Uses ``scipy.stats.wilcoxon`` on ``a - b`` with zero differences discarded (``zero_method="wilcox"``)
    and scipy's automatic choice between the exact and the normal-approximation distribution.
    Documented edge cases, none of which raise or warn: when every difference is zero (or there are no
    finite pairs) the samples do not differ and the p-value is ``1.0``.
    """
    d = _paired_differences(a, b)
    if d.size == 0 or not np.any(d):
        return 1.0
    with warnings.catch_warnings():
        # scipy warns about ties/zeros and small samples; the p-value is still the right one to report.
        warnings.simplefilter("ignore")
        return float(scipy.stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def prob_a_beats_b(a_scores, b_scores, *, paired: bool = True) -> float:
    """Probability that ``a`` scores higher than ``b``, ties counted as one half.

    ``paired=True`` (the final comparison, whose seeds are paired: same seed, same data order):
    the fraction of positions ``i`` with ``a[i] > b[i]``. ``paired=False``: over all ``len(a) * len(b)``
    combinations (the Mann-Whitney probability of superiority). NaN pairs/values are dropped; no data
    gives NaN. Example: ``a = [0.9, 0.8, 0.7]``, ``b = [0.8, 0.8, 0.9]`` -> ``(1 + 0.5 + 0) / 3 = 0.5``.
    """
    if paired:
        d = _paired_differences(a_scores, b_scores)
        wins = win_tie_loss(d)
    else:
        a, b = finite(a_scores), finite(b_scores)
        diff = a[:, None] - b[None, :]
        wins = win_tie_loss(diff).ravel()
    return float(np.mean(wins)) if wins.size else float("nan")
