"""One final retrain: fit a chosen config with one seed, then score it on the shared test split.

Runs as a Ray task (:func:`harness.cluster.run_tasks`), so it takes and returns plain data. The test
split is scored by :func:`harness.training.loop.evaluate`, the function that scores validation during the
sweep: the same autocast precision and memory format on every device.

Scene scores follow 38-Cloud's ``evaluation.m``: every patch of each test scene is predicted, whatever
the training filter left in the split (``split.nonempty_only`` drops partly empty border patches, which
still hold scene pixels), then stitched and cropped to the scene ground truth. One scene is predicted
and stitched at a time, so memory holds one scene's masks, never the whole test set's. Patches are
labelled by argmax (cloud probability > 0.5), as every other test number is, not by 38-Cloud's 12/255
threshold.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from harness.cluster import data_on_node
from harness.config.train import TrainConfig
from harness.data.cache import open_cache
from harness.data.dataset import CloudPatchDataset
from harness.data.prepare import PreparedData
from harness.metrics import scene_scores, stitch_scene
from harness.results import SCORING_VERSION, RetrainResult
from harness.training.loop import evaluate, fit, make_eval_dataset, make_loader, predict, resolve_device

#: Predicted masks (n, H, W) uint8 of the given cache rows, in their order.
PredictRows = Callable[[np.ndarray], np.ndarray]


class _PredictionKeeper:
    """Keeps the figure's sample patches out of each scored batch (and nothing else)."""

    def __init__(self, test_rows: np.ndarray, sample_rows: list[int]) -> None:
        self.test_rows = test_rows
        self.wanted = set(sample_rows)
        self.samples: dict[int, np.ndarray] = {}
        self.offset = 0

    def __call__(self, pred: np.ndarray) -> None:
        for j in range(pred.shape[0]):
            row = int(self.test_rows[self.offset + j])
            if row in self.wanted:
                self.samples[row] = pred[j]
        self.offset += pred.shape[0]


def retrain_and_score(
    config: TrainConfig,
    data: PreparedData,
    prepare_args: Mapping[str, Any],
    sample_rows: list[int],
    scene_gts: Mapping[str, str],
    official_test: str | None = None,
) -> RetrainResult:
    """Train ``config`` on the train split, then score the test split; returns a :class:`RetrainResult`.

    ``official_test`` (a folder holding 38-Cloud_test/): also score the network there by the official protocol.
    """
    data = data_on_node(data, prepare_args)
    curves: list[dict[str, Any]] = []
    fitted = fit(config, data, lambda metrics, _checkpoint: curves.append(dict(metrics)))
    device = resolve_device(config.device)
    test_rows = data.indices("test")
    keeper = _PredictionKeeper(test_rows, sample_rows)
    counts = np.zeros((0, 4), dtype=np.int64)
    test_ips = float("nan")
    scenes: list[dict[str, Any]] = []
    if fitted.status == "completed":
        loader = make_loader(
            make_eval_dataset(config, data, "test", fitted.band_stats),
            batch_size=config.eval_batch_size,
            device=device,
            num_workers=config.num_workers,
        )
        started = time.perf_counter()
        scored = evaluate(fitted.model, loader, device, per_image=True, on_predictions=keeper)
        # Inference speed on the run's device: the test split through the network (loading included, as
        # a user masking patches would see it); the counts it returns have synchronised the device.
        test_ips = len(test_rows) / max(time.perf_counter() - started, 1e-9)
        counts = np.asarray(scored["per_image_counts"], dtype=np.int64)
        if scene_gts:

            def predict_rows(rows: np.ndarray) -> np.ndarray:
                # The test split's scaling (band_stats from the train split), no augmentation.
                dataset = CloudPatchDataset(
                    data.cache_dir,
                    rows,
                    normalisation=config.normalisation,
                    band_stats=fitted.band_stats if config.normalisation == "standardise" else None,
                    seed=config.seed,
                )
                return predict(fitted.model, dataset, device, config.eval_batch_size)

            scenes = score_scenes(data.cache_dir, test_rows, scene_gts, predict_rows)
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
        scene_scores=scenes,
        scoring_version=SCORING_VERSION,
        train_seconds=float(sum(m["epoch_seconds"] for m in curves)),
        train_images_per_second=float(np.mean(ips)) if ips else float("nan"),
        test_images_per_second=float(test_ips),
        device=str(device),
        model_state={k: v.detach().cpu() for k, v in fitted.model.state_dict().items()},
        band_stats=None if fitted.band_stats is None else [[float(v) for v in s] for s in fitted.band_stats],
        official_scores=official(fitted, config, device, official_test) if official_test else None,
    )


def official(fitted, config: TrainConfig, device, root: str) -> list[dict[str, Any]] | None:
    """The 38-Cloud official protocol's per-scene scores of the fitted network on the test tree at ``root``."""
    from harness.predict.evaluate import evaluate_tree, network_probability
    from harness.predict.model import TrainedNetwork
    from harness.predict.preprocessing import Preprocessing

    if fitted.status != "completed":
        return None
    preprocessing = Preprocessing.from_training(config.normalisation, fitted.band_stats)
    network = TrainedNetwork(fitted.model.eval(), preprocessing, config, Path(root))
    scores = evaluate_tree(root, network_probability(network, device, config.eval_batch_size), progress=False)
    return scores["per_scene"]


def score_scenes(
    cache_dir: str, test_rows: np.ndarray, scene_gts: Mapping[str, str], predict_rows: PredictRows
) -> list[dict[str, Any]]:
    """38-Cloud scene scores (x100) of every test scene that has a scene ground truth, one scene at a time.

    A test scene is one with a patch among ``test_rows``; all of its patches in the cache are predicted
    by ``predict_rows`` (cache rows -> masks), including those the split left out, then stitched on the
    scene's full grid and cropped to its ground truth (:func:`harness.metrics.stitch_scene`). Test
    scenes without a ground truth in ``scene_gts`` are not scored here; the comparison lists them.
    Each row: ``scene_id``, ``patches`` (patches stitched), ``test_patches`` (of those, in the test
    split), then :func:`harness.metrics.scene_scores`.
    """
    cache = open_cache(cache_dir)
    table = cache.patches
    scene_of = table.scene_id.to_numpy()
    test_rows = np.asarray(test_rows, dtype=np.int64)
    out = []
    for scene_id in sorted(set(scene_of[test_rows])):
        if scene_id not in scene_gts:
            continue
        rows = np.flatnonzero(scene_of == scene_id)
        whole = table.iloc[rows]
        preds = predict_rows(rows)
        patches = {(int(r), int(c)): preds[j] for j, (r, c) in enumerate(zip(whole.row, whole.col, strict=True))}
        gt = tifffile.imread(scene_gts[scene_id])
        grid = (int(whole.row.max()), int(whole.col.max()))
        pred = stitch_scene(patches, gt.shape, cache.patch_size, grid_shape=grid)
        in_test = int(np.isin(rows, test_rows).sum())
        out.append({"scene_id": scene_id, "patches": len(rows), "test_patches": in_test, **scene_scores(pred, gt)})
    return out
