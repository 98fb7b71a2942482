"""Pixel confusion counts and every statistic derived from them; per-image scores; 38-Cloud scene stitching.

Cloud (label 1) is the positive class. Counts are ordered (tp, fn, fp, tn) everywhere. Counting runs on
the tensors' device without a host sync; statistics are computed from Python ints so that counts of any
size are exact and MCC's product cannot overflow. A ratio with a zero denominator is NaN, never an
exception or a warning. Definitions follow ``seed-study.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

COUNT_KEYS = ("tp", "fn", "fp", "tn")
STAT_KEYS = (
    "tp", "fn", "fp", "tn", "p", "n", "pp", "pn", "total",
    "tpr", "fnr", "fpr", "tnr", "prevalence", "accuracy", "balanced_accuracy",
    "ppv", "fdr", "for", "npv", "lr_plus", "lr_minus", "iou", "f1", "mcc",
)  # fmt: skip
SCENE_SCORE_KEYS = ("precision", "recall", "specificity", "iou", "overall_accuracy")
# 38-Cloud's official binarisation of a predicted cloud probability. The final comparison does not use
# it: it stitches argmax labels (cloud probability > 0.5 for the two-class softmax), the same labels
# every other number of the report is counted from; the report says so.
OFFICIAL_THRESHOLD = 12 / 255

NAN = float("nan")


# --------------------------------------------------------------------------------------------- counting
def _as_bool_tensors(pred, target) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    return pred != 0, target != 0


def per_image_counts(pred, target) -> torch.Tensor:
    """Confusion counts per image: LongTensor (B, 4) of (tp, fn, fp, tn), on the inputs' device.

    ``pred`` and ``target`` are (B, H, W) label maps (tensors or arrays; non-zero = cloud).
    """
    pred, target = _as_bool_tensors(pred, target)
    if pred.dim() < 2:
        raise ValueError(f"expected (B, ...) label maps, got shape {tuple(pred.shape)}")
    pred, target = pred.flatten(1), target.flatten(1)
    tp = (pred & target).sum(dim=1, dtype=torch.int64)
    fn = (~pred & target).sum(dim=1, dtype=torch.int64)
    fp = (pred & ~target).sum(dim=1, dtype=torch.int64)
    tn = pred.shape[1] - tp - fn - fp
    return torch.stack([tp, fn, fp, tn], dim=1)


def confusion_counts(pred, target) -> torch.Tensor:
    """Confusion counts over all pixels: LongTensor (4,) of (tp, fn, fp, tn), on the inputs' device.

    No host synchronisation, so it can run on every batch of a CUDA loop.
    """
    pred, target = _as_bool_tensors(pred, target)
    pred, target = pred.reshape(1, -1), target.reshape(1, -1)
    return per_image_counts(pred, target)[0]


class ConfusionAccumulator:
    """Sums confusion counts over batches on ``device``; ``counts()`` is the only host sync."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.total = torch.zeros(4, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add the counts of one batch of label maps (no sync)."""
        self.total += confusion_counts(pred, target)

    def counts(self) -> np.ndarray:
        """Accumulated (tp, fn, fp, tn) as an int64 array."""
        return self.total.cpu().numpy().astype(np.int64)

    def stats(self) -> dict:
        """``confusion_stats`` of the accumulated counts."""
        return confusion_stats(*self.counts())


# ------------------------------------------------------------------------------------------- statistics
def _ratio(numerator: float, denominator: float) -> float:
    """Numerator / denominator; NaN when the denominator is zero or either side is NaN."""
    if denominator == 0 or math.isnan(numerator) or math.isnan(denominator):
        return NAN
    return numerator / denominator


def _as_count(value, name: str) -> int:
    if isinstance(value, torch.Tensor):
        value = value.item()
    count = int(value)
    if count != value or count < 0:
        raise ValueError(f"{name} must be a non-negative integer count, got {value!r}")
    return count


def confusion_stats(tp, fn, fp, tn) -> dict:
    """Every statistic of a binary confusion matrix (keys ``STAT_KEYS``; definitions in seed-study.md).

    Counts may be ints, numpy integers or 0-d tensors; they are returned as Python ints, the rest as
    floats. P = TP+FN, N = FP+TN, PP = TP+FP, PN = FN+TN; zero denominators give NaN.
    """
    tp, fn, fp, tn = (_as_count(v, k) for v, k in zip((tp, fn, fp, tn), COUNT_KEYS, strict=True))
    p, n, pp, pn = tp + fn, fp + tn, tp + fp, fn + tn
    total = p + n
    tpr, fnr, fpr, tnr = _ratio(tp, p), _ratio(fn, p), _ratio(fp, n), _ratio(tn, n)
    # Exact integer product (an int64 product of four pixel counts would overflow), one rounding in sqrt.
    mcc_denominator = math.sqrt(pp * p * n * pn)
    return {
        "tp": tp, "fn": fn, "fp": fp, "tn": tn, "p": p, "n": n, "pp": pp, "pn": pn, "total": total,
        "tpr": tpr, "fnr": fnr, "fpr": fpr, "tnr": tnr,
        "prevalence": _ratio(p, total),
        "accuracy": _ratio(tp + tn, total),
        "balanced_accuracy": (tpr + tnr) / 2,
        "ppv": _ratio(tp, pp), "fdr": _ratio(fp, pp),
        "for": _ratio(fn, pn), "npv": _ratio(tn, pn),
        "lr_plus": _ratio(tpr, fpr), "lr_minus": _ratio(fnr, tnr),
        "iou": _ratio(tp, tp + fn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "mcc": _ratio(tp * tn - fp * fn, mcc_denominator),
    }  # fmt: skip


def per_image_stats(counts, index=None) -> pd.DataFrame:
    """One row of ``confusion_stats`` per image from an (N, 4) array of (tp, fn, fp, tn).

    ``index`` (optional, e.g. patch names) labels the rows.
    """
    counts = counts.cpu().numpy() if isinstance(counts, torch.Tensor) else counts
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[1] != 4:
        raise ValueError(f"counts must have shape (N, 4) of (tp, fn, fp, tn), got {counts.shape}")
    rows = [confusion_stats(*row) for row in counts.tolist()]
    frame = pd.DataFrame(rows, columns=list(STAT_KEYS), index=index)
    return frame.astype({key: "int64" for key in ("tp", "fn", "fp", "tn", "p", "n", "pp", "pn", "total")})


def per_image_scores(counts) -> pd.DataFrame:
    """Per-image scores of a comparison, with the per-image IoU set chosen from ground truth alone.

    ``counts`` is (N, 4) of (tp, fn, fp, tn). Columns: ``cloud_free`` (the ground truth has no cloud
    pixel, P = 0), ``iou`` and ``f1`` (defined only on images whose ground truth has cloud: NaN on every
    cloud-free image, whatever was predicted), ``accuracy`` and ``fpr`` (FP / N, defined whenever the
    image has a clear pixel).

    Why: left to the counts, a cloud-free image predicted clear has IoU 0/0 (undefined) while the same
    image with one false-positive pixel has IoU 0, so each model and seed would pick its own image set.
    Deciding by ground truth gives one set for every architecture and seed; cloud-free images are
    judged by their false positives instead (:func:`cloud_free_counts`).
    """
    frame = per_image_stats(counts)
    cloud_free = (frame["p"] == 0).to_numpy()
    iou, f1 = frame["iou"].to_numpy(float), frame["f1"].to_numpy(float)
    return pd.DataFrame(
        {
            "cloud_free": cloud_free,
            "iou": np.where(cloud_free, NAN, iou),
            "f1": np.where(cloud_free, NAN, f1),
            "accuracy": frame["accuracy"].to_numpy(float),
            "fpr": frame["fpr"].to_numpy(float),
        }
    )


def cloud_free_counts(counts) -> dict:
    """The per-image IoU set's size and what a model did on the cloud-free images left out of it.

    From (N, 4) counts of (tp, fn, fp, tn): ``iou_images`` (images whose ground truth has cloud),
    ``cloud_free_images``, ``cloud_free_images_with_fp`` (cloud-free images with at least one
    false-positive pixel), ``cloud_free_fp`` and ``cloud_free_tn`` (pixel counts summed over the
    cloud-free images; their FPR is fp / (fp + tn)). All Python ints.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 4)
    cloud_free = counts[:, 0] + counts[:, 1] == 0
    free = counts[cloud_free]
    return {
        "iou_images": int((~cloud_free).sum()),
        "cloud_free_images": int(cloud_free.sum()),
        "cloud_free_images_with_fp": int((free[:, 2] > 0).sum()),
        "cloud_free_fp": int(free[:, 2].sum()),
        "cloud_free_tn": int(free[:, 3].sum()),
    }


# -------------------------------------------------------------------------------------- scene stitching
def binarise(probability, threshold: float = OFFICIAL_THRESHOLD) -> np.ndarray:
    """Cloud mask (uint8 0/1) of a cloud-probability map, by the official rule probability > threshold."""
    return (np.asarray(probability) > threshold).astype(np.uint8)


def stitch_scene(
    patches: Mapping[tuple[int, int], np.ndarray],
    gt_shape: tuple[int, int],
    patch_size: int,
    *,
    grid_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Assemble patch predictions into a scene mask by the official 38-Cloud protocol.

    ``patches`` maps 1-based (row, col) grid positions to (patch_size, patch_size) masks. Patch (row, col)
    goes to pixel ((row-1)*PX, (col-1)*PX) of a canvas of nrows*PX x ncols*PX (``grid_shape`` =
    (nrows, ncols), by default the largest row and col present; positions without a patch stay 0), which
    is then cropped centrally to ``gt_shape`` with offset floor((canvas - gt) / 2) per axis.
    """
    if not patches:
        raise ValueError("no patches to stitch")
    positions = list(patches)
    if any(row < 1 or col < 1 for row, col in positions):
        raise ValueError(f"patch rows and cols are 1-based, got {min(positions)}")
    nrows, ncols = grid_shape or (max(r for r, _ in positions), max(c for _, c in positions))
    if any(row > nrows or col > ncols for row, col in positions):
        raise ValueError(f"patch position outside the {nrows}x{ncols} grid")
    first = np.asarray(next(iter(patches.values())))
    canvas = np.zeros((nrows * patch_size, ncols * patch_size), dtype=first.dtype)
    for (row, col), patch in patches.items():
        patch = np.asarray(patch)
        if patch.shape != (patch_size, patch_size):
            raise ValueError(f"patch ({row}, {col}) has shape {patch.shape}, expected {(patch_size, patch_size)}")
        top, left = (row - 1) * patch_size, (col - 1) * patch_size
        canvas[top : top + patch_size, left : left + patch_size] = patch
    gt_height, gt_width = gt_shape
    if gt_height > canvas.shape[0] or gt_width > canvas.shape[1]:
        raise ValueError(f"scene ground truth {tuple(gt_shape)} is larger than the patch canvas {canvas.shape}")
    top, left = (canvas.shape[0] - gt_height) // 2, (canvas.shape[1] - gt_width) // 2
    return canvas[top : top + gt_height, left : left + gt_width]


def scene_scores(pred, gt) -> dict:
    """Official per-scene scores (x100): precision, recall, specificity, iou, overall_accuracy.

    ``pred`` and ``gt`` are 2-D masks of one scene; any non-zero value is cloud (ground truth may be 0/1
    or 0/255).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    stats = confusion_stats(*confusion_counts(torch.from_numpy(pred != 0), torch.from_numpy(gt != 0)).tolist())
    return {
        "precision": 100 * stats["ppv"],
        "recall": 100 * stats["tpr"],
        "specificity": 100 * stats["tnr"],
        "iou": 100 * stats["iou"],
        "overall_accuracy": 100 * stats["accuracy"],
    }


def mean_scene_scores(per_scene: Mapping[str, Mapping[str, float]] | pd.DataFrame) -> dict:
    """Mean of each official score over scenes (the number 38-Cloud papers report).

    ``per_scene`` maps scene id -> ``scene_scores`` dict, or is a DataFrame with one row per scene.
    A scene where a score is undefined (NaN, e.g. recall of a cloud-free scene) is left out of that
    score's mean; ``scenes`` in the result counts all scenes.
    """
    frame = per_scene if isinstance(per_scene, pd.DataFrame) else pd.DataFrame.from_dict(per_scene, orient="index")
    if frame.empty:
        raise ValueError("no scenes to average")
    missing = [key for key in SCENE_SCORE_KEYS if key not in frame.columns]
    if missing:
        raise ValueError(f"per-scene scores lack {missing}")
    means = {key: float(frame[key].astype(float).mean(skipna=True)) for key in SCENE_SCORE_KEYS}
    means["scenes"] = len(frame)
    return means
