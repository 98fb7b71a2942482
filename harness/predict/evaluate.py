"""The official 38-Cloud test protocol: predict every test patch, stitch each scene, score it as ``evaluation.m`` does.

38-Cloud's test set has no patch ground truth, only whole scenes (``Entire_scene_gts/``). The dataset's own
evaluation saves each patch's cloud probability as an 8-bit image, thresholds it at 12/255, places patch
(row, col) at ((row-1)*384, (col-1)*384) of a canvas for its scene, crops the canvas centrally to the scene
ground truth's size and scores precision, recall, specificity, Jaccard and overall accuracy (x100) per
scene, then their means over the scenes. The 12/255 threshold suits Cloud-Net's sigmoid outputs; a network
trained here with cross-entropy may put every pixel's cloud probability above it (its softmax rarely falls
below 0.05), so ``threshold`` can be changed, and the stamp then says so. :func:`evaluate_tree` does exactly that
(:func:`harness.metrics.stitch_scene`, :func:`harness.metrics.scene_scores`), with the probabilities given by a
function of the patches, so the protocol itself is tested on the ground truth (100 on every score). Every
result is stamped with its protocol (:data:`PROTOCOL`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
import torch
from tqdm import tqdm

from harness.data.layout import PatchFiles, discover_patches, find_scene_gts
from harness.errors import InputError
from harness.metrics import OFFICIAL_THRESHOLD, binarise, mean_scene_scores, scene_scores, stitch_scene
from harness.predict.infer import cloud_probability
from harness.predict.model import TrainedNetwork
from harness.predict.patches import read_patches

#: The five scores, as 38-Cloud papers name them (``harness.metrics.scene_scores`` calls Jaccard ``iou``).
SCORES = ("precision", "recall", "specificity", "jaccard", "overall_accuracy")
PROTOCOL = {
    "name": "38-Cloud official protocol",
    "unit": "scene",
    "probability": "saved as 8-bit (round(p * 255)), cloud where > 12/255",
    "threshold": OFFICIAL_THRESHOLD,
    "border_patches": "every test patch of the scene, empty ones included, stitched; canvas cropped centrally",
    "scores": "x100 per scene, then the mean over scenes",
}
#: ``patches -> (N, H, W) cloud probabilities in [0, 1]``, one per patch, in order.
ProbabilityOf = Callable[[Sequence[PatchFiles]], np.ndarray]


def official_mask(probability: np.ndarray, threshold: float = OFFICIAL_THRESHOLD) -> np.ndarray:
    """The official binarisation: the probability as the 8-bit image evaluation.m reads, then > ``threshold``."""
    saved = np.round(np.clip(probability, 0, 1) * 255).astype(np.uint8)
    return binarise(saved / 255.0, threshold)


def protocol(threshold: float = OFFICIAL_THRESHOLD) -> dict[str, Any]:
    """The protocol stamp of scores made with ``threshold`` (the official one unless it differs from 12/255)."""
    if threshold == OFFICIAL_THRESHOLD:
        return dict(PROTOCOL)
    return PROTOCOL | {
        "name": "38-Cloud official protocol, threshold changed",
        "probability": f"saved as 8-bit (round(p * 255)), cloud where > {threshold:g} (official: 12/255)",
        "threshold": threshold,
    }


def evaluate_tree(
    root: str | Path, probability_of: ProbabilityOf, *, threshold: float = OFFICIAL_THRESHOLD, progress: bool = True
) -> dict[str, Any]:
    """Score every test scene of a 38-Cloud tree (each needs its scene ground truth): protocol, per_scene, mean."""
    root = Path(root)
    patches = discover_patches(root, subset="test")
    if not patches:
        raise InputError(f"--data {root}: no 38-Cloud test patches (38-Cloud_test/test_red/ ...) under it")
    gts = find_scene_gts(root)
    by_scene: dict[str, list[PatchFiles]] = {}
    for p in patches:
        by_scene.setdefault(p.patch.scene_id, []).append(p)
    missing = sorted(set(by_scene) - set(gts))
    if missing:
        raise InputError(
            f"--data {root}: test scene(s) without a scene ground truth (Entire_scene_gts/edited_corrected_gts_"
            f"<SceneID>.TIF): {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
        )
    per_scene = []
    for scene_id in tqdm(sorted(by_scene), desc="evaluate", unit="scene", disable=not progress):
        scene_patches = by_scene[scene_id]
        probabilities = probability_of(scene_patches)
        masks = {
            (p.patch.row, p.patch.col): official_mask(prob, threshold)
            for p, prob in zip(scene_patches, probabilities, strict=True)
        }
        gt = tifffile.imread(gts[scene_id])
        grid = (max(p.patch.row for p in scene_patches), max(p.patch.col for p in scene_patches))
        pred = stitch_scene(masks, gt.shape, probabilities.shape[-1], grid_shape=grid)
        per_scene.append({"scene_id": scene_id, "patches": len(scene_patches), **scene_scores(pred, gt)})
    # 38-Cloud's mean over scenes (a score undefined on a scene, e.g. recall without cloud, left out of it).
    mean = mean_scene_scores(pd.DataFrame(per_scene))
    return {
        "protocol": protocol(threshold),
        "per_scene": [_named(row) for row in per_scene],
        "mean": _named(mean),
    }


def _named(scores: dict[str, Any]) -> dict[str, Any]:
    """Scores under 38-Cloud's names: ``iou`` is Jaccard there."""
    return {("jaccard" if k == "iou" else k): v for k, v in scores.items()}


def network_probability(network: TrainedNetwork, device: torch.device, batch_size: int = 16) -> ProbabilityOf:
    """The network's cloud probability of each patch (read and preprocessed as the network was trained)."""

    def probability_of(patches: Sequence[PatchFiles]) -> np.ndarray:
        out = []
        for start in range(0, len(patches), batch_size):
            images = read_patches(list(patches[start : start + batch_size]))
            batch = np.stack([network.preprocessing.apply(image) for image in images])
            out.append(cloud_probability(network.model, batch, device))
        return np.concatenate(out)

    return probability_of


__all__ = ["PROTOCOL", "SCORES", "evaluate_tree", "network_probability", "official_mask", "protocol"]
