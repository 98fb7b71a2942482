"""harness.stats.ranking: hand-computed rankings, Holm, rank intervals, profiles; K = 2 is the headline."""

from __future__ import annotations

import numpy as np
import pytest

from harness.stats.paired import seed_interval
from harness.stats.ranking import (
    best_set,
    compare_with_best,
    holm,
    performance_profile,
    rank_intervals,
    ranking,
)

# Three seeds (rows), two images (columns). Per-seed means: A 0.85, 0.85, 0.85; B 0.70, 0.70, 0.70;
# C 0.84, 0.86, 0.84 (mean 0.8467). A - B is 0.15 on every seed (no spread); A - C is 0.01, -0.01, 0.01:
# mean 0.00333, sd 0.011547, se 0.006667, t = 0.5 on 2 df, p = 2 * (0.5 - 0.5 / (2 * sqrt(2.25))) = 2/3.
# C - B is 0.14, 0.16, 0.14: mean 0.14667, se 0.006667; the 2-df t quantile at 1 - 0.05/3/2 is
# (1 - 0.05/3) * sqrt(2 / (1 - (1 - 0.05/3)**2)) = 7.649, so the interval is 0.14667 ± 0.0510 > 0.
SCORES = {
    "A": np.array([[0.9, 0.8], [0.8, 0.9], [0.85, 0.85]]),
    "B": np.array([[0.7, 0.7], [0.6, 0.8], [0.65, 0.75]]),
    "C": np.array([[0.84, 0.84], [0.86, 0.86], [0.80, 0.88]]),
}


def test_holm_adjusts_step_down_and_monotone():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    out = holm([np.nan, 0.02])
    assert np.isnan(out[0]) and out[1] == pytest.approx(0.02)  # a NaN is not counted as a test


def test_rank_intervals_on_a_hand_computed_example():
    # A and C cannot be told apart, both are above B: A and C rank 1-2, B is 3rd for sure.
    assert rank_intervals(SCORES) == {"A": (1, 2), "B": (3, 3), "C": (1, 2)}
    rows = ranking(SCORES)
    assert [(r["arch"], r["rank"], r["rank_low"], r["rank_high"], r["in_best_set"]) for r in rows] == [
        ("A", 1, 1, 2, True),
        ("C", 2, 1, 2, True),
        ("B", 3, 3, 3, False),
    ]
    assert rows[1]["mean"] == pytest.approx((0.84 + 0.86 + 0.84) / 3)
    assert best_set(SCORES) == ["A", "C"]


def test_compare_with_best_on_a_hand_computed_example():
    rows = {r["arch"]: r for r in compare_with_best(SCORES)}
    assert set(rows) == {"B", "C"} and rows["C"]["best"] == "A"
    c, b = rows["C"], rows["B"]
    assert c["diff"] == pytest.approx(0.01 / 3) and c["p"] == pytest.approx(2 / 3)
    assert b["diff"] == pytest.approx(0.15) and b["p"] == 0.0 and (b["low"], b["high"]) == pytest.approx((0.15, 0.15))
    # Holm over the two: B's p 0 -> 0, C's 2/3 -> max(0, 1 * 2/3).
    assert (b["p_holm"], c["p_holm"]) == (0.0, pytest.approx(2 / 3))
    assert b["distinguishable"] and not c["distinguishable"]
    # Simultaneous over 2 comparisons: C's interval uses the t quantile at 1 - 0.05/2/2 on 2 df.
    half = (1 - 0.025) * np.sqrt(2 / (1 - (1 - 0.025) ** 2)) * 0.011547005 / np.sqrt(3)
    assert (c["low"], c["high"]) == pytest.approx((0.01 / 3 - half, 0.01 / 3 + half), rel=1e-6)


def test_with_two_architectures_compare_with_best_is_the_headline_seed_interval():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.5, 0.9, (5, 40)), rng.uniform(0.5, 0.9, (5, 40))
    (row,) = compare_with_best({"a": a, "b": b})
    best, other = (a, b) if a.mean() >= b.mean() else (b, a)
    headline = seed_interval(best, other)
    assert (row["diff"], row["low"], row["high"]) == pytest.approx(
        (headline["diff"], headline["low"], headline["high"])
    )
    assert row["p_holm"] == row["p"]


def test_one_seed_gives_no_intervals_and_every_rank_possible():
    one = {k: v[:1] for k, v in SCORES.items()}
    assert rank_intervals(one) == {"A": (1, 3), "B": (1, 3), "C": (1, 3)}
    assert all(np.isnan(r["p_holm"]) and not r["distinguishable"] for r in compare_with_best(one))
    assert best_set(one) == ["A", "C", "B"]


def test_scores_that_do_not_pair_are_refused_naming_the_architecture():
    with pytest.raises(ValueError, match="scores of 'B' have shape \\(2, 2\\)"):
        rank_intervals({"A": SCORES["A"], "B": SCORES["B"][:2]})
    with pytest.raises(ValueError, match="no architectures"):
        ranking({})


def test_performance_profile_by_hand():
    # Scene bests 0.9, 0.6, 0.7. Gaps: A 0, 0.1, 0; B 0.1, 0, 0; C 0.3, 0, 0.3.
    scenes = {"A": [0.9, 0.5, 0.7], "B": [0.8, 0.6, 0.7], "C": [0.6, 0.6, 0.4]}
    taus = np.array([0.0, 0.05, 0.1, 0.3])
    profile = performance_profile(scenes, taus)
    np.testing.assert_allclose(profile["A"], [2 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(profile["B"], [2 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(profile["C"], [1 / 3, 1 / 3, 1 / 3, 1])
    with pytest.raises(ValueError, match="scene scores of 'C'"):
        performance_profile({"A": [0.1, 0.2], "C": [0.1]}, taus)


def test_performance_profile_is_non_decreasing_and_reaches_one_at_the_largest_gap():
    rng = np.random.default_rng(0)
    scenes = {f"arch{i}": rng.uniform(0.3, 0.9, 12) for i in range(6)}
    best = np.max(np.vstack(list(scenes.values())), axis=0)
    largest = max(float(np.max(best - v)) for v in scenes.values())
    taus = np.linspace(0, largest, 50)
    for curve in performance_profile(scenes, taus).values():
        assert np.all(np.diff(curve) >= 0) and curve[-1] == 1.0
    assert sum(curve[0] for curve in performance_profile(scenes, taus).values()) == pytest.approx(1.0)


def test_rank_intervals_cover_the_true_ranks_in_a_small_deterministic_simulation():
    # K = 3 with true means 0.80, 0.80, 0.75 (a tie at the top), 5 seeds, seed and image noise as IoU has:
    # the true rank sets are {1, 2}, {1, 2}, {3}; the intervals cover when each contains its whole set
    # (one that orders the tied pair fails). Seeded: the same 300 datasets every run.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "stats" / "rank_coverage.py"
    spec = importlib.util.spec_from_file_location("rank_coverage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    simulate = module.simulate

    result = simulate(means=(0.80, 0.80, 0.75), n_seeds=5, n_images=30, reps=300, seed=0)
    assert result["rank_coverage"] >= 0.9
    assert result["best_in_best_set"] >= 0.9
    assert result["holm_familywise_error"] <= 0.1
