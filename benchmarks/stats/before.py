"""Hierarchical paired bootstrap: seeds as the unit, scenes as strata, images within scenes.

A final comparison scores each architecture's retrains (one per training seed) on the same test
images, which come from a handful of scenes. The training seed is a source of variance, and patches of
one scene are correlated, so treating every image as an independent draw (an image-level bootstrap or
Wilcoxon test) overstates the evidence. Following Agarwal et al. 2021 ("Deep RL at the edge of the
statistical precipice", the ``rliable`` library), one bootstrap replicate here

1. draws the seeds with replacement (the same draw for both architectures: the seeds are paired),
2. draws the scenes with replacement (the test set is one sample of scenes, shared by every seed),
3. draws images with replacement within each drawn scene (as many as the scene has),

and recomputes two statistics on the replicate:

* the mean per-image difference ``a - b`` (image-weighted, averaged over the drawn seeds), and
* P(A > B), rliable's probability of improvement: for each scene, the probability that a seed of ``a``
  scores higher on that scene (its mean per-image score there) than a seed of ``b``, over all
  ``n_seeds x n_seeds`` combinations (ties one half), then averaged over scenes.

Replicates are built from multinomial weights rather than index arrays: drawing a scene ``c`` times and
then ``n`` images of it each time is one multinomial draw of ``c * n`` images from that scene.
Nothing here imports torch, ray or mlflow; randomness comes only from ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.stats.arrays import CHUNK_ELEMENTS, win_tie_loss


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
    _, inverse = np.unique(strata, return_inverse=True)
    groups = [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]
    return a, b, groups


def hierarchical_paired_bootstrap(
    a,
    b,
    strata: Sequence,
    *,
    n_boot: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Hierarchical bootstrap of the paired difference ``a - b`` and of P(A > B) (module docstring).

    Args:
        a: (n_seeds, n_images) per-image scores of architecture a; row s is seed s, column i test
            image i. No NaN: the image set is fixed beforehand.
        b: the same for architecture b, paired with ``a`` by row (seed) and column (image).
        strata: the scene of each image (any hashable labels), length n_images.
        n_boot: bootstrap replicates.
        alpha: 1 - the interval's coverage (0.05: 95 % percentile intervals).
        seed: seed of the bootstrap's random generator (same inputs and seed, same result).

    Returns:
        ``diff`` (mean of ``a - b`` over seeds and images) with ``diff_ci_low``/``diff_ci_high``;
        ``p_improve`` (:func:`probability_of_improvement`) with ``p_improve_ci_low``/``_high``;
        ``n_seeds``, ``n_scenes``, ``n_images``. Identical ``a`` and ``b`` give a difference of exactly
        0 with interval [0, 0] and P(A > B) = 0.5 with interval [0.5, 0.5].
    """
    a, b, groups = _check(a, b, strata)
    n_seeds, n_images = a.shape
    n_scenes = len(groups)
    d = a - b
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK_ELEMENTS // max(n_images, n_seeds * n_seeds * n_scenes))
    diffs, probs = [], []
    for start in range(0, n_boot, per_chunk):
        rows = min(per_chunk, n_boot - start)
        seed_w = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=rows)  # (B, S)
        scene_c = rng.multinomial(n_scenes, np.full(n_scenes, 1 / n_scenes), size=rows)  # (B, K)
        diff_sum = np.zeros((rows, n_seeds))
        drawn = np.zeros(rows)
        xa, xb = np.zeros((rows, n_seeds, n_scenes)), np.zeros((rows, n_seeds, n_scenes))
        for k, idx in enumerate(groups):
            size = idx.size
            # c draws of scene k, each of `size` images with replacement = one multinomial of c * size.
            v = rng.multinomial(scene_c[:, k] * size, np.full(size, 1 / size))  # (B, n_k)
            weight = np.maximum(scene_c[:, k] * size, 1)[:, None]  # avoid 0/0 for scenes not drawn
            xa[:, :, k] = (v @ a[:, idx].T) / weight
            xb[:, :, k] = (v @ b[:, idx].T) / weight
            diff_sum += v @ d[:, idx].T
            drawn += scene_c[:, k] * size
        diffs.append((seed_w * diff_sum).sum(axis=1) / (n_seeds * drawn))
        # P(A > B) of the replicate: seed pairs weighted by their draw counts, scenes by theirs.
        wins = win_tie_loss(xa[:, :, None, :] - xb[:, None, :, :])  # (B, S, S, K)
        pair_w = seed_w[:, :, None] * seed_w[:, None, :]
        per_scene = np.einsum("bst,bstk->bk", pair_w, wins) / (n_seeds * n_seeds)
        probs.append((per_scene * scene_c).sum(axis=1) / n_scenes)
    diffs, probs = np.concatenate(diffs), np.concatenate(probs)
    if not np.any(d):
        diffs[:] = 0.0  # identical inputs: exactly zero, not rounding noise around it
    q = [alpha / 2, 1 - alpha / 2]
    diff_low, diff_high = np.quantile(diffs, q)
    p_low, p_high = np.quantile(probs, q)
    return {
        "diff": float(d.mean()),
        "diff_ci_low": float(diff_low),
        "diff_ci_high": float(diff_high),
        "p_improve": probability_of_improvement(a, b, strata),
        "p_improve_ci_low": float(p_low),
        "p_improve_ci_high": float(p_high),
        "n_seeds": n_seeds,
        "n_scenes": n_scenes,
        "n_images": n_images,
    }
