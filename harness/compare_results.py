"""The results of a final comparison, built from its retrains and the sweeps' trial tables.

:func:`build_results` turns what :func:`harness.compare.run_compare` gathered (one
:class:`~harness.results.RetrainResult` per architecture and seed, one
:class:`~harness.sweep_result.SweepResult` per architecture) into every table of the results directory
(format: :mod:`harness.results`). Every number comes from confusion counts (:mod:`harness.metrics`) and
:mod:`harness.stats`. Rules applied here, once, for every architecture, seed, table and figure:

* the per-image IoU set is chosen from ground truth alone: images whose ground truth has cloud
  (:func:`harness.metrics.per_image_scores`); cloud-free ones are scored by their false positives;
* every retrain must have scored the same test images (ValueError otherwise);
* scene scores come from the retrains (every patch of each test scene, argmax labels;
  :func:`harness.retrain.score_scenes`); test scenes without a scene ground truth are listed in
  ``meta.json`` and warned about, never skipped silently;
* the tuning-budget curve counts every sweep trial, failed ones at IoU 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import stats
from harness.config import Benchmark
from harness.data.cache import open_cache
from harness.data.layout import find_scene_gts
from harness.data.prepare import PreparedData, synthetic_dir
from harness.metrics import cloud_free_counts, confusion_stats, per_image_scores
from harness.models import count_parameters, flops_per_patch
from harness.results import SCORING_VERSION, Results, RetrainResult
from harness.sweep_result import SweepResult
from harness.train import model_from_config

log = logging.getLogger(__name__)


def source_root(bench: Benchmark) -> Path:
    """The dataset tree the cache was ingested from (the synthetic folder for synthetic data)."""
    if bench.data.root:
        return Path(bench.data.root)
    return synthetic_dir(bench.data.cache_dir, bench.data.synthetic or {})


def build_results(
    root: Path,
    bench: Benchmark,
    data: PreparedData,
    sweeps: Mapping[str, SweepResult],
    retrains: Mapping[tuple[str, int], RetrainResult],
    sample_rows: list[int],
    meta: dict[str, Any],
) -> Results:
    """Every table of the results directory, computed from confusion counts and the sweeps' trial tables."""
    table = open_cache(data.cache_dir).patches
    order = sorted(retrains, key=lambda key: (bench.architectures.index(key[0]), key[1]))
    first = np.asarray(retrains[order[0]].test_rows)
    for key in order:
        if not np.array_equal(np.asarray(retrains[key].test_rows), first):
            raise ValueError(f"retrain {key[0]}/seed{key[1]} scored other test images than {order[0][0]}")
    seed_rows, image_frames, curve_rows = [], [], []
    for arch, seed in order:
        r = retrains[(arch, seed)]
        counts = np.asarray(r.per_image_counts, dtype=np.int64)
        scores = per_image_scores(counts)
        iou_set = scores["iou"].dropna()
        seed_rows.append(
            {
                "arch": arch,
                "seed": seed,
                **confusion_stats(*(int(x) for x in counts.sum(axis=0))),
                "per_image_iou": float(iou_set.mean()) if len(iou_set) else float("nan"),
                **cloud_free_counts(counts),
                "train_seconds": r.train_seconds,
                "train_images_per_second": r.train_images_per_second,
            }
        )
        rows = np.asarray(r.test_rows)
        image_frames.append(
            pd.DataFrame(
                {
                    "arch": arch,
                    "seed": seed,
                    "name": table.name.to_numpy()[rows],
                    "scene_id": table.scene_id.to_numpy()[rows],
                    "tp": counts[:, 0],
                    "fn": counts[:, 1],
                    "fp": counts[:, 2],
                    "tn": counts[:, 3],
                    **{k: scores[k].to_numpy() for k in ("cloud_free", "iou", "f1", "accuracy", "fpr")},
                }
            )
        )
        curve_rows += [
            {"arch": arch, "seed": seed, **{k: m.get(k) for k in ("epoch", "train_loss", "val_loss", "val_iou")}}
            for m in r.history
        ]
    scene_rows, protocol = _scene_scores(bench, data, retrains, order)
    costs, trials = _sweep_costs(bench, sweeps)
    results = pd.DataFrame(seed_rows)
    per_image = pd.concat(image_frames, ignore_index=True)
    return Results(
        root=root,
        meta={**meta, "scene_protocol": protocol},
        results=results,
        summary=stats.summary_table(results, costs=costs),
        paired=stats.paired_table(results, per_image, n_boot=bench.compare.bootstrap_samples),
        per_image=per_image,
        curves=pd.DataFrame(curve_rows),
        budget=stats.budget_table(trials),
        scene_scores=pd.DataFrame(scene_rows) if scene_rows else None,
        samples=_samples(bench, data, retrains, sample_rows),
    )


def _scene_scores(bench: Benchmark, data: PreparedData, retrains, order) -> tuple[list[dict], dict[str, Any]]:
    """scene_scores.csv rows and meta.json's ``scene_protocol``: what was scored, and what was not."""
    if bench.split.kind != "scene":
        reason = "a random patch split has no whole test scenes (their other patches were trained on)"
        return [], {"not_scored": reason}
    table = open_cache(data.cache_dir).patches
    test_scenes = sorted(set(table.scene_id.to_numpy()[data.indices("test")]))
    gts = find_scene_gts(source_root(bench))
    scored = [s for s in test_scenes if s in gts]
    without = [s for s in test_scenes if s not in gts]
    if without:
        log.warning("%d of %d test scenes have no scene ground truth and get no scene score: %s",
                    len(without), len(test_scenes), ", ".join(without))  # fmt: skip
    stale = [f"{a}/seed{s}" for a, s in order if scored and retrains[(a, s)].scoring_version < SCORING_VERSION]
    if stale:
        log.warning("scene scores of retrains reused from an older harness left out: %s", ", ".join(stale))
    rows = [
        {"arch": a, "seed": s, **row}
        for a, s in order
        if retrains[(a, s)].scoring_version >= SCORING_VERSION
        for row in retrains[(a, s)].scene_scores
    ]
    protocol = {
        "binarisation": "argmax",
        "patches": "every patch of each test scene",
        "scored_scenes": scored,
        "scenes_without_gt": without,
        "stale_retrains": stale,
    }
    return rows, protocol


def _sweep_costs(bench: Benchmark, sweeps: Mapping[str, SweepResult]) -> tuple[dict, pd.DataFrame]:
    """Per-architecture costs for summary.csv, and every sweep trial for the budget curve."""
    # GPU-hours on GPU trials, CPU-core-hours otherwise.
    per_trial_devices = bench.resources.gpu if bench.resources.gpu > 0 else bench.resources.cpu
    costs, trial_rows = {}, []
    for arch in bench.architectures:
        sweep = sweeps[arch]
        hours = [t.seconds / 3600 * per_trial_devices for t in sweep.trials]
        model = model_from_config(sweep.best_config)
        ended = [t.stopped_by for t in sweep.trials]
        costs[arch] = {
            "params": count_parameters(model),
            "flops_per_patch": flops_per_patch(model),
            "sweep_device_hours": float(sum(hours)),
            "n_trials": len(sweep.trials),
            "n_trials_completed": ended.count("completed"),
            "n_trials_stopped": ended.count("asha"),
            "n_trials_failed": sum(e in stats.FAILED_TRIALS for e in ended),
        }
        # Every trial, failed ones included: budget_table counts them at the floor score.
        trial_rows += [
            {"arch": arch, "val_iou": t.val_iou, "device_hours": h, "stopped_by": t.stopped_by}
            for t, h in zip(sweep.trials, hours, strict=True)
        ]
    return costs, pd.DataFrame(trial_rows)


def _samples(bench, data, retrains, sample_rows) -> dict[str, np.ndarray]:
    """The figure grid's patches: RGB, ground truth and each architecture's prediction (first seed)."""
    cache = open_cache(data.cache_dir)
    seed = bench.compare.seeds[0]
    rows = sorted(sample_rows)
    arrays = {
        "rgb": np.stack([np.moveaxis(cache.images[r][:3], 0, -1) for r in rows]).astype(np.float32) / 65535.0,
        "gt": np.stack([cache.masks[r] for r in rows]).astype(np.uint8),
        "names": np.array([str(cache.patches.name.iloc[r]) for r in rows]),
        "seed": np.array(seed),
    }
    for arch in bench.architectures:
        r = retrains[(arch, seed)]
        lookup = {int(row): i for i, row in enumerate(np.asarray(r.sample_rows))}
        arrays[f"pred_{arch}"] = np.stack([np.asarray(r.sample_preds)[lookup[row]] for row in rows])
    return arrays
