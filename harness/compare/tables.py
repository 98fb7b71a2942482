"""The results of a final comparison, built from its retrains and the sweeps' trial tables.

:func:`build_results` turns what :func:`harness.compare.driver.run_compare` gathered (one
:class:`~harness.results.RetrainResult` per architecture and seed, one
:class:`~harness.sweep.result.SweepResult` per architecture) into every table of the results directory
(format: :mod:`harness.results`). Every number comes from confusion counts (:mod:`harness.metrics`) and
:mod:`harness.stats`: :func:`summary_table`, :func:`paired_table` and :func:`budget_table` build
``summary.csv``, ``paired.csv`` and ``budget.csv``. Rules applied here, once, for every architecture, seed,
table and figure:

* the per-image IoU set is chosen from ground truth alone: images whose ground truth has cloud
  (:func:`harness.metrics.per_image_scores`); cloud-free ones are scored by their false positives;
* every retrain must have scored the same test images (ValueError otherwise);
* scene scores come from the retrains (every patch of each test scene, argmax labels;
  :func:`harness.compare.retrain.score_scenes`); test scenes without a scene ground truth are listed in
  ``meta.json`` and warned about, never skipped silently;
* the tuning-budget curve counts every sweep trial, failed ones at IoU 0.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.config import Benchmark
from harness.data.cache import open_cache
from harness.data.layout import find_scene_gts
from harness.data.prepare import PreparedData, synthetic_dir
from harness.metrics import cloud_free_counts, confusion_stats, per_image_scores
from harness.models import count_parameters, flops_per_patch
from harness.results import COST_KEYS, PAIRED_COLUMNS, SCORING_VERSION, SEED_METRICS, Results, RetrainResult
from harness.stats import (
    expected_cost_curve,
    expected_max_curve,
    hierarchical_paired_bootstrap,
    paired_bootstrap_ci,
    paired_t_test,
    t_interval,
    wilcoxon_signed_rank,
)
from harness.stats.arrays import win_tie_loss
from harness.sweep.result import SweepResult
from harness.training.loop import model_from_config

log = logging.getLogger(__name__)

#: Sweep trial endings that produced no usable model: budget_table counts them at the floor score.
FAILED_TRIALS = ("diverged", "error")


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
                "test_images_per_second": r.test_images_per_second,
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
        summary=summary_table(results, costs=costs),
        paired=paired_table(results, per_image, n_boot=bench.compare.bootstrap_samples),
        per_image=per_image,
        curves=pd.DataFrame(curve_rows),
        budget=budget_table(trials),
        scene_scores=pd.DataFrame(scene_rows) if scene_rows else None,
        samples=_samples(bench, data, retrains, sample_rows),
        official_scores=_official_scores(bench, retrains, order),
    )


def _official_scores(bench: Benchmark, retrains, order) -> pd.DataFrame | None:
    """official_scores.csv: each retrain's 38-Cloud official protocol scores per scene (``compare.official_test``)."""
    if not bench.compare.official_test:
        return None
    rows = [{"arch": a, "seed": s, **row} for a, s in order for row in (retrains[(a, s)].official_scores or [])]
    return pd.DataFrame(rows) if rows else None


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
            "n_trials_failed": sum(e in FAILED_TRIALS for e in ended),
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


def _sum_or_nan(group: pd.DataFrame, key: str) -> float:
    return float(group[key].sum()) if key in group.columns else float("nan")


def _ratio_or_nan(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def summary_table(
    results: pd.DataFrame,
    *,
    costs: Mapping[str, Mapping[str, float]] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """``summary.csv``: one row per architecture, from ``results.csv`` rows (one per arch and seed).

    Columns: ``arch, n_seeds``; the counts summed over seeds and every ``confusion_stats`` value of those
    pooled counts (``tp fn fp tn p n pp pn total tpr ... f1 mcc``); for each seed-level metric in
    :data:`SEED_METRICS` the mean over seeds and its Student-t ``1 - alpha`` interval over seeds (cut to [0, 1])
    (``iou_mean, iou_ci_low, iou_ci_high``, ... where a seed's ``iou`` is its pooled ``iou`` and its
    ``per_image_iou`` its mean per-image IoU; NaN when results.csv lacks the column, no interval for
    one seed); ``train_seconds_mean``, ``images_per_second_mean``; the per-image IoU set and the
    cloud-free images (:data:`CLOUD_FREE_KEYS`): ``iou_images`` and ``cloud_free_images`` (per seed),
    ``cloud_free_fp_image_share`` (share of cloud-free images with at least one false-positive pixel,
    over all seeds) and ``cloud_free_fpr`` (FP / (FP + TN) over their pixels, pooled over seeds); then
    the per-arch ``costs`` (:data:`COST_KEYS`), NaN where not given. Architectures keep their order.
    """
    rows = []
    for arch, group in results.groupby("arch", sort=False):
        pooled = {k: int(group[k].sum()) for k in ("tp", "fn", "fp", "tn")}
        row = {"arch": arch, "n_seeds": int(group["seed"].nunique())}
        row.update(confusion_stats(**pooled))
        for prefix, key in SEED_METRICS:
            values = group[key].to_numpy(float) if key in group.columns else []
            est, low, high = t_interval(values, alpha=alpha)
            # Every seed metric is a rate in [0, 1]: a t-interval reaching past it (few, spread-out seeds)
            # is cut at the bound rather than printing an impossible IoU of 1.09.
            low, high = max(low, 0.0), min(high, 1.0)
            row.update({f"{prefix}_mean": est, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high})
        row["train_seconds_mean"] = float(group["train_seconds"].mean())
        row["images_per_second_mean"] = float(group["train_images_per_second"].mean())
        row["inference_images_per_second_mean"] = (
            float(group["test_images_per_second"].mean()) if "test_images_per_second" in group else float("nan")
        )
        seeds = row["n_seeds"]
        row["iou_images"] = _sum_or_nan(group, "iou_images") / seeds
        row["cloud_free_images"] = _sum_or_nan(group, "cloud_free_images") / seeds
        row["cloud_free_fp_image_share"] = _ratio_or_nan(
            _sum_or_nan(group, "cloud_free_images_with_fp"), _sum_or_nan(group, "cloud_free_images")
        )
        fp = _sum_or_nan(group, "cloud_free_fp")
        row["cloud_free_fpr"] = _ratio_or_nan(fp, fp + _sum_or_nan(group, "cloud_free_tn"))
        arch_costs = (costs or {}).get(arch, {})
        for key in COST_KEYS:
            row[key] = arch_costs.get(key, float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def _nan_row(a: str, b: str, n_seeds: int) -> dict:
    row = dict.fromkeys(PAIRED_COLUMNS, float("nan"))
    row.update(arch_a=a, arch_b=b, n_images=0, n_scenes=0, n_seeds=n_seeds)
    return row


def _score_matrix(img: pd.DataFrame, arch: str, seeds: list, names: list) -> np.ndarray:
    """(seeds, images) per-image IoU of one architecture."""
    frame = img[img.arch == arch].pivot(index="seed", columns="name", values="iou")
    return frame.reindex(index=seeds, columns=names).to_numpy(float)


def paired_table(
    results: pd.DataFrame,
    per_image: pd.DataFrame,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """``paired.csv``: one row per architecture pair, oriented so that ``a`` is the one with the higher mean.

    ``pairs`` (default: every pair in order of appearance) names the pairs; each row is written as
    ``a - b`` with ``a`` the architecture whose mean per-image IoU is higher (ties keep the given
    order), so every difference the report prints, in the headline, the table and the figure, is
    positive-for-the-winner and reads the same way. The images are the per-image IoU set: the rows of
    ``per_image`` with a defined ``iou``, which must be the same images for every shared seed of both
    architectures (ValueError otherwise: choose the set from ground truth,
    ``harness.metrics.per_image_scores``). Columns (:data:`PAIRED_COLUMNS`):

    * ``mean_iou_a/b``: mean per-image IoU over the shared seeds and the set; ``iou_diff_mean`` = a - b.
    * Headline, for "this test set, new training seeds" (:mod:`harness.stats.paired`):
      ``iou_diff_ci_low/high``, the Student-t interval over the per-seed mean differences;
      ``detectable_diff``, the smallest difference that design detects with power 0.8; ``p_a_better``
      (the probability of improvement P(A > B), per scene, averaged over scenes) with
      ``p_a_better_ci_low/high`` (Wilson bound, n = seeds). ``seeds_a_higher``: number of shared seeds
      whose mean per-image IoU is higher for a (ties one half); ``seed_t_p``: paired t-test over those
      per-seed means (the test that matches the headline interval).
    * For "new scenes": ``new_scenes_ci_low/high`` and ``new_scenes_detectable_diff`` (seeds and scenes
      as crossed random factors, scenes from ``scene_id``); the report shows them with at least
      ``MIN_SCENES_FOR_NEW_SCENES`` test scenes.
    * ``boot_ci_low/high``: the percentile spread of the hierarchical bootstrap (seeds, then scenes,
      then images), rliable's interval; it undercovers with few seeds (``benchmarks/stats/RESULTS.md``).
    * Image-level, images treated as independent (seed-to-seed variation ignored): each image's IoU is
      averaged over seeds, then ``image_ci_low/high`` is a paired bootstrap interval of the mean
      difference and ``image_wilcoxon_p`` a Wilcoxon signed-rank p-value.
    * ``n_images``, ``n_scenes``, ``n_seeds``: what the comparison rests on. Without a ``scene_id``
      column every image is its own scene.
    """
    archs = list(dict.fromkeys(results["arch"]))
    pairs = list(itertools.combinations(archs, 2)) if pairs is None else list(pairs)
    rows = []
    for a, b in pairs:
        seeds = sorted(set(results.loc[results.arch == a, "seed"]) & set(results.loc[results.arch == b, "seed"]))
        img = per_image[per_image.arch.isin([a, b]) & per_image.seed.isin(seeds) & per_image.iou.notna()]
        if img.empty:
            rows.append(_nan_row(a, b, len(seeds)))
            continue
        sets = img.groupby(["arch", "seed"])["name"].agg(frozenset)
        if len(sets) != 2 * len(seeds) or len(set(sets)) != 1:
            raise ValueError(
                f"{a} vs {b}: the per-image IoU set differs between architectures or seeds; it must be chosen "
                "from ground truth alone (harness.metrics.per_image_scores)"
            )
        names = sorted(sets.iloc[0])
        scenes = img.drop_duplicates("name").set_index("name")
        strata = scenes["scene_id"].reindex(names).to_numpy() if "scene_id" in scenes else np.array(names)
        score_a, score_b = _score_matrix(img, a, seeds, names), _score_matrix(img, b, seeds, names)
        if score_b.mean() > score_a.mean():  # the winner first: one direction for every difference
            (a, score_a), (b, score_b) = (b, score_b), (a, score_a)
        h = hierarchical_paired_bootstrap(score_a, score_b, strata, n_boot=n_boot, seed=seed)
        seed_a, seed_b = score_a.mean(axis=1), score_b.mean(axis=1)
        image_a, image_b = score_a.mean(axis=0), score_b.mean(axis=0)
        _, image_low, image_high = paired_bootstrap_ci(image_a, image_b, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "arch_a": a,
                "arch_b": b,
                "mean_iou_a": float(score_a.mean()),
                "mean_iou_b": float(score_b.mean()),
                "iou_diff_mean": h["diff"],
                "iou_diff_ci_low": h["diff_ci_low"],
                "iou_diff_ci_high": h["diff_ci_high"],
                "detectable_diff": h["detectable_diff"],
                "p_a_better": h["p_improve"],
                "p_a_better_ci_low": h["p_improve_ci_low"],
                "p_a_better_ci_high": h["p_improve_ci_high"],
                "seeds_a_higher": float(np.sum(win_tie_loss(seed_a - seed_b))),
                "seed_t_p": paired_t_test(seed_a, seed_b),
                "new_scenes_ci_low": h["new_scenes_ci_low"],
                "new_scenes_ci_high": h["new_scenes_ci_high"],
                "new_scenes_detectable_diff": h["new_scenes_detectable_diff"],
                "boot_ci_low": h["boot_diff_low"],
                "boot_ci_high": h["boot_diff_high"],
                "image_ci_low": image_low,
                "image_ci_high": image_high,
                "image_wilcoxon_p": wilcoxon_signed_rank(image_a, image_b),
                "n_images": len(names),
                "n_scenes": h["n_scenes"],
                "n_seeds": len(seeds),
            }
        )
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def budget_table(trials: pd.DataFrame, *, n_max: int | None = None, floor: float = 0.0) -> pd.DataFrame:
    """``budget.csv`` from one row per sweep trial: ``arch``, ``val_iou``, ``device_hours``, ``stopped_by``.

    Every trial is one draw of the budget. ``val_iou`` is the validation IoU the trial ended with: a
    completed trial's final score, an ASHA-stopped trial's score *when stopped* (it would likely have
    risen had it run on). A trial that diverged or failed (``stopped_by`` in :data:`FAILED_TRIALS`, or
    a NaN ``val_iou``) produced no usable model: it counts as a draw at ``floor`` (IoU 0 by default)
    rather than being dropped, which would flatter an architecture that diverges. ``stopped_by`` is
    optional (without it only NaN scores count as failed). ``device_hours`` is what the trial cost.

    Returns per arch and ``n = 1..n_max`` (default: that arch's number of trials): ``arch, n_trials,
    expected_best_val_iou, expected_best_val_iou_sd, device_hours`` (:func:`expected_max_curve`,
    :func:`expected_cost_curve`). Near ``n = N`` the estimator is biased low: draws with replacement
    repeat trials, so it stays below the best trial found.
    """
    parts = []
    for arch, group in trials.groupby("arch", sort=False):
        scores = group["val_iou"].to_numpy(float)
        failed = ~np.isfinite(scores)
        if "stopped_by" in group.columns:
            failed |= group["stopped_by"].isin(FAILED_TRIALS).to_numpy()
        mean, sd = expected_max_curve(np.where(failed, floor, scores), n_max, return_std=True)
        parts.append(
            pd.DataFrame(
                {
                    "arch": arch,
                    "n_trials": np.arange(1, mean.size + 1),
                    "expected_best_val_iou": mean,
                    "expected_best_val_iou_sd": sd,
                    "device_hours": expected_cost_curve(group["device_hours"], mean.size),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)
