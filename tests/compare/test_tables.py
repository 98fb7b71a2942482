"""harness.compare.tables: summary.csv, paired.csv and budget.csv against hand-computed values."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from harness import stats
from harness.compare import tables
from harness.metrics import confusion_stats
from harness.results import PAIRED_COLUMNS


def test_budget_table_layout():
    trials = pd.DataFrame(
        {"arch": ["unet"] * 3 + ["unetpp"] * 2, "val_iou": [0.1, 0.5, 0.9, 0.6, 0.8], "device_hours": 1.0}
    )
    table = tables.budget_table(trials)
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


def test_budget_table_counts_failed_trials_at_the_floor_instead_of_dropping_them():
    # A diverged trial (NaN, or a finite score with stopped_by=diverged) is a draw of the budget that
    # produced nothing: dropping it would give unet E[best of 1] = 0.7, as if it never diverged.
    trials = pd.DataFrame(
        {
            "arch": ["unet"] * 3,
            "val_iou": [0.6, 0.8, np.nan],
            "device_hours": [1.0, 1.0, 0.5],
            "stopped_by": ["completed", "asha", "diverged"],
        }
    )
    unet = tables.budget_table(trials)
    assert unet.expected_best_val_iou.tolist() == pytest.approx(
        [(0.6 + 0.8 + 0) / 3, (0 + 0.6 * 3 + 0.8 * 5) / 9, (0.6 * 7 + 0.8 * 19) / 27]
    )
    assert unet.device_hours.tolist() == pytest.approx([2.5 / 3, 5 / 3, 2.5])  # the failed trial's cost counts
    errored = trials.assign(val_iou=[0.6, 0.8, 0.9], stopped_by=["completed", "asha", "error"])
    assert tables.budget_table(errored).expected_best_val_iou.iloc[0] == pytest.approx((0.6 + 0.8) / 3)
    assert tables.budget_table(errored, floor=0.1).expected_best_val_iou.iloc[0] == pytest.approx(1.5 / 3)


def test_budget_estimator_is_biased_low_near_n_equals_n():
    # What the report warns about: with replacement, E[best of N] < best of the N trials found.
    scores = np.linspace(0.5, 0.9, 8)
    curve = stats.expected_max_curve(scores)
    assert curve[-1] < scores.max() - 0.02


# --- intervals over seeds --------------------------------------------------------------------------------


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
    table = tables.summary_table(results, costs=costs).set_index("arch")
    assert list(table.index) == ["unet", "unetpp"]
    assert table.loc["unet", ["tp", "fn", "fp", "tn"]].tolist() == [255, 45, 20, 280]
    assert table.loc["unet", "iou"] == pytest.approx(255 / (255 + 45 + 20))
    assert table.loc["unet", "accuracy"] == pytest.approx((255 + 280) / 600)
    ious = results[results.arch == "unet"].iou
    assert table.loc["unet", "iou_mean"] == pytest.approx(ious.mean())
    # A Student-t interval over the 3 seeds, not their min-max (what a percentile bootstrap of 3 gives).
    half = 4.302652729911275 * ious.std(ddof=1) / np.sqrt(3)
    assert table.loc["unet", ["iou_ci_low", "iou_ci_high"]].tolist() == pytest.approx(
        [ious.mean() - half, ious.mean() + half]
    )
    assert table.loc["unet", "iou_ci_low"] < ious.min() and table.loc["unet", "iou_ci_high"] > ious.max()
    assert table.loc["unet", "n_trials"] == 8 and np.isnan(table.loc["unetpp", "params"])
    spread = _results({"unet": [(99, 1, 0, 100), (50, 50, 0, 100), (98, 2, 0, 100)]})
    iou = tables.summary_table(spread).iloc[0]
    assert iou.iou_ci_high == 1.0 and iou.iou_ci_low == pytest.approx(stats.t_interval(spread.iou)[1])
    assert table.loc["unet", "train_seconds_mean"] == pytest.approx(101.0)


def _per_image(ious_by_arch, scenes=3):
    rows = []
    for arch, per_seed in ious_by_arch.items():
        for seed, ious in enumerate(per_seed):
            rows += [
                {"arch": arch, "seed": seed, "name": f"img{i}", "scene_id": f"scene{i % scenes}", "iou": v}
                for i, v in enumerate(ious)
            ]
    return pd.DataFrame(rows)


def test_paired_table_identical_architectures_find_no_difference():
    counts = [(90, 10, 5, 95), (80, 20, 10, 90)]
    results = _results({"a": counts, "b": counts})
    ious = np.random.default_rng(0).uniform(0.3, 1.0, (2, 30))
    ious[:, 3] = np.nan  # a cloud-free image: out of the IoU set for every arch and seed alike
    table = tables.paired_table(results, _per_image({"a": ious, "b": ious}), n_boot=500)
    assert list(table.columns) == PAIRED_COLUMNS
    row = table.iloc[0]
    assert (row.arch_a, row.arch_b, row.n_images, row.n_scenes, row.n_seeds) == ("a", "b", 29, 3, 2)
    assert (row.iou_diff_mean, row.iou_diff_ci_low, row.iou_diff_ci_high) == (0.0, 0.0, 0.0)
    # P(A > B) = 0.5 exactly; its interval is the Wilson bound for 2 seeds (p = 0.5, n = 2, z = 1.96).
    assert (row.p_a_better, row.p_a_better_ci_low, row.p_a_better_ci_high) == pytest.approx((0.5, 0.0945312, 0.9054688))
    assert (row.boot_ci_low, row.boot_ci_high, row.detectable_diff) == (0.0, 0.0, 0.0)
    assert (row.image_ci_low, row.image_ci_high, row.image_wilcoxon_p) == (0.0, 0.0, 1.0)
    assert row.seeds_a_higher == 1.0 and row.seed_t_p == 1.0  # two ties count one half each


def test_paired_table_refuses_an_iou_set_chosen_by_the_predictions():
    # The old rule: a cloud-free image is NaN for the model that predicted it clear and 0 for one with a
    # false positive, so each model picked its own images. The set must come from ground truth.
    results = _results({"a": [(90, 10, 5, 95)] * 2, "b": [(70, 30, 20, 80)] * 2})
    ious = np.random.default_rng(1).uniform(0.3, 1.0, (2, 10))
    other = ious.copy()
    ious[0, 3], other[0, 3] = np.nan, 0.0
    with pytest.raises(ValueError, match="per-image IoU set differs"):
        tables.paired_table(results, _per_image({"a": ious, "b": other}), n_boot=200)
    seeds_differ = ious.copy()
    seeds_differ[1, 3] = 0.0  # the same image in for seed 1, out for seed 0
    with pytest.raises(ValueError, match="per-image IoU set differs"):
        tables.paired_table(results, _per_image({"a": seeds_differ, "b": seeds_differ}), n_boot=200)


def test_paired_table_detects_a_shift_at_every_level():
    results = _results({"a": [(90, 10, 5, 95)] * 3, "b": [(70, 30, 20, 80)] * 3})
    rng = np.random.default_rng(2)
    base = rng.uniform(0.4, 0.8, (3, 40))
    per_image = _per_image({"a": base + 0.1 + rng.normal(0, 0.02, base.shape), "b": base})
    row = tables.paired_table(results, per_image, n_boot=1000).iloc[0]
    assert row.iou_diff_mean == pytest.approx(0.1, abs=0.02)
    assert row.iou_diff_ci_low > 0 and row.image_ci_low > 0 and row.image_wilcoxon_p < 0.05
    assert row.seeds_a_higher == 3 and row.p_a_better == 1.0 and row.seed_t_p < 0.05
    assert row.mean_iou_a - row.mean_iou_b == pytest.approx(row.iou_diff_mean)


def test_paired_table_hand_values():
    # 2 seeds x 4 images in 2 scenes. Per-seed means a: 0.6, 0.8; b: 0.7, 0.5.
    a = np.array([[0.5, 0.7, 0.6, 0.6], [0.8, 0.8, 0.9, 0.7]])
    b = np.array([[0.6, 0.8, 0.7, 0.7], [0.5, 0.5, 0.4, 0.6]])
    results = _results({"a": [(90, 10, 5, 95)] * 2, "b": [(70, 30, 20, 80)] * 2})
    per_image = _per_image({"a": a, "b": b}, scenes=2)  # scene0: images 0, 2; scene1: images 1, 3
    row = tables.paired_table(results, per_image, n_boot=500).iloc[0]
    assert (row.mean_iou_a, row.mean_iou_b, row.iou_diff_mean) == pytest.approx((0.7, 0.6, 0.1))
    assert row.seeds_a_higher == 1.0  # seed 1 only
    assert row.seed_t_p == pytest.approx(scipy.stats.ttest_rel([0.6, 0.8], [0.7, 0.5]).pvalue)
    # Scene means (seed x scene): a [[.55, .65], [.85, .75]], b [[.65, .75], [.45, .55]]. Scene 0: .55 beats
    # .45, .85 beats both -> 3/4; scene 1: .65 beats .55, .75 ties .75 and beats .55 -> 2.5/4. Mean 0.6875.
    assert row.p_a_better == pytest.approx(0.6875)
    image_diffs = (a - b).mean(axis=0)  # each image averaged over seeds
    assert row.image_wilcoxon_p == pytest.approx(scipy.stats.wilcoxon(image_diffs).pvalue)


# --- hierarchical bootstrap ------------------------------------------------------------------------------
