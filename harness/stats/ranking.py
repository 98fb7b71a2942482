"""K architectures at once: a ranking with simultaneous rank intervals, each against the best, a profile.

The data are those of the paired headline (:mod:`harness.stats.paired`): per architecture a
``(n_seeds, n_images)`` array of per-image scores, the same seeds (rows) and images (columns) for every
architecture, higher better. The estimand is the headline's, "this test set, new training seeds": the
seed is the unit of replication, so every comparison of two architectures is the Student-t interval over
the per-seed mean differences (S - 1 degrees of freedom), exactly :func:`harness.stats.paired.seed_interval`.

* :func:`compare_with_best`: each architecture against the one with the highest mean; paired-t p-values
  Holm-adjusted over the K - 1 comparisons (Holm 1979: step-down, controls the familywise error) and
  intervals simultaneous at ``1 - alpha`` by Bonferroni (level ``alpha / (K - 1)`` each). With K = 2 this
  is the headline interval itself.
* :func:`rank_intervals`: simultaneous confidence sets for all K ranks (Klein, Wright & Wrigley 2020,
  "Joint confidence sets for the ranks of populations"; Mogstad, Romano, Shaikh & Wilhelm 2024,
  "Inference for ranks with applications to mobility across neighbourhoods and academic achievement
  across countries"): all K(K-1)/2 pairwise intervals at Bonferroni level ``alpha / (K(K-1)/2)``; an
  architecture's rank is at least 1 + the number of others an interval places above it and at most K -
  the number an interval places below it. If every pairwise interval covers (probability >= 1 - alpha),
  every true rank lies in its interval.
* :func:`best_set`: the architectures whose rank interval contains 1, those not distinguishable from the best.
* :func:`performance_profile`: Dolan & Moré (2002) over test scenes, additive for scores in [0, 1]: the
  share of scenes on which an architecture is within tau of the best scene score.

``benchmarks/stats/rank_coverage.py`` measures the rank intervals' simultaneous coverage, Holm's familywise
error and how often the true best is in the best set by simulation (``benchmarks/stats/RESULTS.md``).
Nothing here imports torch, ray or mlflow.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import scipy.stats

_NAN = float("nan")


def _per_seed_means(scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each architecture's per-seed mean score; ValueError naming the first array that does not pair."""
    if not scores:
        raise ValueError("no architectures to rank")
    shapes = {arch: np.shape(values) for arch, values in scores.items()}
    first_arch, first = next(iter(shapes.items()))
    for arch, shape in shapes.items():
        if len(shape) != 2 or shape != first or 0 in shape:
            raise ValueError(
                f"scores of {arch!r} have shape {shape}; every architecture needs the same non-empty "
                f"(seeds, images) array ({first_arch!r}: {first})"
            )
    return {arch: np.asarray(values, float).mean(axis=1) for arch, values in scores.items()}


def _t_interval(per_seed_diff: np.ndarray, level_alpha: float) -> tuple[float, float, float, float]:
    """(diff, low, high, two-sided p) of the Student-t interval over per-seed differences."""
    diff, n = float(per_seed_diff.mean()), per_seed_diff.size
    if n < 2:
        return diff, _NAN, _NAN, _NAN
    se = float(per_seed_diff.std(ddof=1) / np.sqrt(n))
    if se <= 1e-12 * max(1.0, abs(diff)):  # equal differences up to rounding (0.15 - 0.15 is 1e-17)
        se = 0.0
    half = float(scipy.stats.t.ppf(1 - level_alpha / 2, n - 1)) * se
    # Every seed gave the same difference: a point, significant unless it is zero (as paired_t_test).
    p = (1.0 if diff == 0 else 0.0) if se == 0 else float(2 * scipy.stats.t.sf(abs(diff) / se, n - 1))
    return diff, diff - half, diff + half, p


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (monotone, capped at 1); NaN stays NaN and is not counted."""
    p = np.asarray(p_values, float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        adjusted[index] = running
    return adjusted


def _order(means: Mapping[str, float]) -> list[str]:
    # Highest mean first; ties keep the given order (stable), so the result does not depend on noise.
    return sorted(means, key=lambda arch: -means[arch])


def compare_with_best(scores: Mapping[str, np.ndarray], *, alpha: float = 0.05) -> list[dict]:
    """Each architecture against the best (the highest mean): one row each, best excluded, best - other.

    Rows: ``arch``, ``best``, ``diff`` (best minus arch, mean of per-seed differences), ``low``/``high``
    (Bonferroni-simultaneous ``1 - alpha`` over the K - 1 comparisons), ``p`` (paired t over seeds),
    ``p_holm``, ``distinguishable`` (``p_holm < alpha``). One seed: NaN intervals and p-values, nothing
    distinguishable.
    """
    per_seed = _per_seed_means(scores)
    order = _order({a: float(s.mean()) for a, s in per_seed.items()})
    best, others = order[0], order[1:]
    level = alpha / max(len(others), 1)
    rows = []
    for arch in others:
        diff, low, high, p = _t_interval(per_seed[best] - per_seed[arch], level)
        rows.append({"arch": arch, "best": best, "diff": diff, "low": low, "high": high, "p": p})
    for row, adjusted in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p_holm"] = float(adjusted)
        row["distinguishable"] = bool(np.isfinite(adjusted) and adjusted < alpha)
    return rows


def rank_intervals(scores: Mapping[str, np.ndarray], *, alpha: float = 0.05) -> dict[str, tuple[int, int]]:
    """Simultaneous ``1 - alpha`` confidence sets for every architecture's rank (1 = best), as (low, high).

    From all pairwise Student-t intervals over seeds at Bonferroni level ``alpha / (K(K-1)/2)``: low = 1 + the
    number of architectures whose interval of (theirs - this) lies above 0, high = K - the number whose
    interval lies below 0. One seed (no interval): every rank is possible, (1, K).
    """
    per_seed = _per_seed_means(scores)
    archs = list(per_seed)
    k = len(archs)
    level = alpha / max(k * (k - 1) // 2, 1)
    above = dict.fromkeys(archs, 0)
    below = dict.fromkeys(archs, 0)
    for a, b in itertools.combinations(archs, 2):
        _, low, high, _ = _t_interval(per_seed[a] - per_seed[b], level)
        if low > 0:  # a is better than b: one more above b, one more below a
            above[b] += 1
            below[a] += 1
        elif high < 0:
            above[a] += 1
            below[b] += 1
    return {arch: (1 + above[arch], k - below[arch]) for arch in archs}


def ranking(scores: Mapping[str, np.ndarray], *, alpha: float = 0.05) -> list[dict]:
    """Every architecture, best first, with its rank interval and whether it is in the best set.

    Rows: ``arch``, ``mean``, ``rank`` (by mean), ``rank_low``, ``rank_high`` (:func:`rank_intervals`)
    and ``in_best_set`` (its interval contains rank 1).
    """
    per_seed = _per_seed_means(scores)
    means = {a: float(np.asarray(scores[a], float).mean()) for a in per_seed}
    intervals = rank_intervals(scores, alpha=alpha)
    return [
        {
            "arch": arch,
            "mean": means[arch],
            "rank": position,
            "rank_low": intervals[arch][0],
            "rank_high": intervals[arch][1],
            "in_best_set": intervals[arch][0] == 1,
        }
        for position, arch in enumerate(_order(means), start=1)
    ]


def best_set(scores: Mapping[str, np.ndarray], *, alpha: float = 0.05) -> list[str]:
    """The architectures not distinguishable from the best: those whose rank interval contains 1, best first."""
    return [row["arch"] for row in ranking(scores, alpha=alpha) if row["in_best_set"]]


def performance_profile(scene_scores: Mapping[str, np.ndarray], taus) -> dict[str, np.ndarray]:
    """Dolan & Moré's performance profile, additive: per architecture the share of scenes within tau.

    For each tau, the share of scenes with ``best_s - score_s <= tau`` (``best_s``: the highest score of
    any architecture on scene s).

    ``scene_scores``: architecture -> 1-D scores over the same scenes (e.g. mean per-image IoU per test
    scene). A scene where an architecture has no score (NaN) counts as not within any tau for it.
    """
    if not scene_scores:
        raise ValueError("no architectures to profile")
    arrays = {arch: np.asarray(v, float) for arch, v in scene_scores.items()}
    lengths = {arch: v.shape for arch, v in arrays.items()}
    first_arch, first = next(iter(lengths.items()))
    for arch, shape in lengths.items():
        if len(shape) != 1 or shape != first or not shape[0]:
            raise ValueError(f"scene scores of {arch!r} have shape {shape}; expected {first} like {first_arch!r}")
    stacked = np.vstack(list(arrays.values()))
    best = np.nanmax(stacked, axis=0)
    taus = np.asarray(taus, float)
    gaps = {arch: best - v for arch, v in arrays.items()}
    # NaN gaps compare False: a missing score is never within tau.
    return {arch: (gap[None, :] <= taus[:, None] + 1e-12).mean(axis=1) for arch, gap in gaps.items()}
