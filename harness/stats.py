"""Statistics for the final comparison: intervals over seeds, paired comparisons, expected best vs budget.

Two layers:

* Primitives on plain arrays (numpy/scipy only): :func:`t_interval`, :func:`paired_t_test`,
  :func:`bootstrap_ci`, :func:`paired_bootstrap_ci`, :func:`wilcoxon_signed_rank`,
  :func:`prob_a_beats_b`, :func:`expected_max_curve`, :func:`expected_cost_curve`, and (from
  :mod:`harness.stats_hierarchical`) :func:`hierarchical_paired_bootstrap`,
  :func:`probability_of_improvement`.
* Table builders that :func:`harness.compare.build_results` calls for ``summary.csv``, ``paired.csv`` and
  ``budget.csv`` of the results directory (format: see :mod:`harness.results`):
  :func:`summary_table`, :func:`paired_table`, :func:`budget_table`.

Conventions shared by every function here:

* The unit of replication of a final comparison is the training seed. Intervals of a mean over seeds
  are Student-t intervals (a percentile bootstrap over 3 seeds is their min-max, which covers the mean
  about 76 % of the time, not 95 %); the headline paired comparison resamples seeds, then scenes, then
  images (:func:`paired_table`). Image-level intervals and tests are kept, and labelled as such.
* NaN marks "undefined"; primitives drop NaNs before computing (pairwise for paired inputs), never
  turning them into 0 or 1. The per-image IoU set is chosen from ground truth alone
  (``harness.metrics.per_image_scores``), so it is the same for every architecture and seed;
  :func:`paired_table` refuses per-image data whose IoU set differs between them.
* Randomness comes only from ``np.random.default_rng(seed)``: the same inputs and seed give the same
  interval, so a report can be rebuilt bit for bit.
* Nothing here imports torch, ray or mlflow. ``harness.metrics.confusion_stats`` (which lives next to
  torch code) is imported lazily, only by :func:`summary_table`.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.stats

from harness.stats_budget import FAILED_TRIALS, budget_table, expected_cost_curve, expected_max_curve
from harness.stats_hierarchical import hierarchical_paired_bootstrap, probability_of_improvement

__all__ = [
    "CLOUD_FREE_KEYS",
    "COST_KEYS",
    "FAILED_TRIALS",
    "PAIRED_COLUMNS",
    "SEED_METRICS",
    "bootstrap_ci",
    "budget_table",
    "expected_cost_curve",
    "expected_max_curve",
    "hierarchical_paired_bootstrap",
    "paired_bootstrap_ci",
    "paired_t_test",
    "paired_table",
    "prob_a_beats_b",
    "probability_of_improvement",
    "summary_table",
    "t_interval",
    "wilcoxon_signed_rank",
]

# Seed-level metrics that summary.csv reports as mean + t-interval over seeds: (column prefix, results.csv key).
SEED_METRICS = (
    ("iou", "iou"),
    ("per_image_iou", "per_image_iou"),
    ("f1", "f1"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced_accuracy"),
)
# Per-seed counts of results.csv about the per-image IoU set and the cloud-free images left out of it
# (harness.metrics.cloud_free_counts); summary_table pools them.
CLOUD_FREE_KEYS = ("iou_images", "cloud_free_images", "cloud_free_images_with_fp", "cloud_free_fp", "cloud_free_tn")
# Per-architecture costs summary.csv carries (NaN where not given).
COST_KEYS = (
    "params",
    "flops_per_patch",
    "sweep_device_hours",
    "n_trials",
    "n_trials_completed",
    "n_trials_stopped",
    "n_trials_failed",
)
# Columns of paired.csv, in order (see paired_table).
PAIRED_COLUMNS = [
    "arch_a",
    "arch_b",
    "mean_iou_a",
    "mean_iou_b",
    "iou_diff_mean",
    "iou_diff_ci_low",
    "iou_diff_ci_high",
    "p_a_better",
    "p_a_better_ci_low",
    "p_a_better_ci_high",
    "seeds_a_higher",
    "seed_t_p",
    "image_ci_low",
    "image_ci_high",
    "image_wilcoxon_p",
    "n_images",
    "n_scenes",
    "n_seeds",
]

# Bootstrap replicates are drawn in chunks of about this many numbers, so that 10,000 replicates of
# thousands of per-image values do not need gigabytes at once.
_CHUNK_ELEMENTS = 2_000_000


def _finite(values) -> np.ndarray:
    """1-D float array of ``values`` without NaNs."""
    v = np.asarray(values, dtype=float).ravel()
    return v[~np.isnan(v)]


def _apply_stat(stat: Callable, samples: np.ndarray) -> np.ndarray:
    """``stat`` of each row of ``samples``; vectorised when ``stat`` takes ``axis`` (np.mean, np.median)."""
    try:
        out = np.asarray(stat(samples, axis=1), dtype=float)
        if out.shape == (samples.shape[0],):
            return out
    except TypeError:
        pass
    return np.array([stat(row) for row in samples], dtype=float)


def bootstrap_ci(
    values,
    *,
    stat: Callable = np.mean,
    n_boot: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of ``stat(values)``.

    Returns ``(estimate, low, high)`` where ``estimate = stat(values)`` on the data itself and
    ``low``/``high`` are the ``alpha/2`` and ``1 - alpha/2`` quantiles of ``stat`` over ``n_boot``
    resamples drawn with replacement. NaNs are dropped first. With fewer than two values there is no
    spread to resample: the result is ``(value, nan, nan)`` (``(nan, nan, nan)`` when empty).

    Not for a handful of values: over 3 seeds the percentile interval is their min-max (coverage about
    76 % instead of 95 %); use :func:`t_interval` for means over seeds.
    """
    v = _finite(values)
    if v.size == 0:
        return (float("nan"), float("nan"), float("nan"))
    estimate = float(stat(v))
    if v.size < 2:
        return (estimate, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // v.size)
    boot = []
    for start in range(0, n_boot, rows_per_chunk):
        rows = min(rows_per_chunk, n_boot - start)
        boot.append(_apply_stat(stat, v[rng.integers(0, v.size, size=(rows, v.size))]))
    low, high = np.quantile(np.concatenate(boot), [alpha / 2, 1 - alpha / 2])
    return (estimate, float(low), float(high))


def t_interval(values, *, alpha: float = 0.05) -> tuple[float, float, float]:
    """Student-t ``1 - alpha`` interval of the mean: ``mean ± t(1 - alpha/2, n - 1) * sd / sqrt(n)``.

    ``sd`` is the sample standard deviation (ddof=1). The interval for a mean over a few seeds: it
    assumes roughly normal seed-to-seed variation and widens honestly as n shrinks (t = 4.30 for 3
    values, 2.78 for 5). NaNs are dropped; fewer than two values give ``(mean, nan, nan)`` (``(nan,
    nan, nan)`` when empty); equal values give a zero-width interval. Returns ``(mean, low, high)``.
    """
    v = _finite(values)
    if v.size == 0:
        return (float("nan"), float("nan"), float("nan"))
    mean = float(v.mean())
    if v.size < 2:
        return (mean, float("nan"), float("nan"))
    half = float(scipy.stats.t.ppf(1 - alpha / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return (mean, mean - half, mean + half)


def paired_t_test(a, b) -> float:
    """Two-sided paired t-test p-value of ``mean(a - b) = 0`` (e.g. per-seed scores of two architectures).

    Pairs with a NaN are dropped. Fewer than two pairs give NaN; differences that are all equal give 1.0
    when they are all zero and 0.0 otherwise (no spread: scipy would return NaN).
    """
    d = _paired_differences(a, b)
    if d.size < 2:
        return float("nan")
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    return float(scipy.stats.ttest_1samp(d, 0.0).pvalue)


def _paired_differences(a, b) -> np.ndarray:
    """``a - b`` for paired samples, dropping every pair in which either side is NaN."""
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    return _finite(a - b)


def paired_bootstrap_ci(
    a, b, *, n_boot: int = 10_000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Bootstrap interval of the mean paired difference ``mean(a - b)``.

    Pairs (not the two samples independently) are resampled, so whatever the pair shares (the same test
    image, the same seed) cancels out. Returns ``(mean_difference, low, high)``; identical inputs give
    ``(0.0, 0.0, 0.0)``. Pairs with a NaN on either side are dropped.
    """
    return bootstrap_ci(_paired_differences(a, b), n_boot=n_boot, alpha=alpha, seed=seed)


def wilcoxon_signed_rank(a, b) -> float:
    """Two-sided Wilcoxon signed-rank p-value for paired samples ``a`` and ``b``.

    Uses ``scipy.stats.wilcoxon`` on ``a - b`` with zero differences discarded (``zero_method="wilcox"``)
    and scipy's automatic choice between the exact and the normal-approximation distribution.
    Documented edge cases, none of which raise or warn: when every difference is zero (or there are no
    finite pairs) the samples do not differ and the p-value is ``1.0``.
    """
    d = _paired_differences(a, b)
    if d.size == 0 or not np.any(d):
        return 1.0
    with warnings.catch_warnings():
        # scipy warns about ties/zeros and small samples; the p-value is still the right one to report.
        warnings.simplefilter("ignore")
        return float(scipy.stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def prob_a_beats_b(a_scores, b_scores, *, paired: bool = True) -> float:
    """Probability that ``a`` scores higher than ``b``, ties counted as one half.

    ``paired=True`` (the final comparison, whose seeds are paired: same seed, same data order):
    the fraction of positions ``i`` with ``a[i] > b[i]``. ``paired=False``: over all ``len(a) * len(b)``
    combinations (the Mann-Whitney probability of superiority). NaN pairs/values are dropped; no data
    gives NaN. Example: ``a = [0.9, 0.8, 0.7]``, ``b = [0.8, 0.8, 0.9]`` -> ``(1 + 0.5 + 0) / 3 = 0.5``.
    """
    if paired:
        d = _paired_differences(a_scores, b_scores)
        wins = (d > 0) + 0.5 * (d == 0)
    else:
        a, b = _finite(a_scores), _finite(b_scores)
        diff = a[:, None] - b[None, :]
        wins = ((diff > 0) + 0.5 * (diff == 0)).ravel()
    return float(np.mean(wins)) if wins.size else float("nan")


# ---------------------------------------------------------------------------------------------------
# Table builders for the results directory (harness.compare builds it from what these return).
# ---------------------------------------------------------------------------------------------------


def _sum_or_nan(group: pd.DataFrame, key: str) -> float:
    return float(group[key].sum()) if key in group.columns else float("nan")


def _ratio_or_nan(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def summary_table(
    results: pd.DataFrame,
    *,
    costs: Mapping[str, Mapping[str, float]] | None = None,
    alpha: float = 0.05,
    confusion_stats: Callable[..., dict] | None = None,
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
    if confusion_stats is None:
        from harness.metrics import confusion_stats  # lazy: metrics lives next to torch code
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
    """``paired.csv``: one row per architecture pair ``(a, b)`` (default: every pair in order of appearance).

    The images are the per-image IoU set: the rows of ``per_image`` with a defined ``iou``, which must
    be the same images for every shared seed of both architectures (ValueError otherwise: choose the
    set from ground truth, ``harness.metrics.per_image_scores``). Columns (:data:`PAIRED_COLUMNS`):

    * ``mean_iou_a/b``: mean per-image IoU over the shared seeds and the set; ``iou_diff_mean`` = a - b.
    * Headline, seeds as the unit: ``iou_diff_ci_low/high``, the hierarchical bootstrap interval of the
      difference (seeds, then scenes from ``scene_id``, then images within scenes;
      :func:`hierarchical_paired_bootstrap`), and ``p_a_better`` with ``p_a_better_ci_low/high``, the
      probability of improvement P(A > B) from the same replicates. ``seeds_a_higher``: number of
      shared seeds whose mean per-image IoU is higher for a (ties one half); ``seed_t_p``: paired
      t-test over those per-seed means.
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
                "p_a_better": h["p_improve"],
                "p_a_better_ci_low": h["p_improve_ci_low"],
                "p_a_better_ci_high": h["p_improve_ci_high"],
                "seeds_a_higher": float(np.sum((seed_a > seed_b) + 0.5 * (seed_a == seed_b))),
                "seed_t_p": paired_t_test(seed_a, seed_b),
                "image_ci_low": image_low,
                "image_ci_high": image_high,
                "image_wilcoxon_p": wilcoxon_signed_rank(image_a, image_b),
                "n_images": len(names),
                "n_scenes": h["n_scenes"],
                "n_seeds": len(seeds),
            }
        )
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)
