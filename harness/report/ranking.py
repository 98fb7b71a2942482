"""The report's K-way section: ranking, rank intervals, each against the best, profile, Pareto set.

The ranking with rank intervals, each architecture against the best, the performance profile over test
scenes, and the cost-accuracy Pareto set with its figure.

Presentation of :mod:`harness.stats.ranking` over the results directory's ``per_image.csv`` (the per-image
IoU set, paired by seed and image) and ``summary.csv`` (costs). Shown from three architectures on: with
two, the paired comparison above already says everything these would. No torch here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from harness.report.format import fmt_p, fmt_rate, fmt_signed, is_missing, label, md_table
from harness.report.style import arch_colours, save
from harness.results import Results
from harness.stats.ranking import compare_with_best, performance_profile, ranking

#: From this many architectures on, the report has the K-way section.
MIN_ARCHS = 3
#: Cost axes of the Pareto set: summary.csv column -> what the report calls it.
COST_AXES = {"flops_per_patch": "GFLOPs per 384 px patch", "sweep_device_hours": "sweep device-hours"}
# Line styles that tell apart architectures whose palette colour repeats (more than 8 of them).
_DASHES = ["-", "--", ":", "-."]


def score_matrices(res: Results) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per architecture its (seeds, images) per-image IoU, and the scene of each image column.

    Only the seeds and images every architecture has are kept, so the matrices are paired.
    """
    img = res.per_image[res.per_image.iou.notna()] if res.per_image is not None else pd.DataFrame()
    archs = [a for a in res.archs if len(img) and (img.arch == a).any()]
    if not archs:
        return {}, np.array([])
    seeds = sorted(set.intersection(*(set(img.seed[img.arch == a]) for a in archs)))
    names = sorted(set.intersection(*(set(img.name[img.arch == a]) for a in archs)))
    scores = {}
    for arch in archs:
        frame = img[img.arch == arch].pivot_table(index="seed", columns="name", values="iou", aggfunc="first")
        scores[arch] = frame.reindex(index=seeds, columns=names).to_numpy(float)
    scenes = img.drop_duplicates("name").set_index("name")
    strata = scenes["scene_id"].reindex(names).to_numpy() if "scene_id" in scenes else np.array(names)
    return scores, strata


def scene_means(scores: dict[str, np.ndarray], strata: np.ndarray) -> dict[str, np.ndarray]:
    """Per architecture its mean per-image IoU on each test scene (over seeds and the scene's images)."""
    scenes = sorted(set(strata))
    return {arch: np.array([s[:, strata == scene].mean() for scene in scenes]) for arch, s in scores.items()}


def pareto_set(points: dict[str, tuple[float, float]]) -> list[str]:
    """The architectures no other one dominates (at most as costly, at least as accurate, better in one).

    ``points``: arch -> (cost, score); an architecture with a NaN cost or score is left out.
    """
    finite = {a: p for a, p in points.items() if np.isfinite(p[0]) and np.isfinite(p[1])}
    return [
        a
        for a, (cost, score) in finite.items()
        if not any(c <= cost and s >= score and (c < cost or s > score) for b, (c, s) in finite.items() if b != a)
    ]


def kway_table(res: Results, *, alpha: float = 0.05) -> pd.DataFrame:
    """One row per architecture, best first: its rank, the best-set and Pareto memberships.

    Columns: ``ranking``'s (rank, rank interval, best set), ``compare_with_best``'s prefixed ``vs_best_``
    (difference to the best, simultaneous interval, Holm p-value), the costs and ``pareto_<cost>``.
    """
    scores, _ = score_matrices(res)
    if len(scores) < MIN_ARCHS:
        return pd.DataFrame()
    ranked = pd.DataFrame(ranking(scores, alpha=alpha)).set_index("arch")
    against = pd.DataFrame(compare_with_best(scores, alpha=alpha))
    against = against.set_index("arch") if len(against) else against
    summary = res.summary.set_index("arch")
    rows = []
    for arch, r in ranked.iterrows():
        row = {"arch": arch, **r.to_dict()}
        if arch in against.index:
            row.update({f"vs_best_{k}": v for k, v in against.loc[arch].to_dict().items()})
        for key in COST_AXES:
            row[key] = float(summary.loc[arch, key]) if key in summary.columns and arch in summary.index else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    for key in COST_AXES:
        front = pareto_set({r.arch: (r[key], r["mean"]) for _, r in table.iterrows()})
        table[f"pareto_{key}"] = table.arch.isin(front)
    return table


def ranking_section(res: Results, figures: dict[str, Path], *, alpha: float = 0.05) -> list[str]:
    """The K-way section's Markdown lines (none below :data:`MIN_ARCHS` architectures)."""
    table = kway_table(res, alpha=alpha)
    if table.empty:
        return []
    scores, strata = score_matrices(res)
    n_seeds, n_images = next(iter(scores.values())).shape
    k = len(table)
    best = table.arch.iloc[0]
    best_set = [label(a) for a in table.arch[table.in_best_set]]
    rows = []
    for _, r in table.iterrows():
        if r.arch == best:
            versus, p = "best", ""
        else:
            versus = f"{fmt_signed(-r.vs_best_diff)} [{fmt_signed(-r.vs_best_high)}, {fmt_signed(-r.vs_best_low)}]"
            p = fmt_p(r.vs_best_p_holm)
        rank_interval = f"{int(r.rank_low)}–{int(r.rank_high)}" if np.isfinite(r.rank_low) else "n/a"
        rows.append(
            [
                str(int(r["rank"])),
                label(r.arch),
                fmt_rate(r["mean"]),
                rank_interval,
                versus,
                p,
                "yes" if r.in_best_set else "",
                "n/a" if is_missing(r.flops_per_patch) else f"{r.flops_per_patch / 1e9:.1f}",
                "n/a" if is_missing(r.sweep_device_hours) else f"{r.sweep_device_hours:.3g}",
                ", ".join(n for key, n in (("flops_per_patch", "FLOPs"), ("sweep_device_hours", "hours"))
                          if r[f"pareto_{key}"]),
            ]
        )  # fmt: skip
    header = [
        "rank",
        "architecture",
        "mean per-image IoU",
        f"{100 * (1 - alpha):.0f}% rank interval",
        "vs best: difference [simultaneous interval]",
        "p (Holm)",
        "best set",
        "GFLOPs/patch",
        "sweep device-hours",
        "Pareto",
    ]
    fronts = {name: [label(a) for a in table.arch[table[f"pareto_{key}"]]] for key, name in COST_AXES.items()}
    lines = [
        f"## Ranking of the {k} architectures",
        "",
        f"Ranked by mean per-image IoU over the {n_seeds} paired seeds and the {n_images} images of the per-image "
        f"IoU set. Rank intervals are simultaneous at {100 * (1 - alpha):.0f}% for all {k} ranks (Klein, Wright & "
        f"Wrigley 2020; Mogstad et al. 2024): from all {k * (k - 1) // 2} pairwise Student-t intervals over seeds "
        "(the headline's estimand: this test set, new training seeds), Bonferroni-adjusted; an architecture's "
        "rank is bounded below by the ones an interval puts above it. Against the best: the difference "
        f"with Bonferroni-simultaneous intervals over the {k - 1} comparisons and Holm-adjusted paired-t "
        "p-values. `benchmarks/stats/RESULTS.md` measures these intervals' coverage by simulation.",
        "",
        md_table(header, rows),
        "",
        f"**Not distinguishable from the best ({label(best)})**: {', '.join(best_set)}"
        + (" — every architecture: this comparison cannot rank them." if len(best_set) == k else ".")
        + " The set is read from the rank intervals, which hold for all pairs at once; Holm's test against the "
        "best alone has fewer comparisons to pay for, so it can separate an architecture the set still keeps.",
        "",
        *(f"- Pareto set, mean per-image IoU against {name}: {', '.join(front) or 'n/a'}." for name, front in
          fronts.items()),
        "",
    ]  # fmt: skip
    if "pareto" in figures:
        lines += [f"![Cost-accuracy Pareto]({figures['pareto'].relative_to(res.root).as_posix()})", ""]
    if "profile" in figures:
        n_scenes = len(set(strata))
        lines += [
            f"Performance profile (Dolan & Moré 2002) over the {n_scenes} test scenes: for each architecture the "
            "share of scenes on which its mean per-image IoU is within τ of the best architecture's on that scene.",
            "",
            f"![Performance profile]({figures['profile'].relative_to(res.root).as_posix()})",
            "",
        ]
    return lines


def plot_pareto(res: Results, path: Path, *, alpha: float = 0.05) -> Path | None:
    """Mean per-image IoU (seed interval) against GFLOPs per patch and sweep device-hours, with fronts.

    None when there are fewer than :data:`MIN_ARCHS` architectures.
    """
    table = kway_table(res, alpha=alpha)
    if table.empty:
        return None
    summary = res.summary.set_index("arch")
    colours = arch_colours(list(table.arch))
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    for ax, (key, name) in zip(fig.subplots(1, 2), COST_AXES.items(), strict=True):
        scale = 1e9 if key == "flops_per_patch" else 1.0
        for _, r in table.iterrows():
            x = r[key] / scale
            low = summary.loc[r.arch, "per_image_iou_ci_low"] if "per_image_iou_ci_low" in summary else np.nan
            high = summary.loc[r.arch, "per_image_iou_ci_high"] if "per_image_iou_ci_high" in summary else np.nan
            y = r["mean"]
            err = [[y - low], [high - y]] if np.isfinite(low) and np.isfinite(high) else None
            marker = "o" if r[f"pareto_{key}"] else "s"
            ax.errorbar(x, y, yerr=err, fmt=marker, color=colours[r.arch], capsize=3, ms=7)
            # Labels beside the points, not in a legend: readable at K = 10, where colours repeat.
            ax.annotate(label(r.arch), (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8)
        front = table[table[f"pareto_{key}"]].sort_values(key)
        ax.step(front[key] / scale, front["mean"], where="post", color="0.4", lw=1, ls="--", label="Pareto front")
        costs = (table[key] / scale).to_numpy(float)
        costs = costs[np.isfinite(costs) & (costs > 0)]
        if costs.size and costs.max() / costs.min() >= 10:  # costs spanning decades: a log axis
            ax.set_xscale("log")
            # Plain numbers on the log axis (matplotlib's 10^x minor labels collide over a narrow range).
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            name += " (log scale)"
        ax.set_xlabel(name)
        ax.set_ylabel("mean per-image IoU (95% interval over seeds)")
        ax.legend(loc="lower right")
    fig.suptitle("Cost against accuracy: circles are on the Pareto front, squares are dominated")
    return save(fig, path)


def plot_profile(res: Results, path: Path) -> Path | None:
    """The performance profile over test scenes; None below :data:`MIN_ARCHS` architectures."""
    scores, strata = score_matrices(res)
    if len(scores) < MIN_ARCHS:
        return None
    per_scene = scene_means(scores, strata)
    stacked = np.vstack(list(per_scene.values()))
    gap = float(np.nanmax(np.nanmax(stacked, axis=0) - stacked)) if stacked.size else 0.0
    taus = np.linspace(0.0, max(gap, 1e-6) * 1.05, 200)
    profile = performance_profile(per_scene, taus)
    archs = list(per_scene)
    colours = arch_colours(archs)
    fig = Figure(figsize=(9, 4.6), layout="constrained")
    ax = fig.subplots()
    for i, arch in enumerate(archs):
        ax.step(taus, profile[arch], where="post", color=colours[arch], ls=_DASHES[(i // 8) % 4], label=label(arch))
    ax.set_xlabel("τ: IoU below the best architecture on the scene")
    ax.set_ylabel("share of test scenes within τ of the best")
    ax.set_ylim(-0.02, 1.02)
    # Beside the axes, not on them: at K = 10 a legend inside covers the curves it names.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(f"Performance profile over {stacked.shape[1]} test scenes")
    return save(fig, path)
