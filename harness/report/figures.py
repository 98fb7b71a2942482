"""The report's figures: matplotlib only, drawn from the frames of a :class:`~harness.results.Results`.

Every ``plot_*`` function takes the data it draws plus the architectures in legend order and writes one
PNG. Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot), so rendering needs no
display and leaves no global figure state behind.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from harness.report.audit import plot_protocol_audit
from harness.report.format import fmt_rate, fmt_signed, is_missing, label
from harness.report.ranking import plot_pareto, plot_profile
from harness.report.style import CLEAR, CLOUD, FALSE_NEG, FALSE_POS, STYLE, arch_colours, save
from harness.results import Results, has_seed_level_intervals

MAX_SAMPLE_ROWS = 8
# Figure key (as render_markdown links it) -> PNG file name in the figures directory.
FIGURE_FILES = {
    "curves": "curves.png",
    "samples": "samples.png",
    "per_image": "per_image_iou.png",
    "budget": "budget.png",
    # The protocol audit's figure keeps the file name reports have always linked.
    "protocol_audit": "fairness.png",
    # From three architectures on (harness.report.ranking).
    "pareto": "pareto.png",
    "profile": "profile.png",
}


def render_figures(res: Results, fig_dir: Path) -> dict[str, Path]:
    """Draw every figure whose input ``res`` holds into ``fig_dir``; return figure key -> PNG path."""
    fig_dir.mkdir(exist_ok=True)
    paths = {key: fig_dir / name for key, name in FIGURE_FILES.items()}
    figures: dict[str, Path] = {}
    with matplotlib.rc_context(STYLE):
        if res.curves is not None and len(res.curves):
            figures["curves"] = plot_curves(res.curves, res.archs, paths["curves"])
        if res.samples is not None:
            figures["samples"] = plot_samples(res.samples, res.archs, res.per_image, paths["samples"])
        if res.per_image is not None and len(res.per_image):
            figures["per_image"] = plot_per_image(res.per_image, res.paired, res.archs, paths["per_image"])
        if res.budget is not None and len(res.budget):
            figures["budget"] = plot_budget(res.budget, res.archs, paths["budget"])
        if res.protocol_audit is not None and len(res.protocol_audit.curves):
            figures["protocol_audit"] = plot_protocol_audit(res.protocol_audit, res.archs, paths["protocol_audit"])
        for key, plot in (("pareto", plot_pareto), ("profile", plot_profile)):
            drawn = plot(res, paths[key])
            if drawn is not None:
                figures[key] = drawn
    return figures


def plot_curves(curves: pd.DataFrame, archs: list[str], path: Path) -> Path:
    """Plot loss (train solid, validation dashed) and validation IoU per epoch: seed mean, min-max band."""
    colours = arch_colours(archs)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_iou = fig.subplots(1, 2)
    curves = curves.replace([np.inf, -np.inf], np.nan)  # an infinite loss is "diverged", not a number to average
    n_seeds = curves.groupby("arch")["seed"].nunique()
    for arch in archs:
        group = curves[curves.arch == arch]
        if group.empty:
            continue
        by_epoch = group.groupby("epoch")
        for ax, column, style in (
            (ax_loss, "train_loss", "-"),
            (ax_loss, "val_loss", "--"),
            (ax_iou, "val_iou", "-"),
        ):
            agg = by_epoch[column].agg(["mean", "min", "max"])
            ax.plot(agg.index, agg["mean"], style, color=colours[arch], lw=2)
            ax.fill_between(agg.index, agg["min"], agg["max"], color=colours[arch], alpha=0.18, lw=0)
    arch_handles = [
        Line2D([], [], color=colours[a], lw=2, label=f"{label(a)} ({n_seeds.get(a, 0)} seeds)") for a in archs
    ]
    style_handles = [
        Line2D([], [], color="0.3", ls="-", label="training"),
        Line2D([], [], color="0.3", ls="--", label="validation"),
    ]
    ax_loss.legend(handles=arch_handles + style_handles, frameon=False)
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="loss")
    # A diverged run's loss can explode: cap the axis at the per-epoch median over seeds (robust to one
    # bad seed) so the other curves stay readable, and say so.
    medians = curves.groupby(["arch", "epoch"])[["train_loss", "val_loss"]].median().to_numpy(float)
    medians = medians[np.isfinite(medians)]
    if medians.size and np.nanmax(curves[["train_loss", "val_loss"]].to_numpy(float)) > medians.max() * 1.5:
        ax_loss.set_ylim(min(0.0, medians.min()), medians.max() * 1.5)
        ax_loss.set_title("Loss (axis capped: a diverging run leaves the top)")
    ax_iou.set(title="Validation IoU", xlabel="epoch", ylabel="IoU (cloud)")
    ax_iou.legend(handles=arch_handles, frameon=False, loc="lower right")
    fig.suptitle("Training curves of the final retrains (line: mean over seeds; band: min–max)")
    return save(fig, path)


def _display_rgb(rgb: np.ndarray) -> np.ndarray:
    """Stretch contrast to the 1st-99th percentile over all sample patches, so they stay comparable."""
    rgb = rgb.astype(float) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    low, high = np.nanpercentile(rgb, [1, 99])
    return np.clip((rgb - low) / max(high - low, 1e-6), 0, 1)


def _short_name(name: str) -> str:
    # Patch names end in a long Landsat scene id; break before it so row labels stay narrow.
    head, sep, tail = str(name).partition("_LC08")
    return f"{head}\nLC08{tail[:12]}…" if sep else str(name)


def plot_samples(samples: dict, archs: list[str], per_image: pd.DataFrame | None, path: Path) -> Path:
    """Plot test patches: true colour | ground truth | per arch: predicted mask, error map (FP/FN)."""
    archs = [a for a in archs if f"pred_{a}" in samples]
    rgb = _display_rgb(samples["rgb"][:MAX_SAMPLE_ROWS])
    gt = samples["gt"][: len(rgb)] > 0
    names = [str(n) for n in samples.get("names", np.arange(len(rgb)))]
    seed = int(samples["seed"]) if "seed" in samples else None
    iou = {}
    if per_image is not None and seed is not None:
        rows = per_image[per_image.seed == seed]
        iou = {(r.arch, r.name): r.iou for r in rows.itertuples()}
    mask_cmap = ListedColormap([CLEAR, CLOUD])
    error_cmap = ListedColormap([CLEAR, CLOUD, FALSE_POS, FALSE_NEG])  # TN, TP, FP, FN

    titles = ["true colour", "ground truth"]
    for arch in archs:
        titles += [f"{label(arch)} mask", f"{label(arch)} errors"]
    k, ncols = len(rgb), len(titles)
    fig = Figure(figsize=(1.75 * ncols + 0.9, 1.75 * k + 1.1), layout="constrained")
    axes = np.atleast_2d(fig.subplots(k, ncols, squeeze=False))
    for i in range(k):
        panels = [(rgb[i], None), (gt[i], mask_cmap)]
        for arch in archs:
            pred = samples[f"pred_{arch}"][i] > 0
            # 0 TN, 1 TP, 2 FP, 3 FN
            error = np.where(pred & gt[i], 1, np.where(pred & ~gt[i], 2, np.where(~pred & gt[i], 3, 0)))
            panels += [(pred, mask_cmap), (error, error_cmap)]
        for j, (image, cmap) in enumerate(panels):
            ax = axes[i, j]
            vmax = 3 if cmap is error_cmap else 1
            ax.imshow(image, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if i == 0:
                ax.set_title(titles[j], fontsize=10)
            if cmap is error_cmap:
                arch = archs[(j - 2) // 2]
                value = iou.get((arch, names[i]))
                if not is_missing(value):
                    ax.text(
                        0.03,
                        0.04,
                        f"IoU {value:.3f}",
                        transform=ax.transAxes,
                        fontsize=8,
                        color="black",
                        bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1.5},
                    )
        axes[i, 0].set_ylabel(_short_name(names[i]), fontsize=7, rotation=0, ha="right", va="center")
    legend = [
        Patch(color=CLOUD, label="cloud / true positive"),
        Patch(color=CLEAR, label="clear / true negative"),
        Patch(color=FALSE_POS, label="false positive (cloud predicted, clear)"),
        Patch(color=FALSE_NEG, label="false negative (cloud missed)"),
    ]
    fig.legend(handles=legend, loc="outside lower center", ncols=4, frameon=False, fontsize=9)
    seed_text = f" (models of seed {seed})" if seed is not None else ""
    fig.suptitle(f"Test patches{seed_text}")
    return save(fig, path)


def per_image_means(per_image: pd.DataFrame) -> pd.DataFrame:
    """Return per-image IoU averaged over seeds, one column per arch, over the per-image IoU set.

    The set (images whose ground truth has cloud; cloud-free ones have NaN IoU in per_image.csv) is
    the same for every architecture and seed, so every mean here is over the same images and seeds.
    """
    return per_image.pivot_table(index="name", columns="arch", values="iou", aggfunc="mean")


def plot_per_image(per_image: pd.DataFrame, paired: pd.DataFrame, archs: list[str], path: Path) -> Path:
    """Plot per-image IoU (seed mean): violin + points per arch; per pair a scatter and the differences."""
    colours = arch_colours(archs)
    means = per_image_means(per_image)
    archs = [a for a in archs if a in means.columns]
    pairs = [r for r in paired.itertuples() if r.arch_a in archs and r.arch_b in archs][:3]
    interval_name = "this test set, new seeds" if has_seed_level_intervals(paired) else "hierarchical"
    rows = max(1, len(pairs))
    fig = Figure(figsize=(13.5 if pairs else 5.5, 4.3 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 3, width_ratios=[1.15, 1, 1]) if pairs else fig.add_gridspec(1, 1)
    _violins(fig.add_subplot(grid[:, 0]), means, archs, colours)
    for i, r in enumerate(pairs):
        _paired_scatter(fig.add_subplot(grid[i, 1]), means, r.arch_a, r.arch_b, colours)
        _difference_histogram(fig.add_subplot(grid[i, 2]), means, r, colours, interval_name)
    return save(fig, path)


def _violins(ax, means: pd.DataFrame, archs: list[str], colours: dict[str, str]) -> None:
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    data = [means[a].dropna().to_numpy() for a in archs]
    nonempty = [i for i, d in enumerate(data) if d.size]
    if nonempty:
        parts = ax.violinplot([data[i] for i in nonempty], nonempty, widths=0.8, showextrema=False)
        for body, i in zip(parts["bodies"], nonempty, strict=True):
            body.set(facecolor=colours[archs[i]], edgecolor="none", alpha=0.3)
    for i, (arch, values) in enumerate(zip(archs, data, strict=True)):
        ax.scatter(
            i + rng.uniform(-0.12, 0.12, values.size),
            values,
            s=7,
            color=colours[arch],
            alpha=0.45,
            lw=0,
            rasterized=True,
        )
        if values.size:
            q1, med, q3 = np.percentile(values, [25, 50, 75])
            ax.vlines(i, q1, q3, color="black", lw=4, zorder=3)
            ax.scatter([i], [med], color="white", edgecolor="black", zorder=4, s=30)
            ax.hlines(values.mean(), i - 0.22, i + 0.22, color="black", lw=1.5, zorder=3)
    ax.set_xticks(range(len(archs)), [f"{label(a)}\n(n = {d.size})" for a, d in zip(archs, data, strict=True)])
    ax.set(ylabel="IoU per test image with cloud (mean over seeds)", title="Per-image IoU", ylim=(-0.02, 1.02))
    ax.legend(
        handles=[
            Line2D([], [], color="black", lw=4, label="interquartile range"),
            Line2D([], [], marker="o", ls="", mfc="white", mec="black", label="median"),
            Line2D([], [], color="black", lw=1.5, label="mean"),
        ],
        frameon=False,
        loc="lower left",
        fontsize=8,
    )


def _paired_scatter(ax, means: pd.DataFrame, a: str, b: str, colours: dict[str, str]) -> None:
    both = means[[a, b]].dropna()
    a_better, b_better = both[a] > both[b], both[b] > both[a]
    ax.plot([0, 1], [0, 1], color="0.4", lw=1, ls="--", zorder=1)
    # Points coloured by the winner, to match the counts written in each half.
    for mask, arch in ((a_better, a), (b_better, b), (~a_better & ~b_better, None)):
        colour = colours[arch] if arch else "0.3"
        ax.scatter(both[a][mask], both[b][mask], s=10, color=colour, alpha=0.55, lw=0, rasterized=True, zorder=2)
    ax.text(
        0.04,
        0.96,
        f"{label(b)} better: {int(b_better.sum())} images",
        transform=ax.transAxes,
        va="top",
        color=colours[b],
        fontweight="bold",
    )
    ax.text(
        0.96,
        0.04,
        f"{label(a)} better: {int(a_better.sum())} images",
        transform=ax.transAxes,
        ha="right",
        color=colours[a],
        fontweight="bold",
    )
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal", title="Paired per-image IoU")
    ax.set(xlabel=f"IoU {label(a)}", ylabel=f"IoU {label(b)}")


def _difference_histogram(ax, means: pd.DataFrame, row, colours: dict[str, str], interval_name: str) -> None:
    """Draw the histogram of per-image IoU differences a - b, with paired.csv's mean and headline CI on top."""
    a, b = row.arch_a, row.arch_b
    diff = (means[a] - means[b]).dropna().to_numpy()
    if diff.size:
        ax.hist(diff, bins=min(40, max(5, diff.size // 5)), color="0.55", edgecolor="white", lw=0.5)
    ax.axvline(0, color="0.2", lw=1, ls="--", label="no difference")
    if not is_missing(row.iou_diff_mean):
        ax.axvline(row.iou_diff_mean, color="black", lw=2, label=f"mean {fmt_signed(row.iou_diff_mean, 3)}")
    if not (is_missing(row.iou_diff_ci_low) or is_missing(row.iou_diff_ci_high)):
        ax.axvspan(
            row.iou_diff_ci_low,
            row.iou_diff_ci_high,
            color=colours[a],
            alpha=0.35,
            lw=0,
            zorder=0,
            label=f"95% CI, {interval_name} "
            f"[{fmt_signed(row.iou_diff_ci_low, 3)}, {fmt_signed(row.iou_diff_ci_high, 3)}]",
        )
    ax.set(
        title=f"IoU difference per image ({label(a)} − {label(b)})",
        xlabel="IoU difference",
        ylabel="test images",
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, ax.get_ylim()[1] * 1.4)  # headroom so the legend does not cover the bars
    ax.legend(
        frameon=False,
        fontsize=8,
        loc="upper left",
        title=f"P({label(a)} > {label(b)}) = {fmt_rate(row.p_a_better, 2)}",
        title_fontsize=8,
    )


def plot_budget(budget: pd.DataFrame, archs: list[str], path: Path) -> Path:
    """Plot expected best validation IoU vs number of trials and vs device-hours (mean ± sd of the best)."""
    colours = arch_colours(archs)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for arch in archs:
        group = budget[budget.arch == arch].sort_values("n_trials")
        if group.empty:
            continue
        mean = group["expected_best_val_iou"].to_numpy(float)
        sd = group["expected_best_val_iou_sd"].to_numpy(float) if "expected_best_val_iou_sd" in group else None
        for ax, x in zip(axes, (group["n_trials"], group["device_hours"]), strict=True):
            ax.plot(x, mean, "-o", color=colours[arch], lw=2, ms=3.5, label=label(arch))
            if sd is not None:
                ax.fill_between(x, mean - sd, np.minimum(mean + sd, 1.0), color=colours[arch], alpha=0.15, lw=0)
    axes[0].set(
        title="Expected best validation IoU vs trials",
        xlabel="number of trials",
        ylabel="expected best validation IoU",
    )
    axes[1].set(
        title="Expected best validation IoU vs tuning cost",
        xlabel="device-hours (expected)",
        ylabel="expected best validation IoU",
    )
    axes[0].xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(frameon=False, loc="lower right")
    fig.suptitle("Tuning budget (Dodge et al. 2019; band: ± sd of the best of n trials)")
    return save(fig, path)
