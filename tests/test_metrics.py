"""Confusion counts and statistics, checked by hand, against the study's counts, and against scikit-learn."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from harness.metrics import (
    STAT_KEYS,
    ConfusionAccumulator,
    binarise,
    cloud_free_counts,
    confusion_counts,
    confusion_stats,
    mean_scene_scores,
    per_image_counts,
    per_image_scores,
    per_image_stats,
    scene_scores,
    stitch_scene,
)

EXPECTED_KEYS = [
    "tp", "fn", "fp", "tn", "p", "n", "pp", "pn", "total",
    "tpr", "fnr", "fpr", "tnr", "prevalence", "accuracy", "balanced_accuracy",
    "ppv", "fdr", "for", "npv", "lr_plus", "lr_minus", "iou", "f1", "mcc",
]  # fmt: skip


def test_keys_are_exactly_the_contract():
    assert list(confusion_stats(1, 2, 3, 4)) == EXPECTED_KEYS
    assert list(STAT_KEYS) == EXPECTED_KEYS


def test_small_example_by_hand():
    # tp=6, fn=2, fp=1, tn=11: P=8, N=12, PP=7, PN=13, T=20.
    stats = confusion_stats(6, 2, 1, 11)
    expected = {
        "tp": 6, "fn": 2, "fp": 1, "tn": 11, "p": 8, "n": 12, "pp": 7, "pn": 13, "total": 20,
        "tpr": Fraction(6, 8), "fnr": Fraction(2, 8), "fpr": Fraction(1, 12), "tnr": Fraction(11, 12),
        "prevalence": Fraction(8, 20), "accuracy": Fraction(17, 20),
        "balanced_accuracy": (Fraction(6, 8) + Fraction(11, 12)) / 2,
        "ppv": Fraction(6, 7), "fdr": Fraction(1, 7), "for": Fraction(2, 13), "npv": Fraction(11, 13),
        "lr_plus": Fraction(6, 8) / Fraction(1, 12), "lr_minus": Fraction(2, 8) / Fraction(11, 12),
        "iou": Fraction(6, 9), "f1": Fraction(12, 15),
    }  # fmt: skip
    for key, value in expected.items():
        assert stats[key] == pytest.approx(float(value), rel=1e-12), key
    # MCC = (6*11 - 1*2) / sqrt(7 * 8 * 12 * 13) = 64 / sqrt(8736)
    assert stats["mcc"] == pytest.approx(64 / math.sqrt(8736), rel=1e-12)
    assert all(type(stats[k]) is int for k in ("tp", "fn", "fp", "tn", "p", "n", "pp", "pn", "total"))


@pytest.mark.parametrize(
    ("counts", "accuracy", "table"),
    [
        # U-Net column of the study's Table 1 (the study printed 0.692 as "accuracy").
        (
            (13_889_639, 348_060, 1_013_039, 6_867_662),
            0.9385,
            {"tpr": 0.976, "tnr": 0.871, "ppv": 0.932, "npv": 0.952, "for": 0.048, "balanced_accuracy": 0.924,
             "iou": 0.911},
        ),
        # UNet++ column (the study printed 0.638).
        (
            (2_166_535, 118_878, 363_524, 890_007),
            0.8637,
            {"tpr": 0.948, "tnr": 0.71, "ppv": 0.856, "npv": 0.882, "for": 0.118, "balanced_accuracy": 0.83,
             "iou": 0.818},
        ),
    ],
)  # fmt: skip
def test_study_table_1_counts(counts, accuracy, table):
    stats = confusion_stats(*counts)
    assert round(stats["accuracy"], 4) == accuracy
    assert stats["total"] == sum(counts)
    for key, value in table.items():
        decimals = len(repr(value).split(".")[1])
        assert round(stats[key], decimals) == value, key


def test_zero_denominators_give_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = confusion_stats(0, 0, 0, 0)
        no_positives = confusion_stats(0, 0, 3, 5)
        perfect = confusion_stats(4, 0, 0, 6)
    assert all(math.isnan(empty[k]) for k in EXPECTED_KEYS[9:])
    # No cloud pixels at all: every rate over P is undefined, rates over PP and PN are not.
    for key in ("tpr", "fnr", "mcc", "lr_plus", "lr_minus", "balanced_accuracy"):
        assert math.isnan(no_positives[key]), key
    assert no_positives["prevalence"] == 0.0
    assert no_positives["ppv"] == 0.0 and no_positives["iou"] == 0.0 and no_positives["f1"] == 0.0
    assert no_positives["accuracy"] == 5 / 8 and no_positives["npv"] == 1.0
    assert math.isnan(perfect["lr_plus"])  # FPR = 0
    assert perfect["lr_minus"] == 0.0 and perfect["mcc"] == 1.0


def test_huge_counts_do_not_overflow():
    big = 10**15
    stats = confusion_stats(big, big // 2, big // 3, big)
    expected = (big * big - (big // 3) * (big // 2)) / math.sqrt(
        float((big + big // 3) * (big + big // 2) * (big + big // 3) * (big + big // 2))
    )
    assert stats["mcc"] == pytest.approx(expected, rel=1e-12)
    assert confusion_stats(np.int64(5), torch.tensor(1), 2, 3)["tp"] == 5


def test_negative_or_fractional_counts_are_rejected():
    with pytest.raises(ValueError, match="non-negative integer"):
        confusion_stats(-1, 0, 0, 0)
    with pytest.raises(ValueError, match="non-negative integer"):
        confusion_stats(1.5, 0, 0, 0)


def test_agrees_with_scikit_learn_on_random_masks():
    rng = np.random.default_rng(0)
    target = rng.random((3, 24, 24)) < 0.4
    pred = np.where(rng.random(target.shape) < 0.8, target, ~target)
    stats = confusion_stats(*confusion_counts(torch.from_numpy(pred), torch.from_numpy(target)).tolist())
    y_true, y_pred = target.ravel().astype(int), pred.ravel().astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred).ravel()
    assert (stats["tp"], stats["fn"], stats["fp"], stats["tn"]) == (tp, fn, fp, tn)
    assert stats["ppv"] == pytest.approx(skm.precision_score(y_true, y_pred))
    assert stats["tpr"] == pytest.approx(skm.recall_score(y_true, y_pred))
    assert stats["f1"] == pytest.approx(skm.f1_score(y_true, y_pred))
    assert stats["iou"] == pytest.approx(skm.jaccard_score(y_true, y_pred))
    assert stats["mcc"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred))
    assert stats["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert stats["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    lr_plus, lr_minus = skm.class_likelihood_ratios(y_true, y_pred)
    assert stats["lr_plus"] == pytest.approx(lr_plus) and stats["lr_minus"] == pytest.approx(lr_minus)


def test_per_image_counts_accumulator_and_per_image_stats_agree():
    rng = np.random.default_rng(1)
    target = torch.from_numpy(rng.integers(0, 2, (5, 8, 8)))
    pred = torch.from_numpy(rng.integers(0, 2, (5, 8, 8)))
    per_image = per_image_counts(pred, target)
    assert per_image.shape == (5, 4) and per_image.dtype == torch.int64
    assert torch.equal(per_image.sum(dim=0), confusion_counts(pred, target))
    assert per_image.sum(dim=1).tolist() == [64] * 5

    accumulator = ConfusionAccumulator("cpu")
    for i in range(0, 5, 2):  # batches of 2, 2, 1
        accumulator.update(pred[i : i + 2], target[i : i + 2])
    assert accumulator.counts().tolist() == confusion_counts(pred, target).tolist()
    assert accumulator.stats() == confusion_stats(*accumulator.counts())

    frame = per_image_stats(per_image, index=[f"patch_{i}" for i in range(5)])
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == EXPECTED_KEYS
    assert frame.shape == (5, len(EXPECTED_KEYS)) and frame["tp"].dtype == np.int64
    for i in range(5):
        row, expected = frame.iloc[i].to_dict(), confusion_stats(*per_image[i].tolist())
        assert row == pytest.approx(expected, nan_ok=True)


def test_counting_does_not_sync_and_stays_on_device():
    pred = torch.zeros(2, 4, 4, dtype=torch.int64)
    counts = confusion_counts(pred, pred)
    assert isinstance(counts, torch.Tensor) and counts.device == pred.device
    assert counts.tolist() == [0, 0, 0, 32]
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_counts(pred, pred[:1])


# ---------------------------------------------------------------------------- per-image IoU set
def test_the_per_image_iou_set_is_chosen_by_ground_truth_not_by_the_prediction():
    target = torch.zeros(4, 3, 3, dtype=torch.int64)
    target[0, 0, :2] = 1  # image 0: two cloud pixels
    target[1, 1, 1] = 1  # image 1: one cloud pixel
    pred = torch.zeros_like(target)
    pred[0, 0, 0] = pred[0, 2, 2] = 1  # tp 1, fn 1, fp 1
    pred[3, 1, 1] = 1  # image 3 is cloud-free with one false positive; image 2 is cloud-free, predicted clear
    counts = per_image_counts(pred, target)
    scores = per_image_scores(counts)
    assert scores["cloud_free"].tolist() == [False, False, True, True]
    # The old rule (IoU from the counts alone) kept image 3 at 0 and dropped image 2 as 0/0: the set
    # depended on the prediction. Both cloud-free images are out, whatever was predicted.
    assert per_image_stats(counts)["iou"].iloc[3] == 0 and math.isnan(per_image_stats(counts)["iou"].iloc[2])
    assert scores["iou"].iloc[:2].tolist() == pytest.approx([1 / 3, 0.0]) and scores["iou"].iloc[2:].isna().all()
    assert scores["f1"].iloc[:2].tolist() == pytest.approx([0.5, 0.0]) and scores["f1"].iloc[2:].isna().all()
    assert scores["fpr"].tolist() == pytest.approx([1 / 7, 0.0, 0.0, 1 / 9])
    assert scores["accuracy"].tolist() == pytest.approx([7 / 9, 8 / 9, 1.0, 8 / 9])
    for i in range(2):  # scikit-learn agrees on every image whose ground truth has cloud
        y_true, y_pred = target[i].flatten().numpy(), pred[i].flatten().numpy()
        assert scores["iou"].iloc[i] == pytest.approx(skm.jaccard_score(y_true, y_pred))
        assert scores["f1"].iloc[i] == pytest.approx(skm.f1_score(y_true, y_pred))
    assert cloud_free_counts(counts) == {"iou_images": 2, "cloud_free_images": 2, "cloud_free_images_with_fp": 1,
                                         "cloud_free_fp": 1, "cloud_free_tn": 17}  # fmt: skip


# ----------------------------------------------------------------------------------------- stitching
def make_scene(patch_size=16, grid=(3, 4), gt_shape=(40, 55), seed=0):
    """A random scene ground truth and its patches cut as 38-Cloud does (gt centred on the canvas)."""
    rng = np.random.default_rng(seed)
    gt = (rng.random(gt_shape) < 0.3).astype(np.uint8)
    nrows, ncols = grid
    canvas = np.zeros((nrows * patch_size, ncols * patch_size), dtype=np.uint8)
    top, left = (canvas.shape[0] - gt_shape[0]) // 2, (canvas.shape[1] - gt_shape[1]) // 2
    canvas[top : top + gt_shape[0], left : left + gt_shape[1]] = gt
    patches = {
        (row, col): canvas[(row - 1) * patch_size : row * patch_size, (col - 1) * patch_size : col * patch_size]
        for row in range(1, nrows + 1)
        for col in range(1, ncols + 1)
    }
    return gt, patches


def test_stitching_a_perfect_prediction_scores_100():
    gt, patches = make_scene()
    stitched = stitch_scene(patches, gt.shape, 16)
    assert stitched.shape == gt.shape
    np.testing.assert_array_equal(stitched, gt)
    scores = scene_scores(stitched, gt * 255)  # ground truth as 0/255 also works
    assert scores == {"precision": 100.0, "recall": 100.0, "specificity": 100.0, "iou": 100.0,
                      "overall_accuracy": 100.0}  # fmt: skip


def test_stitching_a_shifted_prediction_does_not_score_100():
    gt, patches = make_scene()
    shifted = {(row, col + 1): patch for (row, col), patch in patches.items() if col < 4}
    shifted |= {(row, 1): np.zeros((16, 16), np.uint8) for row in range(1, 4)}
    scores = scene_scores(stitch_scene(shifted, gt.shape, 16), gt)
    assert scores["iou"] < 50
    # Also: placing patches by transposed (col, row) is wrong and scored as such.
    transposed = {(col, row): patch for (row, col), patch in patches.items()}
    with pytest.raises(ValueError, match="larger than the patch canvas"):
        stitch_scene(transposed, gt.shape, 16)


def test_stitching_crop_offset_is_floor_of_half_the_excess():
    # Canvas 2x2 patches of 4 px = 8x8, gt 5x6: offset (1, 1).
    patches = {(r, c): np.full((4, 4), 10 * r + c, np.uint8) for r in (1, 2) for c in (1, 2)}
    stitched = stitch_scene(patches, (5, 6), 4)
    assert stitched.shape == (5, 6)
    assert stitched[0].tolist() == [11, 11, 11, 12, 12, 12]
    assert stitched[:, 0].tolist() == [11, 11, 11, 21, 21]
    # A missing patch (empty area) stays background when the grid size is given.
    sparse = stitch_scene({(1, 1): np.ones((4, 4), np.uint8)}, (5, 6), 4, grid_shape=(2, 2))
    assert sparse.sum() == 3 * 3


def test_binarise_uses_the_official_threshold():
    probability = np.array([0.0, 12 / 255, 12 / 255 + 1e-6, 0.9])
    assert binarise(probability).tolist() == [0, 0, 1, 1]


def test_mean_scene_scores_from_dict_and_dataframe():
    per_scene = {
        "LC08_a": {"precision": 90.0, "recall": 80.0, "specificity": 99.0, "iou": 70.0,
                   "overall_accuracy": 95.0},
        "LC08_b": {"precision": 70.0, "recall": float("nan"), "specificity": 97.0, "iou": 50.0,
                   "overall_accuracy": 93.0},
    }  # fmt: skip
    means = mean_scene_scores(per_scene)
    assert means == {"precision": 80.0, "recall": 80.0, "specificity": 98.0, "iou": 60.0,
                     "overall_accuracy": 94.0, "scenes": 2}  # fmt: skip
    assert mean_scene_scores(pd.DataFrame.from_dict(per_scene, orient="index")) == means


def test_stitching_the_synthetic_datasets_patch_ground_truth_gives_its_scene_ground_truth(tmp_path):
    # The synthetic writer cuts scenes like 38-Cloud; stitching its patch masks must give back
    # Entire_scene_gts exactly, and one misplaced patch row must not.
    import tifffile

    from harness.data.layout import discover_patches
    from harness.data.synth import SCENE_GT_DIR, TRAIN_DIR, write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "synth", scenes=1, patch_size=16, seed=3, test_scenes=0)
    patch_files = [pf for pf in discover_patches(root) if pf.gt is not None]
    scene_id = patch_files[0].patch.scene_id
    patches = {(pf.patch.row, pf.patch.col): tifffile.imread(pf.gt) // 255 for pf in patch_files}
    gt = tifffile.imread(root / TRAIN_DIR / SCENE_GT_DIR / f"edited_corrected_gts_{scene_id}.TIF")
    assert gt.any()
    stitched = stitch_scene(patches, gt.shape, 16)
    np.testing.assert_array_equal(stitched, gt)
    assert scene_scores(stitched, gt)["iou"] == 100.0
    nrows = max(row for row, _ in patches)
    shifted = {(row % nrows + 1, col): patch for (row, col), patch in patches.items()}
    assert scene_scores(stitch_scene(shifted, gt.shape, 16), gt)["iou"] < 100.0
