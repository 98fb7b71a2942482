"""harness.audit.ranks: Spearman with a bootstrap interval, ASHA's rungs, the protocol audit on hand-built curves."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from harness.audit.ranks import (
    MIN_TRIALS,
    TrialCurve,
    _spearman_rows,
    asha_rungs,
    audit_protocol,
    curves_from_sweep,
    spearman,
    spearman_bootstrap,
)
from harness.config.train import TrainConfig
from harness.sweep.result import SweepResult, TrialSummary


def test_spearman_on_a_tiny_table_with_ties_by_hand_and_scipy():
    x, y = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]
    # ranks of y with the tie averaged: 1, 2, 3.5, 5, 3.5; centred: x -2 -1 0 1 2, y -2 -1 .5 2 .5
    # sum dx*dy = 4 + 1 + 0 + 2 + 1 = 8; sum dx^2 = 10; sum dy^2 = 9.5
    assert spearman(x, y) == pytest.approx(8 / math.sqrt(95), abs=1e-12)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [1, 2]))  # fewer than 3 pairs
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # one side constant


def test_row_wise_spearman_matches_scipy():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, size=(50, 9)).astype(float)  # many ties
    y = rng.normal(size=(50, 9))
    got = _spearman_rows(x, y)
    for row in range(50):
        expected = spearmanr(x[row], y[row]).statistic
        if np.isnan(expected):
            assert np.isnan(got[row])
        else:
            assert got[row] == pytest.approx(expected, abs=1e-12)


def test_spearman_bootstrap_interval():
    x = [0.1, 0.4, 0.2, 0.8, 0.5, 0.7, 0.3, 0.9]
    y = [0.2, 0.3, 0.1, 0.9, 0.6, 0.5, 0.4, 0.8]
    rho, low, high, reps = spearman_bootstrap(x, y, n_boot=4000, seed=1)
    assert rho == pytest.approx(spearmanr(x, y).statistic)
    assert low <= rho <= high and low >= -1 and high <= 1
    assert np.all(np.isfinite(reps)) and 3000 < len(reps) <= 4000  # constant resamples left out
    assert spearman_bootstrap(x, y, n_boot=4000, seed=1)[1:3] == (low, high)  # seeded
    # A perfectly monotone relation stays perfect in every resample.
    assert spearman_bootstrap([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], n_boot=500)[:3] == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("grace", "rf", "max_t"), [(1, 2, 8), (2, 2, 8), (1, 3, 8), (4, 3, 40), (5, 3, 60), (8, 2, 8), (1, 4, 4)]
)
def test_asha_rungs_are_rays_milestones(grace, rf, max_t):
    from ray.tune.schedulers.async_hyperband import _Bracket

    ray_milestones = [m for m, _ in _Bracket(grace, max_t, rf, 0)._rungs]
    assert asha_rungs(grace, rf, max_t) == sorted(math.ceil(m) for m in ray_milestones if m < max_t)


def test_rungs_by_hand():
    assert asha_rungs(1, 2, 8) == [1, 2, 4]
    assert asha_rungs(4, 3, 40) == [4, 12, 36]
    assert asha_rungs(8, 2, 8) == []


def _curve(arch, i, early, final, stopped_by="completed", epochs=4):
    # IoU 'early' at epochs 1-2, then 'final' at 3-4; a stopped trial ends after `epochs`.
    values = (early, early, final, final)[:epochs]
    return TrialCurve(arch, f"{arch}-{i}", stopped_by, values)


def test_audit_flags_an_architecture_whose_early_ranking_is_reversed():
    early = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    final = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75]
    fast = [_curve("unet", i, e, f) for i, (e, f) in enumerate(zip(early, final, strict=True))]
    # unetpp: the trials that start worst end best (rho = -1 at every rung before the last epoch).
    slow = [_curve("unetpp", i, e, f) for i, (e, f) in enumerate(zip(early, final[::-1], strict=True))]
    # Two trials ASHA stopped at epoch 2 (IoU there 0.35 and 0.05); the final top 3 of unetpp scored
    # 0.1, 0.2, 0.3 at epoch 2, so 0.35 is as good as a top-3 trial there and 0.05 is not.
    slow += [_curve("unetpp", 10, 0.35, 0, "asha", epochs=2), _curve("unetpp", 11, 0.05, 0, "asha", epochs=2)]
    slow += [TrialCurve("unetpp", "unetpp-12", "diverged", (0.2, math.nan))]
    audit = audit_protocol(
        {"unet": fast, "unetpp": slow}, max_epochs=4, grace_period=1, reduction_factor=2, n_boot=500, top_k=3
    )
    table = audit.table.set_index(["arch", "rung"])
    assert list(audit.table.rung.unique()) == [1, 2]  # epoch 4 is the last: ASHA decides at 1 and 2
    assert table.loc[("unet", 1), "spearman"] == pytest.approx(1.0)
    assert table.loc[("unetpp", 2), "spearman"] == pytest.approx(-1.0)
    assert table.loc[("unetpp", 2), "n_full"] == 6
    assert table.loc[("unetpp", 2), "n_stopped"] == 2
    assert table.loc[("unetpp", 2), "n_stopped_within_top_k"] == 1
    assert table.loc[("unetpp", 1), "n_stopped"] == 0
    s = audit.summary
    assert s["verdict"] == "biased" and s["flagged"]
    assert s["archs"]["unetpp"] == {"n_trials": 9, "n_full": 6, "n_stopped": 2, "n_failed": 1}
    gap = s["gaps"][0]
    assert (gap["high_arch"], gap["low_arch"], gap["rho_gap"]) == ("unet", "unetpp", pytest.approx(2.0))
    assert gap["ci_low"] == pytest.approx(2.0)  # every resample of both is perfectly ordered
    assert len(s["advice"]) == 1 and "unetpp" in s["advice"][0] and "asha.enabled: false" in s["advice"][0]
    # The curves behind the figure: one row per (trial, epoch).
    assert len(audit.curves) == 6 * 4 + 6 * 4 + 2 * 2 + 2
    assert set(audit.curves.columns) == {"arch", "trial_id", "stopped_by", "epoch", "val_iou"}


def test_audit_advises_the_first_rung_that_ranks_well():
    # Epoch 1 is noise (reversed), epoch 2 already ranks like the end: a grace period of 2 is the fix.
    trials = []
    for i in range(6):
        noise = 0.9 - 0.1 * i
        trials.append(TrialCurve("unet", f"t{i}", "completed", (noise, 0.1 * i, 0.2 * i, 0.2 * i)))
    audit = audit_protocol({"unet": trials}, max_epochs=4, grace_period=1, reduction_factor=2, n_boot=200)
    assert audit.summary["verdict"] == "single architecture"
    assert audit.summary["advice"] == [
        "unet: the IoU at epoch 1 ranks trials unlike the last epoch (rho -1.00); at epoch 2 it does (rho 1.00): "
        "set `asha.grace_period: 2`"
    ]


def test_audit_with_too_few_full_length_trials_cannot_tell():
    few = [_curve("unet", i, 0.1 * i, 0.1 * i) for i in range(MIN_TRIALS - 1)]
    many = [_curve("unetpp", i, 0.1 * i, 0.1 * i) for i in range(MIN_TRIALS)]
    audit = audit_protocol({"unet": few, "unetpp": many}, max_epochs=4, grace_period=1, reduction_factor=2)
    assert audit.summary["verdict"] == "cannot tell" and not audit.summary["flagged"]
    assert math.isnan(audit.table.set_index(["arch", "rung"]).loc[("unet", 1), "spearman"])
    assert "unet" in audit.summary["advice"][0]


def test_equal_rankings_are_fair():
    curves = {arch: [_curve(arch, i, 0.1 * i, 0.5 + 0.05 * i) for i in range(6)] for arch in ("unet", "unetpp")}
    audit = audit_protocol(curves, max_epochs=4, grace_period=1, reduction_factor=2, asha_enabled=False)
    assert audit.summary["verdict"] == "fair" and audit.summary["advice"] == []
    assert audit.summary["asha_enabled"] is False


def test_curves_from_sweep_orders_steps_and_skips_trials_without_history():
    config = TrainConfig(epochs=3)
    trials = (
        TrialSummary("t0", "r0", config, "completed", 3, 0.7, 1.0),
        TrialSummary("t1", "r1", config, "asha", 1, 0.2, 1.0),
        TrialSummary("t2", None, config, "error", 0, math.nan, 0.0),
    )
    sweep = SweepResult("s", "b", "unet", "h", 3, trials[0], trials)
    curves = curves_from_sweep(sweep, {"r0": [(2, 0.5), (1, 0.3), (3, 0.7)], "r1": [(1, 0.2)]})
    assert [(c.trial_id, c.values, c.stopped_by, c.run_id) for c in curves] == [
        ("t0", (0.3, 0.5, 0.7), "completed", "r0"),
        ("t1", (0.2,), "asha", "r1"),
    ]


def test_equally_poor_rankings_are_unreliable_not_fair():
    # Both architectures' early scores are reversed at the end: no gap between them, and no evidence either.
    curves = {arch: [_curve(arch, i, 0.1 * i, 0.8 - 0.05 * i) for i in range(6)] for arch in ("unet", "unetpp")}
    audit = audit_protocol(curves, max_epochs=4, grace_period=1, reduction_factor=3, n_boot=200)
    assert audit.summary["gaps"][0]["rho_gap"] == pytest.approx(0.0)
    assert audit.summary["verdict"] == "unreliable" and audit.summary["flagged"]
    # Rungs at epochs 1 and 3 (factor 3); epoch 3 already holds the final scores, so it ranks well.
    assert audit.summary["rungs"] == [1, 3]
    assert all(a.endswith("set `asha.grace_period: 3`") for a in audit.summary["advice"])
    assert len(audit.summary["advice"]) == 2


def test_a_replayed_loss_gap_flags_the_comparison_whatever_the_correlations():
    curves = {arch: [_curve(arch, i, 0.1 * i, 0.5 + 0.05 * i) for i in range(6)] for arch in ("unet", "unetpp")}
    replay = {
        "unet": {"full_best": 0.75, "best_iou_mean": 0.75, "p_found_best": 1.0, "epochs_fraction_mean": 0.6},
        "unetpp": {"full_best": 0.80, "best_iou_mean": 0.78, "p_found_best": 0.4, "epochs_fraction_mean": 0.5},
    }
    fair = audit_protocol(curves, max_epochs=4, grace_period=1, reduction_factor=2, n_boot=200)
    assert fair.summary["verdict"] == "fair" and fair.summary["replay"] is None
    audit = audit_protocol(curves, max_epochs=4, grace_period=1, reduction_factor=2, n_boot=200, replay=replay)
    assert audit.summary["verdict"] == "biased" and audit.summary["replay"] == replay
    assert audit.summary["advice"][0].startswith("unetpp: the schedule loses most of its best trials")
    # A loss gap below REPLAY_GAP (0.01) leaves the verdict to the correlations.
    replay["unetpp"]["best_iou_mean"] = 0.795
    assert (
        audit_protocol(curves, max_epochs=4, grace_period=1, reduction_factor=2, replay=replay).summary["verdict"]
        == "fair"
    )


def test_two_architectures_resample_their_trials_independently():
    # Identical curves for both architectures, early and final ranks partly agreeing: the gap between
    # their rhos is 0, but its interval is the difference of two independent resamples, so it has a
    # spread. Seeding both with the same number (before issue 18) drew the same trials for both and
    # gave the interval [0, 0].
    early = [0.1, 0.5, 0.2, 0.7, 0.4, 0.3, 0.6, 0.8]
    final = [0.2, 0.3, 0.1, 0.9, 0.6, 0.5, 0.4, 0.8]
    curves = {
        arch: [_curve(arch, i, e, f) for i, (e, f) in enumerate(zip(early, final, strict=True))]
        for arch in ("unet", "unetpp")
    }
    audit = audit_protocol(curves, max_epochs=4, grace_period=1, reduction_factor=3, n_boot=400)
    gap = audit.summary["gaps"][0]
    assert gap["rho_gap"] == pytest.approx(0.0)
    assert gap["ci_low"] < -0.1 and gap["ci_high"] > 0.1
