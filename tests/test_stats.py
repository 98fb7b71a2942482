"""Tests of harness.stats: hand-computed values, invariants, and the documented edge cases."""

import warnings

import numpy as np
import pandas as pd
import pytest

from harness import stats
from harness.metrics import confusion_stats

# --- expected maximum vs budget (Dodge et al. 2019) --------------------------------------------------


def test_expected_max_curve_matches_hand_computation():
    # N = 3 sorted scores; P(max_n = v(i)) = (i/3)^n - ((i-1)/3)^n.
    curve = stats.expected_max_curve([0.9, 0.1, 0.5])
    assert curve == pytest.approx([0.5, (0.1 * 1 + 0.5 * 3 + 0.9 * 5) / 9, (0.1 * 1 + 0.5 * 7 + 0.9 * 19) / 27])


def test_expected_max_curve_is_monotone_and_below_the_best_score():
    scores = np.random.default_rng(1).uniform(0.6, 0.9, size=25)
    curve = stats.expected_max_curve(scores, n_max=60)
    assert curve.shape == (60,)
    assert curve[0] == pytest.approx(scores.mean())
    assert np.all(np.diff(curve) >= -1e-12)
    assert curve[24] < scores.max()  # n = N draws with replacement rarely all hit the best trial
    assert curve[-1] <= scores.max() + 1e-12


def test_expected_max_curve_agrees_with_simulation_and_std():
    scores = np.array([0.2, 0.4, 0.45, 0.7, 0.71])
    mean, sd = stats.expected_max_curve(scores, n_max=4, return_std=True)
    draws = np.random.default_rng(0).choice(scores, size=(200_000, 4)).max(axis=1)
    assert mean[3] == pytest.approx(draws.mean(), abs=2e-3)
    assert sd[3] == pytest.approx(draws.std(), abs=2e-3)
    assert sd[0] == pytest.approx(scores.std())  # one draw: the population spread of the trials


def test_expected_max_curve_ignores_nan_and_rejects_empty():
    assert stats.expected_max_curve([0.3, np.nan, 0.5])[0] == pytest.approx(0.4)
    with pytest.raises(ValueError):
        stats.expected_max_curve([np.nan])


def test_expected_cost_curve_is_n_times_mean_cost():
    assert stats.expected_cost_curve([1.0, 2.0, 3.0]) == pytest.approx([2.0, 4.0, 6.0])
    assert stats.expected_cost_curve([0.5], n_max=3) == pytest.approx([0.5, 1.0, 1.5])


def test_budget_table_layout():
    trials = pd.DataFrame(
        {"arch": ["unet"] * 3 + ["unetpp"] * 2, "val_iou": [0.1, 0.5, 0.9, 0.6, 0.8], "device_hours": 1.0}
    )
    table = stats.budget_table(trials)
    assert list(table.columns) == [
        "arch",
        "n_trials",
        "expected_best_val_iou",
        "expected_best_val_iou_sd",
        "device_hours",
    ]
    unet = table[table.arch == "unet"]
    assert unet.n_trials.tolist() == [1, 2, 3]
    assert unet.expected_best_val_iou.iloc[1] == pytest.approx(6.1 / 9)
    assert table[table.arch == "unetpp"].device_hours.tolist() == [1.0, 2.0]


# --- bootstrap intervals ------------------------------------------------------------------------------


def test_bootstrap_ci_contains_estimate_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.8, 0.05, 10), rng.normal(0.8, 0.05, 1000)
    est, low, high = stats.bootstrap_ci(small)
    assert est == pytest.approx(small.mean())
    assert low < est < high
    _, low_l, high_l = stats.bootstrap_ci(large, n_boot=2000)
    assert high_l - low_l < (high - low) / 3  # width ~ 1/sqrt(n)


def test_bootstrap_ci_is_reproducible_and_seeded():
    values = np.random.default_rng(3).uniform(size=30)
    assert stats.bootstrap_ci(values, seed=7) == stats.bootstrap_ci(values, seed=7)
    assert stats.bootstrap_ci(values, seed=7) != stats.bootstrap_ci(values, seed=8)


def test_bootstrap_ci_other_statistics():
    values = np.arange(20.0)
    est, low, high = stats.bootstrap_ci(values, stat=np.median, n_boot=500)
    assert est == 9.5 and low < est < high
    # A statistic without an ``axis`` argument takes the per-replicate path and gives the same answer.
    assert stats.bootstrap_ci(values, stat=lambda v: float(np.median(v)), n_boot=500) == (est, low, high)


def test_bootstrap_ci_degenerate_inputs_do_not_crash():
    est, low, high = stats.bootstrap_ci([0.7])
    assert est == 0.7 and np.isnan(low) and np.isnan(high)
    assert all(np.isnan(stats.bootstrap_ci([])))
    assert stats.bootstrap_ci([0.5, np.nan, 0.7])[0] == pytest.approx(0.6)  # NaN dropped


# --- paired comparisons ---------------------------------------------------------------------------------


def test_identical_inputs_show_no_difference_without_warnings():
    a = np.random.default_rng(0).uniform(0.5, 1.0, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stats.paired_bootstrap_ci(a, a.copy()) == (0.0, 0.0, 0.0)
        assert stats.wilcoxon_signed_rank(a, a.copy()) == 1.0
        assert stats.prob_a_beats_b(a, a.copy()) == 0.5


def test_clearly_shifted_pair_is_significant():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.5, 0.9, 40)
    a = b + 0.05 + rng.normal(0, 0.01, 40)
    diff, low, high = stats.paired_bootstrap_ci(a, b)
    assert diff == pytest.approx(np.mean(a - b))
    assert 0 < low < diff < high
    assert stats.wilcoxon_signed_rank(a, b) < 0.05
    assert stats.wilcoxon_signed_rank(b, a) < 0.05  # two-sided


def test_paired_inputs_drop_nan_pairs_and_check_lengths():
    a, b = np.array([0.5, np.nan, 0.7]), np.array([0.4, 0.9, np.nan])
    assert stats.paired_bootstrap_ci(a, b)[0] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        stats.paired_bootstrap_ci([1.0, 2.0], [1.0])


def test_prob_a_beats_b_hand_values():
    assert stats.prob_a_beats_b([0.9, 0.8, 0.7], [0.8, 0.8, 0.9]) == pytest.approx(0.5)
    assert stats.prob_a_beats_b([0.9, 0.9, 0.9, 0.1], [0.1, 0.1, 0.1, 0.1]) == pytest.approx(0.875)
    assert stats.prob_a_beats_b([2, 3], [1], paired=False) == 1.0
    assert stats.prob_a_beats_b([1, 2], [1.5, 2], paired=False) == pytest.approx((0 + 0 + 1 + 0.5) / 4)
    assert np.isnan(stats.prob_a_beats_b([], []))


# --- table builders -----------------------------------------------------------------------------------


def _results(arch_counts):
    rows = []
    for arch, per_seed in arch_counts.items():
        for seed, (tp, fn, fp, tn) in enumerate(per_seed):
            row = {"arch": arch, "seed": seed, **confusion_stats(tp, fn, fp, tn)}
            row.update(train_seconds=100.0 + seed, train_images_per_second=50.0)
            rows.append(row)
    return pd.DataFrame(rows)


def test_summary_table_pools_counts_and_summarises_seeds():
    results = _results(
        {
            "unet": [(90, 10, 5, 95), (80, 20, 10, 90), (85, 15, 5, 95)],
            "unetpp": [(70, 30, 20, 80), (75, 25, 15, 85), (72, 28, 18, 82)],
        }
    )
    costs = {"unet": {"params": 7.76e6, "flops_per_patch": 1e11, "sweep_device_hours": 2.0, "n_trials": 8}}
    table = stats.summary_table(results, costs=costs, n_boot=500).set_index("arch")
    assert list(table.index) == ["unet", "unetpp"]
    assert table.loc["unet", ["tp", "fn", "fp", "tn"]].tolist() == [255, 45, 20, 280]
    assert table.loc["unet", "iou"] == pytest.approx(255 / (255 + 45 + 20))
    assert table.loc["unet", "accuracy"] == pytest.approx((255 + 280) / 600)
    ious = results[results.arch == "unet"].iou
    assert table.loc["unet", "iou_mean"] == pytest.approx(ious.mean())
    assert table.loc["unet", "iou_ci_low"] <= ious.mean() <= table.loc["unet", "iou_ci_high"]
    assert table.loc["unet", "n_trials"] == 8 and np.isnan(table.loc["unetpp", "params"])
    assert table.loc["unet", "train_seconds_mean"] == pytest.approx(101.0)


def _per_image(ious_by_arch):
    rows = []
    for arch, per_seed in ious_by_arch.items():
        for seed, ious in enumerate(per_seed):
            rows += [{"arch": arch, "seed": seed, "name": f"img{i}", "iou": v} for i, v in enumerate(ious)]
    return pd.DataFrame(rows)


def test_paired_table_identical_architectures_find_no_difference():
    counts = [(90, 10, 5, 95), (80, 20, 10, 90)]
    results = _results({"a": counts, "b": counts})
    ious = np.random.default_rng(0).uniform(0.3, 1.0, (2, 30))
    ious[0, 3] = np.nan  # an image with an undefined IoU in one seed still counts via the other seed
    table = stats.paired_table(results, _per_image({"a": ious, "b": ious}), n_boot=500)
    assert list(table.columns) == stats.PAIRED_COLUMNS
    row = table.iloc[0]
    assert (row.arch_a, row.arch_b, row.n_images, row.n_seeds) == ("a", "b", 30, 2)
    assert (row.iou_diff_mean, row.iou_diff_ci_low, row.iou_diff_ci_high) == (0.0, 0.0, 0.0)
    assert row.wilcoxon_p == 1.0 and row.p_a_beats_b == 0.5


def test_paired_table_detects_a_shift():
    results = _results({"a": [(90, 10, 5, 95)] * 3, "b": [(70, 30, 20, 80)] * 3})
    rng = np.random.default_rng(2)
    base = rng.uniform(0.4, 0.8, (3, 40))
    per_image = _per_image({"a": base + 0.1 + rng.normal(0, 0.02, base.shape), "b": base})
    row = stats.paired_table(results, per_image, n_boot=1000).iloc[0]
    assert row.iou_diff_mean == pytest.approx(0.1, abs=0.02)
    assert row.iou_diff_ci_low > 0 and row.wilcoxon_p < 0.05
    assert row.p_a_beats_b == 1.0
    assert row.mean_iou_a - row.mean_iou_b == pytest.approx(row.iou_diff_mean)
