"""The headline intervals (harness.stats.paired): hand values, and coverage where the old interval failed."""

import numpy as np
import pytest
import scipy.stats

from harness import stats
from harness.stats import paired


def test_seed_interval_is_the_t_interval_over_per_seed_differences():
    # Per-seed differences 0.01, 0.03, 0.02: mean 0.02, sd 0.01, se 0.01 / sqrt(3), t(0.975, 2) = 4.302653.
    a = np.array([[0.51, 0.51], [0.53, 0.53], [0.52, 0.52]])
    b = np.full((3, 2), 0.5)
    s = paired.seed_interval(a, b)
    half = 4.302653 * 0.01 / np.sqrt(3)
    assert s["diff"] == pytest.approx(0.02)
    assert (s["low"], s["high"]) == pytest.approx((0.02 - half, 0.02 + half), abs=1e-6)
    assert (s["se"], s["df"]) == pytest.approx((0.01 / np.sqrt(3), 2.0))
    one = paired.seed_interval(a[:1], b[:1])
    assert one["diff"] == pytest.approx(0.01) and np.isnan(one["low"]) and np.isnan(one["high"])


def test_improvement_interval_is_the_wilson_interval_with_n_seeds():
    # p = 0.5, n = 4, z = 1.959964: centre 0.980182, radius 0.686052, scale 1.960365 -> [0.150039, 0.849961].
    assert paired.improvement_interval(0.5, 4) == pytest.approx((0.150039, 0.849961), abs=1e-6)
    # p = 1 from 3 seeds is not certainty: lower bound 1.000001 / 2.280486 = 0.43850.
    low, high = paired.improvement_interval(1.0, 3)
    assert (low, high) == pytest.approx((0.43850, 1.0), abs=1e-5)
    assert all(np.isnan(paired.improvement_interval(0.7, 1)))


def test_new_scenes_interval_hand_value_on_a_two_by_two_design():
    # Seed x scene differences D = [[1, 3], [2, 6]], one image per scene (weights 1/2): per-seed means
    # R = [2, 4] (var 2, / S = 1); scene means [1.5, 4.5] (var 4.5); residuals +-0.5, mean square 1;
    # scene variance 4.5 - 1 / 2 = 4; variance 1 + (1/4 + 1/4) * 4 = 3; df = min(2, 2) - 1 = 1.
    a = np.array([[1.0, 3.0], [2.0, 6.0]])
    s = paired.new_scenes_interval(a, np.zeros_like(a), paired.scene_groups([0, 1]))
    half = scipy.stats.t.ppf(0.975, 1) * np.sqrt(3)
    assert s["diff"] == pytest.approx(3.0)
    assert (s["low"], s["high"], s["se"], s["df"]) == pytest.approx((3 - half, 3 + half, np.sqrt(3), 1.0))
    single_scene = paired.new_scenes_interval(a[:, :1], np.zeros((2, 1)), paired.scene_groups([0]))
    assert np.isnan(single_scene["low"])


def test_detectable_difference():
    # Large df: (1.959964 + 0.841621) * se; 2 df: (4.302653 + 1.060660) * se.
    assert paired.detectable_difference(1.0, 1e9) == pytest.approx(2.801585, abs=1e-5)
    assert paired.detectable_difference(0.01, 2) == pytest.approx(0.05363313, abs=1e-7)
    assert np.isnan(paired.detectable_difference(float("nan"), 2))


def _seed_dominated(rng, n_seeds, n_scenes, delta):
    """A final comparison whose spread is mostly the training seed (the case the old interval missed)."""
    sizes = rng.integers(8, 25, n_scenes)
    strata = np.repeat(np.arange(n_scenes), sizes)
    shared = 0.7 + rng.normal(0, 0.05, n_scenes)[strata] + rng.normal(0, 0.08, strata.size)
    out = []
    for shift in (delta, 0.0):
        seed = rng.normal(0, 0.02, (n_seeds, 1))
        out.append(shared + shift + seed + rng.normal(0, 0.03, (n_seeds, strata.size)))
    return out[0], out[1], strata


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_headline_interval_covers_at_few_seeds(n_seeds):
    # 400 simulated comparisons with no true difference: the old percentile bootstrap (d8953c8) covered
    # 0 here in 0.77-0.86 of them (benchmarks/stats/RESULTS.md); the t interval over seeds covers ~0.95.
    # The generator is seeded, so the count is fixed: this cannot flake.
    rng = np.random.default_rng(18)
    covered_diff = covered_p = 0
    for i in range(400):
        a, b, strata = _seed_dominated(rng, n_seeds, 10, 0.0)
        h = stats.hierarchical_paired_bootstrap(a, b, strata, n_boot=50, seed=i)
        covered_diff += h["diff_ci_low"] <= 0 <= h["diff_ci_high"]
        covered_p += h["p_improve_ci_low"] <= 0.5 <= h["p_improve_ci_high"]
    assert covered_diff / 400 >= 0.93
    assert covered_p / 400 >= 0.93


def test_headline_interval_excludes_zero_for_a_clear_difference():
    rng = np.random.default_rng(3)
    a, b, strata = _seed_dominated(rng, 5, 10, 0.2)
    h = stats.hierarchical_paired_bootstrap(a, b, strata, n_boot=200)
    assert h["diff_ci_low"] > 0 and h["p_improve"] == 1.0 and h["p_improve_ci_low"] > 0.5
    assert 0 < h["detectable_diff"] < 0.2
