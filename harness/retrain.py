"""One final retrain: fit a chosen config with one seed, then score it on the shared test split.

Runs as a Ray task (:func:`harness.cluster.run_tasks`), so it takes and returns plain data. The test
split is scored by :func:`harness.train.evaluate`, the function that scores validation during the
sweep: the same autocast precision and memory format on every device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tifffile

from harness.cluster import data_on_node
from harness.config.train import TrainConfig
from harness.data.cache import open_cache
from harness.data.prepare import PreparedData
from harness.metrics import scene_scores, stitch_scene
from harness.results import RetrainResult
from harness.train import evaluate, fit, make_eval_dataset, make_loader, resolve_device


class _PredictionKeeper:
    """Keeps what a comparison needs of each scored batch.

    The figure's sample patches always; whole test predictions only when scenes are to be stitched.
    """

    def __init__(self, test_rows: np.ndarray, sample_rows: list[int], keep_all: bool) -> None:
        self.test_rows = test_rows
        self.wanted = set(sample_rows)
        self.keep_all = keep_all
        self.samples: dict[int, np.ndarray] = {}
        self.batches: list[np.ndarray] = []
        self.offset = 0

    def __call__(self, pred: np.ndarray) -> None:
        for j in range(pred.shape[0]):
            row = int(self.test_rows[self.offset + j])
            if row in self.wanted:
                self.samples[row] = pred[j]
        if self.keep_all:
            self.batches.append(pred)
        self.offset += pred.shape[0]


def retrain_and_score(
    config: TrainConfig,
    data: PreparedData,
    prepare_args: Mapping[str, Any],
    sample_rows: list[int],
    scene_gts: Mapping[str, str],
) -> RetrainResult:
    """Train ``config`` on the train split, then score the test split; returns a :class:`RetrainResult`."""
    data = data_on_node(data, prepare_args)
    curves: list[dict[str, Any]] = []
    fitted = fit(config, data, lambda metrics, _checkpoint: curves.append(dict(metrics)))
    device = resolve_device(config.device)
    test_rows = data.indices("test")
    keeper = _PredictionKeeper(test_rows, sample_rows, keep_all=bool(scene_gts))
    counts = np.zeros((0, 4), dtype=np.int64)
    if fitted.status == "completed":
        loader = make_loader(
            make_eval_dataset(config, data, "test", fitted.band_stats),
            batch_size=config.eval_batch_size,
            device=device,
            num_workers=config.num_workers,
        )
        scored = evaluate(fitted.model, loader, device, per_image=True, on_predictions=keeper)
        counts = np.asarray(scored["per_image_counts"], dtype=np.int64)
    rows = sorted(keeper.samples)
    ips = [m["train_images_per_second"] for m in curves if m.get("train_images_per_second")]
    return RetrainResult(
        config=config,
        status=fitted.status,
        history=curves,
        per_image_counts=counts,
        test_rows=np.asarray(test_rows, dtype=np.int64),
        sample_rows=np.asarray(rows, dtype=np.int64),
        sample_preds=np.stack([keeper.samples[r] for r in rows]) if rows else np.zeros((0, 1, 1), dtype=np.uint8),
        scene_scores=_score_scenes(data, test_rows, keeper.batches, scene_gts),
        train_seconds=float(sum(m["epoch_seconds"] for m in curves)),
        train_images_per_second=float(np.mean(ips)) if ips else float("nan"),
        device=str(device),
    )


def _score_scenes(
    data: PreparedData, test_rows: np.ndarray, batches: list[np.ndarray], scene_gts: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Official 38-Cloud scene scores for every test scene that has a scene ground truth."""
    if not batches or not scene_gts:
        return []
    preds = np.concatenate(batches)
    cache = open_cache(data.cache_dir)
    table = cache.patches
    test_table = table.iloc[test_rows].reset_index(drop=True)
    out = []
    for scene_id, group in test_table.groupby("scene_id", sort=True):
        if scene_id not in scene_gts:
            continue
        whole = table[table.scene_id == scene_id]
        grid = (int(whole.row.max()), int(whole.col.max()))
        patches = {(int(r.row), int(r.col)): preds[i] for i, r in group.iterrows()}
        gt = tifffile.imread(scene_gts[scene_id])
        pred = stitch_scene(patches, gt.shape, cache.patch_size, grid_shape=grid)
        out.append({"scene_id": scene_id, **scene_scores(pred, gt)})
    return out
