"""The comparison's verdict: who leads, whether it is established, and its numbers, from paired.csv."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from harness.report.verdict import NO_WINNER, compare_summary, headline_metrics, verdict
from harness.results import load_results
from tests.test_results import make_results_dir


@pytest.fixture(scope="module")
def clear_win(tmp_path_factory):
    return load_results(make_results_dir(tmp_path_factory.mktemp("win"), shift=0.05))


def with_pairs(res, rows):
    """``res`` with ``paired.csv`` replaced by ``rows`` (arch_a, arch_b, mean_a, mean_b, diff, low, high, p)."""
    keys = ("arch_a", "arch_b", "mean_iou_a", "mean_iou_b", "iou_diff_mean", "iou_diff_ci_low", "iou_diff_ci_high")
    frame = pd.DataFrame([dict(zip((*keys, "seed_t_p"), row, strict=True)) | {"n_seeds": 5} for row in rows])
    return dataclasses.replace(res, paired=frame)


def test_an_interval_that_excludes_zero_names_the_winner(clear_win):
    row = clear_win.paired.iloc[0]
    assert row.arch_a == "unet" and row.iou_diff_ci_low > 0  # the fixture: U-Net better on every seed
    v = verdict(clear_win)
    assert (v.leader, v.winner) == ("unet", "unet")
    (pair,) = v.pairs
    assert (pair.diff, pair.ci_low, pair.ci_high, pair.p) == (
        row.iou_diff_mean,
        row.iou_diff_ci_low,
        row.iou_diff_ci_high,
        row.seed_t_p,
    )
    assert v.text.startswith("U-Net beats UNet++ by +")
    assert v.text.endswith("Winner: U-Net (mean per-image test IoU).")
    assert headline_metrics(v) == {
        "unet_minus_unetpp_per_image_iou": row.iou_diff_mean,
        "unet_minus_unetpp_per_image_iou_ci_low": row.iou_diff_ci_low,
        "unet_minus_unetpp_per_image_iou_ci_high": row.iou_diff_ci_high,
        "unet_minus_unetpp_per_image_iou_seed_t_p": row.seed_t_p,
    }


def test_an_interval_that_includes_zero_has_no_winner(clear_win):
    res = with_pairs(clear_win, [("unetpp", "unet", 0.71, 0.70, 0.01, -0.02, 0.04, 0.41)])
    v = verdict(res)
    assert (v.leader, v.winner) == ("unetpp", NO_WINNER)
    assert v.text == (
        "UNet++ leads U-Net by +0.0100 (95% CI -0.0200 to +0.0400, 5 paired seeds, p = 0.410): no difference is "
        "established. No winner: the data do not separate the architectures (mean per-image test IoU)."
    )


def test_a_row_written_loser_first_is_read_winner_first(clear_win):
    res = with_pairs(clear_win, [("unet", "unetpp", 0.60, 0.65, -0.05, -0.08, -0.02, 0.01)])
    v = verdict(res)
    assert (v.leader, v.winner) == ("unetpp", "unetpp")
    assert (v.pairs[0].arch_a, v.pairs[0].diff, v.pairs[0].ci_low, v.pairs[0].ci_high) == ("unetpp", 0.05, 0.02, 0.08)


def test_with_three_architectures_the_leader_wins_only_if_it_beats_every_other(clear_win):
    beats_both = [
        ("unet", "unetpp", 0.80, 0.70, 0.10, 0.05, 0.15, 0.001),
        ("unet", "cloudnet", 0.80, 0.78, 0.02, 0.01, 0.03, 0.02),
        ("cloudnet", "unetpp", 0.78, 0.70, 0.08, 0.03, 0.13, 0.004),
    ]
    assert verdict(with_pairs(clear_win, beats_both)).winner == "unet"
    not_the_second = [*beats_both[:1], ("unet", "cloudnet", 0.80, 0.78, 0.02, -0.01, 0.05, 0.2), beats_both[2]]
    v = verdict(with_pairs(clear_win, not_the_second))
    assert (v.leader, v.winner) == ("unet", NO_WINNER)
    assert "Cloud-Net" in v.text and v.text.count("(95% CI") == 2  # the leader's two pairs, not the third


def test_the_closing_summary_lists_each_architecture_and_the_verdict(clear_win):
    text = compare_summary(clear_win, report="/r/report.md", runs_view="open http://127.0.0.1:5000")
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["architecture", "per-image", "IoU"]
    unet = next(line for line in lines if line.strip().startswith("unet "))
    summary = clear_win.summary.set_index("arch")
    assert f"{summary.loc['unet', 'per_image_iou_mean']:.4f}" in unet
    assert (
        f"{summary.loc['unet', 'per_image_iou_ci_low']:.4f} to {summary.loc['unet', 'per_image_iou_ci_high']:.4f}"
        in unet
    )
    assert f"Verdict: {verdict(clear_win).text}" in lines
    assert lines[-2:] == ["  report:   /r/report.md", "  MLflow:   open http://127.0.0.1:5000"]
