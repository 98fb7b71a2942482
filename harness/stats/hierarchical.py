"""The paired comparison's headline (:func:`hierarchical_paired_bootstrap`) and its hierarchical bootstrap.

:func:`hierarchical_paired_bootstrap` returns the report's headline: the difference ``a - b`` with the
Student-t interval over seeds and P(A > B) with its bound (:mod:`harness.stats.paired`, estimand "this
test set, new training seeds"), the "new scenes" interval, the smallest detectable differences, and,
beside them, the spread of a hierarchical bootstrap (Agarwal et al. 2021, the ``rliable`` library). One
bootstrap replicate

1. draws the seeds with replacement (the same draw for both architectures: the seeds are paired),
2. draws the scenes with replacement (the test set is one sample of scenes, shared by every seed),
3. draws images with replacement within each drawn copy of a scene (as many as the scene has),

and recomputes the mean per-image difference ``a - b`` and P(A > B), rliable's probability of
improvement: for each scene, the probability that a seed of ``a`` scores higher on that scene (its mean
per-image score there) than a seed of ``b``, over all ``n_seeds x n_seeds`` combinations (ties one
half), then averaged over scenes; a scene drawn twice counts as two scenes, each copy with its own image
draw. The bootstrap's percentile spread is *not* the headline interval: with 3-5 seeds it sees few
distinct seed values and covered only 75-92 % in ``benchmarks/stats/coverage.py``; it is kept for
comparison with rliable-style reports.

Replicates are built from multinomial weights rather than index arrays (``n`` images drawn with
replacement from a scene of ``n`` is one multinomial draw). Nothing here imports torch, ray or mlflow;
randomness comes only from ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.stats.arrays import CHUNK_ELEMENTS, win_tie_loss
from harness.stats.paired import (
    detectable_difference,
    improvement_interval,
    new_scenes_interval,
    scene_groups,
    seed_interval,
)


def _scene_means(scores: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """(S, K) mean score of each seed on each scene."""
    return np.stack([scores[:, idx].mean(axis=1) for idx in groups], axis=1)


def probability_of_improvement(a: np.ndarray, b: np.ndarray, strata: Sequence) -> float:
    """P(A > B): per scene, the share of (seed of a, seed of b) pairs where a's scene score is higher.

    ``a`` and ``b`` are (n_seeds, n_images) per-image scores; a seed's score on a scene is its mean over
    the scene's images; ties count one half; the result is the mean over scenes (rliable's probability
    of improvement with scenes as tasks). 0.5 when a and b are identical.
    """
    a, b, groups = _check(a, b, strata)
    xa, xb = _scene_means(a, groups), _scene_means(b, groups)
    return float(win_tie_loss(xa[:, None, :] - xb[None, :, :]).mean())


def _check(a, b, strata) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must be (n_seeds, n_images) arrays of one shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("a and b hold no scores")
    if np.isnan(a).any() or np.isnan(b).any():
        # The image set must be fixed before scoring (chosen from ground truth); NaNs would let each
        # model and seed drop its own images.
        raise ValueError("a and b must not hold NaN: choose the image set from ground truth first")
    strata = np.asarray(strata)
    if strata.shape != (a.shape[1],):
        raise ValueError(f"strata must give one scene per image ({a.shape[1]}), got shape {strata.shape}")
    return a, b, scene_groups(strata)


def bootstrap_replicates(
    a: np.ndarray, b: np.ndarray, groups: list[np.ndarray], *, n_boot: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n_boot`` hierarchical replicates (module docstring) of the mean difference and of P(A > B)."""
    n_seeds, n_images = a.shape
    n_scenes = len(groups)
    d = a - b
    per_chunk = max(1, CHUNK_ELEMENTS // max(n_images, n_seeds * n_seeds * n_scenes))
    diffs, probs = [], []
    for start in range(0, n_boot, per_chunk):
        rows = min(per_chunk, n_boot - start)
        seed_w = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=rows)  # (B, S)
        scene_c = rng.multinomial(n_scenes, np.full(n_scenes, 1 / n_scenes), size=rows)  # (B, K)
        pair_w = (seed_w[:, :, None] * seed_w[:, None, :]) / (n_seeds * n_seeds)  # (B, S, S), rows sum to 1
        diff_sum = np.zeros((rows, n_seeds))
        drawn = np.zeros(rows)
        wins = np.zeros(rows)
        for k, idx in enumerate(groups):
            size = idx.size
            # Copy j of scene k exists in the replicates that drew scene k more than j times; each copy
            # draws its own `size` images and counts as one scene of the replicate.
            for copy in range(int(scene_c[:, k].max())):
                present = scene_c[:, k] > copy
                v = rng.multinomial(size, np.full(size, 1 / size), size=rows) * present[:, None]  # (B, n_k)
                xa, xb = (v @ a[:, idx].T) / size, (v @ b[:, idx].T) / size  # (B, S) scene means
                diff_sum += v @ d[:, idx].T
                drawn += present * size
                scene_wins = np.einsum("bst,bst->b", pair_w, win_tie_loss(xa[:, :, None] - xb[:, None, :]))
                wins += present * scene_wins
        diffs.append((seed_w * diff_sum).sum(axis=1) / (n_seeds * drawn))
        probs.append(wins / n_scenes)
    return np.concatenate(diffs), np.concatenate(probs)


def hierarchical_paired_bootstrap(
    a,
    b,
    strata: Sequence,
    *,
    n_boot: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """The paired comparison of ``a`` and ``b``: headline intervals and the hierarchical bootstrap's spread.

    Args:
        a: (n_seeds, n_images) per-image scores of architecture a; row s is seed s, column i test
            image i. No NaN: the image set is fixed beforehand.
        b: the same for architecture b, paired with ``a`` by row (seed) and column (image).
        strata: the scene of each image (any hashable labels), length n_images.
        n_boot: bootstrap replicates of the spread.
        alpha: 1 - the intervals' coverage (0.05: 95 % intervals).
        seed: seed of the bootstrap's random generator (same inputs and seed, same result).

    Returns:
        The headline, for "this test set, new training seeds" (:mod:`harness.stats.paired`):
        ``diff`` (mean of ``a - b`` over seeds and images) with ``diff_ci_low``/``diff_ci_high`` (Student
        t over the per-seed mean differences), ``diff_se`` and ``detectable_diff`` (the smallest
        difference detectable with power 0.8); ``p_improve`` (:func:`probability_of_improvement`) with
        ``p_improve_ci_low``/``_high`` (Wilson bound with n = seeds). For "new scenes":
        ``new_scenes_ci_low``/``_high`` and ``new_scenes_detectable_diff``. The hierarchical bootstrap's
        percentile spread: ``boot_diff_low``/``_high``, ``boot_p_improve_low``/``_high``. And
        ``n_seeds``, ``n_scenes``, ``n_images``. One seed: NaN intervals (no seed variation is seen).
        Identical ``a`` and ``b`` give a difference of exactly 0 with interval [0, 0] and P(A > B) = 0.5.
    """
    a, b, groups = _check(a, b, strata)
    n_seeds, n_images = a.shape
    seeds = seed_interval(a, b, alpha=alpha)
    scenes = new_scenes_interval(a, b, groups, alpha=alpha)
    p = probability_of_improvement(a, b, strata)
    p_low, p_high = improvement_interval(p, n_seeds, alpha=alpha)
    diffs, probs = bootstrap_replicates(a, b, groups, n_boot=n_boot, rng=np.random.default_rng(seed))
    if not np.any(a - b):
        diffs[:] = 0.0  # identical inputs: exactly zero, not rounding noise around it
    q = [alpha / 2, 1 - alpha / 2]
    boot_low, boot_high = np.quantile(diffs, q)
    boot_p_low, boot_p_high = np.quantile(probs, q)
    return {
        "diff": float((a - b).mean()),
        "diff_ci_low": seeds["low"],
        "diff_ci_high": seeds["high"],
        "diff_se": seeds["se"],
        "detectable_diff": detectable_difference(seeds["se"], seeds["df"], alpha=alpha),
        "p_improve": p,
        "p_improve_ci_low": p_low,
        "p_improve_ci_high": p_high,
        "new_scenes_ci_low": scenes["low"],
        "new_scenes_ci_high": scenes["high"],
        "new_scenes_detectable_diff": detectable_difference(scenes["se"], scenes["df"], alpha=alpha),
        "boot_diff_low": float(boot_low),
        "boot_diff_high": float(boot_high),
        "boot_p_improve_low": float(boot_p_low),
        "boot_p_improve_high": float(boot_p_high),
        "n_seeds": n_seeds,
        "n_scenes": len(groups),
        "n_images": n_images,
    }
