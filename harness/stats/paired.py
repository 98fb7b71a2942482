"""The headline intervals of a paired final comparison, each with the estimand it covers.

A final comparison scores each architecture's retrains (one per training seed, paired across
architectures) on the same test images, which come from a handful of scenes. Two questions can be
asked of it, and they have different intervals:

* **This test set, new training seeds** (:data:`ESTIMAND_SEEDS`, the headline): what would retraining
  both architectures on new seeds and rescoring *these* test images give on average? The seed is the
  unit of replication; images and scenes are fixed. :func:`seed_interval` is the Student-t interval
  over the per-seed mean differences (S - 1 degrees of freedom); :func:`improvement_interval` bounds
  P(A > B) with the Mann-Whitney variance bound. ``benchmarks/stats/coverage.py`` measured them to
  cover 0.941-0.964 and 0.989-1.000 at 3, 5 and 10 seeds and 3-20 scenes, where the percentile hierarchical
  bootstrap the report used before covered 75-92 %.
* **New scenes** (:data:`ESTIMAND_SCENES`): the difference on the population of scenes the test scenes
  were drawn from. Seeds and scenes are crossed random factors; :func:`new_scenes_interval` is the
  two-way random-effects interval with ``min(S, K) - 1`` degrees of freedom. Below 10 test scenes
  (``harness.results.MIN_SCENES_FOR_NEW_SCENES``) the between-scene variance is estimated from too few
  values to mean much, and the report says that generalisation to new scenes is not estimated.

:func:`detectable_difference` turns an interval's standard error into the smallest difference the
design could detect (two-sided test at ``alpha``, power 0.8), so that "no difference is established"
reads with "differences below X could not be seen". Nothing here imports torch, ray or mlflow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.stats

ESTIMAND_SEEDS = "this test set, new training seeds"
ESTIMAND_SCENES = "new scenes"
#: Power of :func:`detectable_difference`.
POWER = 0.8

_NAN = float("nan")


def scene_groups(strata: Sequence) -> list[np.ndarray]:
    """Indices of the images of each scene, scenes in sorted label order."""
    _, inverse = np.unique(np.asarray(strata), return_inverse=True)
    return [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]


def seed_interval(a: np.ndarray, b: np.ndarray, *, alpha: float = 0.05) -> dict[str, float]:
    """Student-t interval of the mean difference ``a - b`` for :data:`ESTIMAND_SEEDS`.

    ``a``, ``b``: (n_seeds, n_images), paired by row (seed) and column (image). Each seed's difference
    is its mean over the images; the interval is ``mean ± t(1 - alpha/2, S - 1) * sd / sqrt(S)`` over
    those S values. Returns ``diff``, ``low``, ``high``, ``se`` and ``df``; one seed gives NaN bounds
    (no seed-to-seed variation is observed), equal per-seed differences a zero-width interval.
    """
    per_seed = (np.asarray(a, float) - np.asarray(b, float)).mean(axis=1)
    diff, n = float(per_seed.mean()), per_seed.size
    if n < 2:
        return {"diff": diff, "low": _NAN, "high": _NAN, "se": _NAN, "df": _NAN}
    se = float(per_seed.std(ddof=1) / np.sqrt(n))
    half = float(scipy.stats.t.ppf(1 - alpha / 2, n - 1)) * se
    return {"diff": diff, "low": diff - half, "high": diff + half, "se": se, "df": float(n - 1)}


def improvement_interval(p: float, n_seeds: int, *, alpha: float = 0.05) -> tuple[float, float]:
    """Interval of P(A > B) for :data:`ESTIMAND_SEEDS`: a Wilson score interval with n = ``n_seeds``.

    P(A > B) per scene is a Mann-Whitney probability over the seeds of a and b, whose variance is at most
    ``P (1 - P) / min(m, n)`` (Birnbaum & Klose 1957), here ``P (1 - P) / S``; averaging over scenes
    cannot raise it (the mean of the per-scene variances bounds the variance of their mean, and
    ``P (1 - P)`` is concave). Inverting ``|p - P| <= z sqrt(P (1 - P) / S)`` for P is the Wilson score
    interval. It is conservative (coverage 0.99-1.00 in the coverage benchmark) because seeds are few;
    the bootstrap and jackknife intervals tried beside it covered 0.71-0.95. Fewer than two seeds: NaN.
    """
    if n_seeds < 2 or not np.isfinite(p):
        return (_NAN, _NAN)
    z = float(scipy.stats.norm.ppf(1 - alpha / 2))
    centre = p + z * z / (2 * n_seeds)
    radius = z * np.sqrt(p * (1 - p) / n_seeds + z * z / (4 * n_seeds * n_seeds))
    scale = 1 + z * z / n_seeds
    return (float(max(0.0, (centre - radius) / scale)), float(min(1.0, (centre + radius) / scale)))


def new_scenes_interval(
    a: np.ndarray, b: np.ndarray, groups: Sequence[np.ndarray], *, alpha: float = 0.05
) -> dict[str, float]:
    """Interval of the mean difference ``a - b`` for :data:`ESTIMAND_SCENES` (seeds x scenes random).

    With ``D[s, k]`` seed s's mean difference on scene k and ``w_k`` scene k's share of the images, the
    estimate ``sum_k w_k mean_s D[s, k]`` (the image-weighted mean, as the headline) has variance
    ``var_seed / S + sum_k w_k^2 var_scene``. ``var(R) / S``, with ``R_s = sum_k w_k D[s, k]``, estimates
    the first term (with the seed x scene residual it carries); the scene term is the spread of the
    scene means over seeds less the residual mean square over S (set to 0 when negative). The t quantile
    uses ``min(S, K) - 1`` degrees of freedom, the smaller of the two factors' (Satterthwaite's
    approximation undercovered to 0.93 in the coverage benchmark). Returns ``diff``, ``low``, ``high``,
    ``se``, ``df``; NaN bounds with fewer than two seeds or two scenes.
    """
    d = np.asarray(a, float) - np.asarray(b, float)
    sizes = np.array([g.size for g in groups], dtype=float)
    weights = sizes / sizes.sum()
    scene_diff = np.stack([d[:, g].mean(axis=1) for g in groups], axis=1)  # (S, K)
    per_seed = scene_diff @ weights
    n_seeds, n_scenes = scene_diff.shape
    diff = float(per_seed.mean())
    if n_seeds < 2 or n_scenes < 2:
        return {"diff": diff, "low": _NAN, "high": _NAN, "se": _NAN, "df": _NAN}
    residual = (
        scene_diff - scene_diff.mean(axis=1, keepdims=True) - scene_diff.mean(axis=0, keepdims=True) + scene_diff.mean()
    )
    residual_ms = float((residual**2).sum() / ((n_seeds - 1) * (n_scenes - 1)))
    scene_var = max(0.0, float(scene_diff.mean(axis=0).var(ddof=1)) - residual_ms / n_seeds)
    variance = float(per_seed.var(ddof=1)) / n_seeds + float((weights**2).sum()) * scene_var
    se = float(np.sqrt(variance))
    df = float(min(n_seeds, n_scenes) - 1)
    half = float(scipy.stats.t.ppf(1 - alpha / 2, df)) * se
    return {"diff": diff, "low": diff - half, "high": diff + half, "se": se, "df": df}


def detectable_difference(se: float, df: float, *, alpha: float = 0.05, power: float = POWER) -> float:
    """Smallest true difference a two-sided t-test at ``alpha`` detects with probability ``power``.

    ``(t(1 - alpha/2, df) + t(power, df)) * se``, from the observed standard error: with 3 seeds about
    5.4 standard errors, with 10 about 3.1. NaN when ``se`` or ``df`` is undefined.
    """
    if not (np.isfinite(se) and np.isfinite(df) and df > 0):
        return _NAN
    return float((scipy.stats.t.ppf(1 - alpha / 2, df) + scipy.stats.t.ppf(power, df)) * se)
