"""Tests of harness.report.markdown and harness.report.format: the report's text and its numbers."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness.metrics import confusion_stats
from harness.models import get_model_spec, list_models
from harness.report import write_report
from harness.report.format import (
    arch_labels,
    fmt_ci,
    fmt_int,
    fmt_p,
    fmt_rate,
    fmt_signed,
    fmt_value,
    is_missing,
    label,
    md_table,
)
from harness.report.markdown import headline, render_markdown
from harness.results import PAIRED_COLUMNS, load_results
from tests.test_results import ARCHS, COUNTS, SEEDS, make_results_dir

HEADINGS = [
    "## Pixel statistics on the test split",
    "## Across seeds",
    "## Paired comparison on test images",
    "## Cost",
    "## Tuning budget",
    "## Chosen configurations",
    "## Scene-level scores (38-Cloud stitching, argmax labels, ×100)",
    "## Figures",
]


def _table_rows(report: str, heading: str) -> dict[str, list[str]]:
    """First Markdown table after ``heading``: row label -> cells."""
    section = report.split(heading, 1)[1]
    rows = {}
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
        elif rows:
            break
    return rows


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """Render one full results directory (every optional file) for the module; return (root, report path)."""
    root = make_results_dir(tmp_path_factory.mktemp("results"))
    return root, write_report(root)


# ---------------------------------------------------------------------------------------- the report
def test_report_names_both_architectures_and_the_winner(full_report):
    root, path = full_report
    assert path == root / "report.md"
    text = path.read_text()
    assert "U-Net" in text and "UNet++" in text
    assert "**U-Net** has the higher mean per-image test IoU" in text
    assert "for this test set and new training seeds, 95% CI [" in text
    assert "(Student t over the 3 per-seed differences); the interval excludes 0" in text
    assert "ab12" * 16 in text  # split hash
    assert "Data (sha256 of every split's patch names and pixels): `" + "cd34" * 16 in text
    assert "`lr`" in text and "unet_00000" in text  # chosen configs


def test_report_keeps_its_section_headings(full_report):
    _, path = full_report
    headings = [line for line in path.read_text().splitlines() if line.startswith("## ")]
    assert headings == HEADINGS


def test_table1_counts_equal_the_csv(full_report):
    root, path = full_report
    rows = _table_rows(path.read_text(), "## Pixel statistics")
    summary = pd.read_csv(root / "summary.csv").set_index("arch")
    assert rows["statistic"] == ["U-Net", "UNet++"]
    for arch in ARCHS:  # the hand counts, pooled over seeds
        pooled = confusion_stats(*np.sum([COUNTS[arch, s] for s in SEEDS], axis=0).tolist())
        assert [summary.loc[arch, k] for k in ("tp", "fn", "fp", "tn", "total")] == [
            pooled[k] for k in ("tp", "fn", "fp", "tn", "total")
        ]
    for key, name in (("tp", "TP"), ("fn", "FN"), ("fp", "FP"), ("tn", "TN"), ("total", "total pixels")):
        printed = [int(cell.replace(",", "")) for cell in rows[name]]
        assert printed == [summary.loc[a, key] for a in ARCHS]
    iou = float(rows["IoU (pooled pixels)"][0])  # the study's "threat score" row
    assert iou == pytest.approx(summary.loc["unet", "iou"], abs=5e-5)


def test_iou_is_called_iou_and_its_other_names_appear_once(full_report):
    _, path = full_report
    text = path.read_text()
    assert text.count("Jaccard") == 1 and text.count("threat score") == 1
    first = text.index("IoU")
    assert text[first:].startswith('IoU (the study\'s "threat score", 38-Cloud\'s "Jaccard index")')
    scene = _table_rows(text, "## Scene-level scores")
    assert scene["architecture"] == ["precision", "recall", "specificity", "scene IoU", "overall accuracy"]
    assert "Scene IoU per scene (mean over seeds):" in text


def test_scene_table_is_the_mean_over_scenes_then_seeds(full_report):
    root, path = full_report
    scores = pd.read_csv(root / "scene_scores.csv")
    expected = scores[scores.arch == "unet"].groupby("seed")["iou"].mean().mean()
    rows = _table_rows(path.read_text(), "## Scene-level scores")
    assert float(rows["U-Net"][3]) == pytest.approx(expected, abs=5e-3)


def test_identical_architectures_report_no_difference(tmp_path):
    root = make_results_dir(tmp_path / "same", shift=0, optional=False)
    text = write_report(root).read_text()
    assert "the interval includes 0: **no difference is established**" in text
    assert "excludes 0" not in text
    paired = pd.read_csv(root / "paired.csv").iloc[0]
    assert paired.iou_diff_mean == 0 and paired.image_wilcoxon_p == 1.0 and paired.p_a_better == 0.5
    assert not (root / "figures" / "curves.png").exists()  # optional inputs absent: figures left out
    assert "![" not in text


def test_one_architecture_has_no_comparison(tmp_path):
    root = make_results_dir(tmp_path / "one", archs=["unet"], optional=False)
    text = render_markdown(load_results(root), {})
    assert "Only one architecture: no comparison." in text
    assert "## Paired comparison on test images" not in text
    assert text.count("threat score") == 1  # IoU's other names still given once, in Table 1


def test_headline_speaks_of_the_winner_when_b_is_better():
    row = {
        "arch_a": "unet",
        "arch_b": "unetpp",
        "mean_iou_a": 0.70,
        "mean_iou_b": 0.75,
        "iou_diff_mean": -0.05,
        "iou_diff_ci_low": -0.07,
        "iou_diff_ci_high": -0.03,
        "p_a_better": 0.25,
        "p_a_better_ci_low": 0.1,
        "p_a_better_ci_high": 0.4,
        "seeds_a_higher": 0.0,
        "seed_t_p": 0.012,
        "image_ci_low": -0.06,
        "image_ci_high": -0.04,
        "image_wilcoxon_p": 0.0004,
        "n_images": 24,
        "n_scenes": 3,
        "n_seeds": 3,
    }
    (sentence,) = headline(pd.DataFrame([row]))
    assert sentence.startswith("**UNet++** has the higher mean per-image test IoU: 0.7500 vs 0.7000 for U-Net")
    assert "difference of +0.0500 (UNet++ − U-Net; 24 test images with cloud, 3 scenes, 3 paired seeds" in sentence
    # A paired.csv written before issue 18 (no detectable_diff): its interval is named for what it was.
    assert "95% CI [+0.0300, +0.0700] from a percentile hierarchical bootstrap" in sentence
    assert "the interval excludes 0" in sentence
    assert "P(UNet++ > U-Net) = 0.75 [0.60, 0.90]" in sentence
    assert "UNet++ is higher in 3 of 3 paired seeds (paired t-test over seeds: p = 0.012)" in sentence
    # Only the seed-level evidence speaks: no image-level test, no "significant", no "probability 1.00".
    assert "Wilcoxon" not in sentence and "4.0e-04" not in sentence and "significant" not in sentence
    assert "probability" not in sentence


def _seed_level_row(**changes):
    row = dict.fromkeys(PAIRED_COLUMNS, math.nan)
    row.update(arch_a="unet", arch_b="unetpp", mean_iou_a=0.71, mean_iou_b=0.70, iou_diff_mean=0.01)
    row.update(iou_diff_ci_low=-0.02, iou_diff_ci_high=0.04, detectable_diff=0.045, p_a_better=0.6)
    row.update(p_a_better_ci_low=0.2, p_a_better_ci_high=0.9, seeds_a_higher=3.0, seed_t_p=0.4)
    row.update(new_scenes_ci_low=-0.05, new_scenes_ci_high=0.07, new_scenes_detectable_diff=0.08)
    row.update(n_images=120, n_scenes=3, n_seeds=5)
    row.update(changes)
    return row


def test_headline_states_its_estimand_and_what_the_design_could_not_see():
    (sentence,) = headline(pd.DataFrame([_seed_level_row()]))
    assert (
        "for this test set and new training seeds, 95% CI [-0.0200, +0.0400] (Student t over the 5 per-seed" in sentence
    )
    assert "**no difference is established**; differences below 0.0450 would likely go unseen with 5 seeds" in sentence
    # 3 scenes: the "new scenes" interval is computed but not offered as an estimate.
    assert "Generalisation to new scenes is not estimated: 3 test scenes are too few" in sentence
    assert "[-0.0500, +0.0700]" not in sentence
    (many,) = headline(pd.DataFrame([_seed_level_row(n_scenes=12)]))
    assert (
        "For new scenes (seeds and scenes both random), 95% CI [-0.0500, +0.0700], detectable difference 0.0800" in many
    )
    # An interval that excludes 0 needs no power line.
    (clear,) = headline(pd.DataFrame([_seed_level_row(iou_diff_ci_low=0.005)]))
    assert "the interval excludes 0" in clear and "would likely go unseen" not in clear


def test_headline_without_a_ci_claims_no_difference():
    row = dict.fromkeys(PAIRED_COLUMNS, math.nan)
    row.update(arch_a="unet", arch_b="unetpp", mean_iou_a=0.8, mean_iou_b=0.7, iou_diff_mean=0.1, n_images=1)
    row.update(n_scenes=1, n_seeds=1, seeds_a_higher=1.0)
    (sentence,) = headline(pd.DataFrame([row]))
    assert "95% CI no interval" in sentence and "**no difference is established**" in sentence
    assert "one seed: no seed-to-seed variation is observed" in sentence
    assert "significant" not in sentence and "t-test" not in sentence


# ---------------------------------------------------------------------------------------- formatting
def test_counts_rates_and_signs():
    assert fmt_int(2166535) == "2,166,535" and fmt_int(12.0) == "12"
    assert fmt_rate(0.93124) == "0.9312" and fmt_rate(0.5, 2) == "0.50"
    assert fmt_signed(0.0123) == "+0.0123" and fmt_signed(-0.5, 1) == "-0.5"


def test_p_values_switch_to_scientific_below_a_thousandth():
    assert fmt_p(0.04567) == "0.046"
    assert fmt_p(0.001) == "0.001"
    assert fmt_p(1.2e-7) == "1.2e-07"


def test_intervals_and_config_values():
    assert fmt_ci(0.9, 0.8, 1.0, 1) == "0.9 [0.8, 1.0]"
    assert fmt_ci(0.9, math.nan, 1.0, 1) == "0.9 (no CI)"
    assert fmt_value(1e-4) == "0.0001" and fmt_value(0.123456) == "0.1235"
    assert fmt_value(4) == "4" and fmt_value("ce") == "ce" and fmt_value(None) == "n/a"


@pytest.mark.parametrize("undefined", [None, math.nan, np.nan, pd.NA, np.float32("nan")])
def test_undefined_values_print_as_n_a(undefined):
    assert is_missing(undefined)
    for fmt in (fmt_int, fmt_rate, fmt_signed, fmt_p):
        assert fmt(undefined) == "n/a"


def test_md_table_aligns_numbers_right():
    table = md_table(["a", "b", "c"], [["x", "1", "2"]])
    assert table.splitlines() == ["| a | b | c |", "| --- | ---: | ---: |", "| x | 1 | 2 |"]
    assert md_table(["a", "b"], [], align="rl").splitlines()[1] == "| ---: | --- |"


def test_labels_come_from_the_results_then_the_registry_then_the_key():
    assert [label(arch) for arch in list_models()] == [get_model_spec(arch).label for arch in list_models()]
    assert label("unet") == "U-Net" and label("unetpp") == "UNet++"
    assert label("resunet") == "resunet"  # not registered: the registry key
    with arch_labels({"unet": "U-Net (paper)", "resunet": "ResUNet"}):
        assert label("unet") == "U-Net (paper)" and label("resunet") == "ResUNet" and label("unetpp") == "UNet++"
    assert label("resunet") == "resunet"


# ------------------------------------------------------------------------------- claims the report makes
def test_the_report_claims_only_what_holds(full_report):
    _, path = full_report
    text = path.read_text()
    assert "significant" not in text and "probability 1.00" not in text
    assert "every architecture is scored on exactly these images" not in text
    # What does hold: one test split for all, and one per-image IoU set chosen from ground truth.
    assert "every architecture and seed is scored on all 28 test images (24 with cloud" in text
    assert "4 are cloud-free" in text and "chosen from the ground truth alone" in text
    # Intervals over seeds are t-intervals, and say so; the image-level ones are labelled as such.
    assert "95% Student-t interval over seeds" in text and "percentile-bootstrap CI over seeds" not in text
    assert "95% CI, image-level" in text and "shown for reference only" in text


def test_seed_table_prints_the_t_interval_of_summary_csv(full_report):
    root, path = full_report
    summary = pd.read_csv(root / "summary.csv").set_index("arch")
    cells = _table_rows(path.read_text(), "## Across seeds")["U-Net"]
    ious = pd.read_csv(root / "results.csv").query("arch == 'unet'").iou
    half = 4.302652729911275 * ious.std(ddof=1) / np.sqrt(3)
    assert cells[1] == f"{ious.mean():.4f} [{ious.mean() - half:.4f}, {ious.mean() + half:.4f}]"
    assert summary.loc["unet", "iou_ci_low"] == pytest.approx(ious.mean() - half)


def test_cloud_free_images_are_reported_by_their_false_positives(full_report):
    root, path = full_report
    per_image = pd.read_csv(root / "per_image.csv")
    free = per_image[per_image.cloud_free & (per_image.arch == "unet")]
    rows = _table_rows(path.read_text(), "judged by their false positives")
    assert rows["U-Net"][0] == f"{(free.fp > 0).mean():.3f}"
    assert rows["U-Net"][1] == f"{free.fp.sum() / (free.fp.sum() + free.tn.sum()):.4f}"


def test_scene_section_states_the_binarisation_and_warns_about_scenes_without_ground_truth(full_report):
    _, path = full_report
    section = path.read_text().split("## Scene-level scores", 1)[1].split("## Figures", 1)[0]
    assert "labelled by argmax" in section and "12/255" in section and "Every patch of each test scene" in section
    assert "**Warning:** 1 of 4 test scenes have no scene ground truth" in section
    assert "`LC08_scene_without_gt`" in section


def test_a_warning_about_scenes_shows_without_any_scene_score(tmp_path):
    root = make_results_dir(tmp_path / "no-gt")
    (root / "scene_scores.csv").unlink()
    meta = json.loads((root / "meta.json").read_text())
    meta["scene_protocol"].update(scored_scenes=[], scenes_without_gt=["LC08_a", "LC08_b"])
    (root / "meta.json").write_text(json.dumps(meta))
    text = write_report(root).read_text()
    assert "**Warning:** 2 of 2 test scenes have no scene ground truth" in text


def test_budget_section_says_how_trials_count_and_its_bias(full_report):
    _, path = full_report
    section = path.read_text().split("## Tuning budget", 1)[1].split("## Chosen", 1)[0]
    assert "ASHA-stopped trial at its score when stopped" in section and "IoU 0" in section
    assert "biased low" in section and "device-hours" in section
    assert "U-Net 12 trials (3 completed, 8 stopped by ASHA, 1 diverged or failed)" in section


def test_a_probability_of_one_keeps_its_interval_and_is_not_read_as_certainty(full_report):
    _, path = full_report
    text = path.read_text()  # the fixture's U-Net beats UNet++ with every seed pair on every scene
    # 3 seeds bound P(A > B) only at 0.44 (Wilson, n = 3), however clean the sweep of wins.
    assert "P(U-Net > UNet++) = 1.00 [0.44, 1.00] (every U-Net seed beats every UNet++ seed on every scene" in text
    assert "[1.00, 1.00]" not in text


def test_the_official_protocol_has_its_own_section_stamped_and_beside_cloud_nets_published_scores(tmp_path):
    root = make_results_dir(tmp_path / "r")
    rows = [
        {"arch": arch, "seed": seed, "scene_id": f"S{k}", "patches": 4, "precision": 90.0 + k, "recall": 80.0,
         "specificity": 97.0, "jaccard": 70.0 + seed, "overall_accuracy": 95.0}
        for arch in ("unet", "unetpp") for seed in (0, 1, 2) for k in (0, 1)
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "official_scores.csv", index=False)
    text = write_report(root).read_text()
    section = text.split("## 38-Cloud official protocol (×100)", 1)[1].split("\n## ", 1)[0]
    assert "thresholded at 12/255" in section and "Protocol: scene, not patch" in section
    # Mean over scenes, then over seeds: precision (90 + 91) / 2, Jaccard (70 + 71 + 72) / 3.
    assert "| U-Net | 90.50 | 80.00 | 97.00 | 71.00 | 95.00 |" in section
    assert "| Cloud-Net (published) | 91.24 | 84.86 | 98.68 | 78.50 | 96.49 |" in section
    assert "38-Cloud official protocol" not in write_report(make_results_dir(tmp_path / "none")).read_text()
