"""Statistics for the final comparison: bootstrap intervals, paired tests, expected best vs budget.

Two layers:

* Primitives on plain arrays (numpy/scipy only): :func:`bootstrap_ci`, :func:`paired_bootstrap_ci`,
  :func:`wilcoxon_signed_rank`, :func:`prob_a_beats_b`, :func:`expected_max_curve`,
  :func:`expected_cost_curve`.
* Table builders that :func:`harness.compare.build_results` calls for ``summary.csv``, ``paired.csv`` and
  ``budget.csv`` of the results directory (format: see :mod:`harness.results`):
  :func:`summary_table`, :func:`paired_table`, :func:`budget_table`.

Conventions shared by every function here:

* NaN marks "undefined" (e.g. the IoU of an image with no cloud that was predicted cloud-free); NaNs are
  dropped before a statistic is computed (pairwise for paired inputs), never silently turned into 0 or 1.
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

# Seed-level metrics that summary.csv reports as mean + bootstrap CI: (column prefix, confusion_stats key).
SEED_METRICS = (
    ("iou", "iou"),
    ("f1", "f1"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced_accuracy"),
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
    "wilcoxon_p",
    "p_a_beats_b",
    "n_images",
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

    With very few values (e.g. 3 seeds) the percentile interval is narrow-biased; it is still the honest
    summary of "how much do these seeds disagree", and the reports say how many values it rests on.
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


def expected_max_curve(scores, n_max: int | None = None, *, return_std: bool = False):
    """Expected best validation score after ``n = 1..n_max`` trials (Dodge et al. 2019, "Show Your Work").

    The ``N`` observed trial scores are treated as the distribution of one trial's outcome; ``n`` trials
    are ``n`` draws with replacement. With sorted scores ``v(1) <= ... <= v(N)``,
    ``P(max_n = v(i)) = (i/N)^n - ((i-1)/N)^n`` and ``E[max_n] = sum_i v(i) * P(max_n = v(i))``.
    ``n_max`` defaults to ``N`` (it may exceed ``N``: draws are with replacement). The curve is
    non-decreasing, starts at the mean and tends to the best observed score. NaN scores are dropped.

    Returns ``E[max_n]`` for ``n = 1..n_max`` (float array of length ``n_max``); with
    ``return_std=True`` also the standard deviation of ``max_n`` (the band of Dodge et al.'s figures).
    """
    v = np.sort(_finite(scores))
    if v.size == 0:
        raise ValueError("expected_max_curve needs at least one finite score")
    n_max = v.size if n_max is None else int(n_max)
    i = np.arange(1, v.size + 1) / v.size
    n = np.arange(1, n_max + 1)[:, None]
    weights = i[None, :] ** n - (i[None, :] - 1 / v.size) ** n  # (n_max, N); each row sums to 1
    mean = weights @ v
    if not return_std:
        return mean
    var = np.clip(weights @ v**2 - mean**2, 0.0, None)  # clip rounding below zero
    return mean, np.sqrt(var)


def expected_cost_curve(costs, n_max: int | None = None) -> np.ndarray:
    """Expected cumulative cost (e.g. device-hours) of ``n = 1..n_max`` trials: ``n * mean(costs)``.

    The companion x-axis of :func:`expected_max_curve`: the same with-replacement model makes each draw
    cost one observed trial's cost on average, so ``n`` draws cost ``n`` times the mean. Trials that
    ASHA stopped early are cheap and count with their real (short) cost, which is what a budget buys.
    """
    c = _finite(costs)
    if c.size == 0:
        raise ValueError("expected_cost_curve needs at least one finite cost")
    n_max = c.size if n_max is None else int(n_max)
    return np.arange(1, n_max + 1) * float(c.mean())


# ---------------------------------------------------------------------------------------------------
# Table builders for the results directory (harness.compare builds it from what these return).
# ---------------------------------------------------------------------------------------------------


def summary_table(
    results: pd.DataFrame,
    *,
    costs: Mapping[str, Mapping[str, float]] | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
    confusion_stats: Callable[..., dict] | None = None,
) -> pd.DataFrame:
    """``summary.csv``: one row per architecture, from ``results.csv`` rows (one per arch and seed).

    Columns: ``arch, n_seeds``; the counts summed over seeds and every ``confusion_stats`` value of those
    pooled counts (``tp fn fp tn p n pp pn total tpr ... f1 mcc``); for each seed-level metric in
    :data:`SEED_METRICS` the mean over seeds and the bootstrap interval (``iou_mean, iou_ci_low,
    iou_ci_high``, ... where a seed's ``iou`` is its pooled ``iou``); ``train_seconds_mean``,
    ``images_per_second_mean``; then the per-arch ``costs`` (``params, flops_per_patch,
    sweep_device_hours, n_trials``), NaN where not given. Architectures keep their order of appearance.
    """
    if confusion_stats is None:
        from harness.metrics import confusion_stats  # lazy: metrics lives next to torch code
    rows = []
    for arch, group in results.groupby("arch", sort=False):
        pooled = {k: int(group[k].sum()) for k in ("tp", "fn", "fp", "tn")}
        row = {"arch": arch, "n_seeds": int(group["seed"].nunique())}
        row.update(confusion_stats(**pooled))
        for prefix, key in SEED_METRICS:
            est, low, high = bootstrap_ci(group[key].to_numpy(float), n_boot=n_boot, seed=seed)
            row.update({f"{prefix}_mean": est, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high})
        row["train_seconds_mean"] = float(group["train_seconds"].mean())
        row["images_per_second_mean"] = float(group["train_images_per_second"].mean())
        arch_costs = (costs or {}).get(arch, {})
        for key in ("params", "flops_per_patch", "sweep_device_hours", "n_trials"):
            row[key] = arch_costs.get(key, float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def paired_table(
    results: pd.DataFrame,
    per_image: pd.DataFrame,
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """``paired.csv``: one row per architecture pair ``(a, b)`` (default: every pair in order of appearance).

    Unit of pairing: the test image. Each image's IoU is first averaged over the seeds both
    architectures share (NaN IoUs ignored), so seeds do not masquerade as independent images; the
    per-image differences ``a - b`` then give ``iou_diff_mean`` with a paired bootstrap interval
    (``iou_diff_ci_low/high``) and a Wilcoxon signed-rank ``wilcoxon_p``. Seed-to-seed luck is
    reported separately as ``p_a_beats_b``: the fraction of shared seeds whose pooled IoU
    (``iou`` in results.csv) is higher for ``a`` (ties one half). Also ``mean_iou_a/b`` (mean
    per-image IoU over the images in the comparison), ``n_images`` (images with a defined IoU for
    both) and ``n_seeds`` (shared seeds).
    """
    archs = list(dict.fromkeys(results["arch"]))
    pairs = list(itertools.combinations(archs, 2)) if pairs is None else list(pairs)
    rows = []
    for a, b in pairs:
        seeds = sorted(set(results.loc[results.arch == a, "seed"]) & set(results.loc[results.arch == b, "seed"]))
        pooled = (
            results[results.seed.isin(seeds)]
            .pivot_table(index="seed", columns="arch", values="iou", aggfunc="first")
            .reindex(columns=[a, b])
        )
        img = per_image[per_image.arch.isin([a, b]) & per_image.seed.isin(seeds)]
        img = img.pivot_table(index="name", columns="arch", values="iou", aggfunc="mean")  # skips NaN
        img = img.reindex(columns=[a, b]).dropna()
        ia, ib = img[a].to_numpy(float), img[b].to_numpy(float)
        diff, low, high = paired_bootstrap_ci(ia, ib, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "arch_a": a,
                "arch_b": b,
                "mean_iou_a": float(ia.mean()) if ia.size else float("nan"),
                "mean_iou_b": float(ib.mean()) if ib.size else float("nan"),
                "iou_diff_mean": diff,
                "iou_diff_ci_low": low,
                "iou_diff_ci_high": high,
                "wilcoxon_p": wilcoxon_signed_rank(ia, ib),
                "p_a_beats_b": prob_a_beats_b(pooled[a].to_numpy(float), pooled[b].to_numpy(float)),
                "n_images": int(ia.size),
                "n_seeds": len(seeds),
            }
        )
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def budget_table(trials: pd.DataFrame, *, n_max: int | None = None) -> pd.DataFrame:
    """``budget.csv`` from one row per sweep trial: columns ``arch``, ``val_iou``, ``device_hours``.

    ``val_iou`` is the validation IoU a trial ended with (ASHA-stopped trials included, with the
    score they had when stopped); ``device_hours`` what it cost. Returns per arch and ``n = 1..n_max`` (default:
    that arch's number of trials): ``arch, n_trials, expected_best_val_iou, expected_best_val_iou_sd,
    device_hours`` (:func:`expected_max_curve`, :func:`expected_cost_curve`).
    """
    parts = []
    for arch, group in trials.groupby("arch", sort=False):
        mean, sd = expected_max_curve(group["val_iou"], n_max, return_std=True)
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
