"""Render a final-comparison results directory as ``report.md`` plus PNG figures.

``write_report(results_dir)`` only *renders*: every number in the report is read from the files below
(written by ``harness.final_compare``, which computes them with :mod:`harness.stats` and
``harness.metrics.confusion_stats``). The report does nothing beyond presentation: formatting,
averaging a per-image IoU over seeds for a plot, counting points above a diagonal.

Results directory format
========================
Architectures are named by their registry key (``unet``, ``unetpp``, ...). NaN (empty CSV cell) means
"undefined" (e.g. the IoU of an image with neither cloud nor predicted cloud); the report prints ``n/a``.
Columns beyond those listed are allowed and ignored.

Required
--------
``meta.json``
    ``{"benchmark": str, "split_hash": str (sha256 of the split manifest), "split_kind": "scene"|"random"
    (optional), "seeds": [int, ...], "architectures": [str, ...] (order of every table and legend),
    "best_configs": {arch: {"trial_id": str, "val_iou": float, "config": {param: value}}},
    "device": str, "started_at": ISO-8601 str, "finished_at": ISO-8601 str}``.
``results.csv``
    One row per (arch, seed): ``arch, seed``, then every ``confusion_stats`` key of that seed's test
    counts (``tp fn fp tn p n pp pn total tpr fnr fpr tnr prevalence accuracy balanced_accuracy ppv fdr
    for npv lr_plus lr_minus threat_score f1 mcc``), ``train_seconds`` (wall-clock of the retrain),
    ``train_images_per_second``.
``summary.csv``
    One row per arch (``harness.stats.summary_table``): ``arch, n_seeds``; counts summed over seeds and
    every ``confusion_stats`` key of the pooled counts; ``iou_mean, iou_ci_low, iou_ci_high`` and the
    same for ``f1``, ``accuracy``, ``balanced_accuracy`` (mean over seeds of each seed's pooled statistic,
    percentile-bootstrap 95 % CI); ``train_seconds_mean, images_per_second_mean``; ``params`` (count),
    ``flops_per_patch`` (forward FLOPs of one 4-band 384x384 patch, one multiply-add = 2 FLOPs),
    ``sweep_device_hours`` (device-hours the architecture's sweep used), ``n_trials``.
``paired.csv``
    One row per architecture pair (``harness.stats.paired_table``): ``arch_a, arch_b, mean_iou_a,
    mean_iou_b, iou_diff_mean, iou_diff_ci_low, iou_diff_ci_high, wilcoxon_p, p_a_beats_b, n_images,
    n_seeds``. The unit is the test image: each image's IoU is averaged over the shared seeds, the
    difference is a - b with a paired bootstrap 95 % CI and a two-sided Wilcoxon signed-rank p-value;
    ``p_a_beats_b`` is the fraction of paired seeds whose pooled IoU is higher for a (ties one half).

Optional (the matching section or figure is left out when absent)
-----------------------------------------------------------------
``per_image.csv``
    One row per (arch, seed, test image): ``arch, seed, name, scene_id, tp, fn, fp, tn, iou, f1,
    accuracy``.
``curves.csv``
    One row per (arch, seed, epoch) of the final retrains: ``arch, seed, epoch, train_loss, val_loss,
    val_iou`` (epoch 1-based).
``budget.csv``
    Expected best validation IoU vs tuning budget (``harness.stats.budget_table``): ``arch, n_trials,
    expected_best_val_iou, expected_best_val_iou_sd, device_hours`` for n_trials = 1..N.
``scene_scores.csv``
    Only for data with scene ground truth: ``arch, seed, scene_id, precision, recall, specificity,
    jaccard, overall_accuracy`` (x100, ``harness.metrics.scene_scores``).
``samples.npz``
    A few test patches for the figure grid: ``rgb`` (K,H,W,3; float in 0-1 or uint8), ``gt`` (K,H,W; 0/1),
    ``pred_<arch>`` (K,H,W; 0/1) per arch, ``names`` (K,; str, the patch names of per_image.csv), and
    ``seed`` (int scalar, the seed whose models made the predictions). Stored without pickles.

Output
------
``report.md`` and ``figures/{curves,samples,per_image_iou,budget}.png`` in ``results_dir``, linked
relatively from the report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

# Display names; an unknown registry key is shown as it is.
ARCH_LABELS = {"unet": "U-Net", "unetpp": "UNet++", "resunet": "ResUNet", "vnet": "V-Net"}
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
# Masks and error maps share one scheme so the eye can move between them: clear dark, cloud light,
# errors in two saturated colours that stay apart for colour-blind readers.
CLEAR, CLOUD, FALSE_POS, FALSE_NEG = "#262626", "#e0e0e0", "#E69F00", "#0072B2"
DPI = 110
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
}
MAX_SAMPLE_ROWS = 8

# Table 1 of the study, extended: (confusion_stats key, row label, is a count).
TABLE1_ROWS = [
    ("tp", "TP", True),
    ("fn", "FN", True),
    ("fp", "FP", True),
    ("tn", "TN", True),
    ("total", "total pixels", True),
    ("accuracy", "accuracy", False),
    ("balanced_accuracy", "balanced accuracy", False),
    ("threat_score", "threat score (IoU)", False),
    ("f1", "F1", False),
    ("mcc", "MCC", False),
    ("tpr", "TPR (recall)", False),
    ("tnr", "TNR (specificity)", False),
    ("fpr", "FPR", False),
    ("fnr", "FNR", False),
    ("ppv", "PPV (precision)", False),
    ("npv", "NPV", False),
    ("fdr", "FDR", False),
    ("for", "FOR", False),
    ("prevalence", "prevalence", False),
    ("lr_plus", "LR+", False),
    ("lr_minus", "LR−", False),
]
SEED_METRICS = [
    ("iou", "IoU"),
    ("f1", "F1"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced acc."),
]


# ----------------------------------------------------------------------------------------------- loading
@dataclass
class Results:
    """The files of a results directory; optional ones are None when absent."""

    root: Path
    meta: dict
    results: pd.DataFrame
    summary: pd.DataFrame
    paired: pd.DataFrame
    per_image: pd.DataFrame | None
    curves: pd.DataFrame | None
    budget: pd.DataFrame | None
    scene_scores: pd.DataFrame | None
    samples: dict | None

    @property
    def archs(self) -> list[str]:
        """Architectures in meta.json's order, then any others that the summary holds."""
        return list(dict.fromkeys([*self.meta.get("architectures", []), *self.summary["arch"]]))


def load_results(results_dir) -> Results:
    """Read a results directory (format: module docstring); a missing required file raises."""
    root = Path(results_dir)
    missing = [f for f in ("meta.json", "results.csv", "summary.csv", "paired.csv") if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root} is not a results directory: missing {', '.join(missing)}")

    def optional_csv(name):
        return pd.read_csv(root / name) if (root / name).is_file() else None

    samples = None
    if (root / "samples.npz").is_file():
        with np.load(root / "samples.npz", allow_pickle=False) as npz:
            samples = {key: npz[key] for key in npz.files}
    return Results(
        root=root,
        meta=json.loads((root / "meta.json").read_text()),
        results=pd.read_csv(root / "results.csv"),
        summary=pd.read_csv(root / "summary.csv"),
        paired=pd.read_csv(root / "paired.csv"),
        per_image=optional_csv("per_image.csv"),
        curves=optional_csv("curves.csv"),
        budget=optional_csv("budget.csv"),
        scene_scores=optional_csv("scene_scores.csv"),
        samples=samples,
    )


# -------------------------------------------------------------------------------------------- formatting
def label(arch: str) -> str:
    """Display name of an architecture."""
    return ARCH_LABELS.get(arch, arch)


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or pd.isna(x)


def fmt_int(x) -> str:
    """Count with thousands separators (``2,166,535``)."""
    return "n/a" if _missing(x) else f"{round(float(x)):,d}"


def fmt_rate(x, digits: int = 4) -> str:
    return "n/a" if _missing(x) else f"{float(x):.{digits}f}"


def fmt_signed(x, digits: int = 4) -> str:
    return "n/a" if _missing(x) else f"{float(x):+.{digits}f}"


def fmt_p(p) -> str:
    """p-value: three decimals, scientific below 0.001."""
    if _missing(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_ci(est, low, high, digits: int = 4) -> str:
    if _missing(low) or _missing(high):
        return f"{fmt_rate(est, digits)} (no CI)"
    return f"{fmt_rate(est, digits)} [{fmt_rate(low, digits)}, {fmt_rate(high, digits)}]"


def fmt_value(x) -> str:
    """A config value: 4 significant digits for floats, the rest as written."""
    if isinstance(x, float):
        return f"{x:.4g}"
    return "n/a" if x is None else str(x)


def md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """Markdown table; ``align`` has one character per column, ``l`` or ``r`` (default: l then r...)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)


# --------------------------------------------------------------------------------------------- figures
def _colours(archs: list[str]) -> dict[str, str]:
    return {arch: PALETTE[i % len(PALETTE)] for i, arch in enumerate(archs)}


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def plot_curves(curves: pd.DataFrame, archs: list[str], path: Path) -> Path:
    """Loss (train solid, validation dashed) and validation IoU per epoch: mean over seeds, min-max band."""
    colours = _colours(archs)
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
    return _save(fig, path)


def _display_rgb(rgb: np.ndarray) -> np.ndarray:
    """Display contrast stretch: 1st-99th percentile over all sample patches, so they stay comparable."""
    rgb = rgb.astype(float) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    low, high = np.nanpercentile(rgb, [1, 99])
    return np.clip((rgb - low) / max(high - low, 1e-6), 0, 1)


def _short_name(name: str) -> str:
    # Patch names end in a long Landsat scene id; break before it so row labels stay narrow.
    head, sep, tail = str(name).partition("_LC08")
    return f"{head}\nLC08{tail[:12]}…" if sep else str(name)


def plot_samples(samples: dict, archs: list[str], per_image: pd.DataFrame | None, path: Path) -> Path:
    """Grid of test patches: true colour | ground truth | per arch: predicted mask, error map (FP/FN)."""
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
                if not _missing(value):
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
    return _save(fig, path)


def per_image_means(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per-image IoU averaged over seeds, one column per arch (NaN IoUs skipped) — the paired unit."""
    return per_image.pivot_table(index="name", columns="arch", values="iou", aggfunc="mean")


def plot_per_image(per_image: pd.DataFrame, paired: pd.DataFrame, archs: list[str], path: Path) -> Path:
    """Per-image IoU (mean over seeds): violin + points per arch; per pair a scatter and the differences."""
    colours = _colours(archs)
    means = per_image_means(per_image)
    archs = [a for a in archs if a in means.columns]
    pairs = [r for r in paired.itertuples() if r.arch_a in archs and r.arch_b in archs][:3]
    rows = max(1, len(pairs))
    fig = Figure(figsize=(13.5 if pairs else 5.5, 4.3 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 3, width_ratios=[1.15, 1, 1]) if pairs else fig.add_gridspec(1, 1)
    _violins(fig.add_subplot(grid[:, 0]), means, archs, colours)
    for i, r in enumerate(pairs):
        _paired_scatter(fig.add_subplot(grid[i, 1]), means, r.arch_a, r.arch_b, colours)
        _difference_histogram(fig.add_subplot(grid[i, 2]), means, r, colours)
    return _save(fig, path)


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
    ax.set(ylabel="IoU per test image (mean over seeds)", title="Per-image IoU", ylim=(-0.02, 1.02))
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


def _difference_histogram(ax, means: pd.DataFrame, row, colours: dict[str, str]) -> None:
    """Histogram of per-image IoU differences a - b, with paired.csv's mean and CI on top."""
    a, b = row.arch_a, row.arch_b
    diff = (means[a] - means[b]).dropna().to_numpy()
    if diff.size:
        ax.hist(diff, bins=min(40, max(5, diff.size // 5)), color="0.55", edgecolor="white", lw=0.5)
    ax.axvline(0, color="0.2", lw=1, ls="--", label="no difference")
    if not _missing(row.iou_diff_mean):
        ax.axvline(row.iou_diff_mean, color="black", lw=2, label=f"mean {fmt_signed(row.iou_diff_mean, 3)}")
    if not (_missing(row.iou_diff_ci_low) or _missing(row.iou_diff_ci_high)):
        ax.axvspan(
            row.iou_diff_ci_low,
            row.iou_diff_ci_high,
            color=colours[a],
            alpha=0.35,
            lw=0,
            zorder=0,
            label=f"95% CI [{fmt_signed(row.iou_diff_ci_low, 3)}, {fmt_signed(row.iou_diff_ci_high, 3)}]",
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
        title=f"Wilcoxon p = {fmt_p(row.wilcoxon_p)}",
        title_fontsize=8,
    )


def plot_budget(budget: pd.DataFrame, archs: list[str], path: Path) -> Path:
    """Expected best validation IoU vs number of trials and vs device-hours (mean ± sd of the maximum)."""
    colours = _colours(archs)
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
    return _save(fig, path)


# --------------------------------------------------------------------------------------------- markdown
def headline(paired: pd.DataFrame) -> list[str]:
    """One sentence per architecture pair, built from paired.csv only."""
    sentences = []
    for r in paired.itertuples():
        a, b = r.arch_a, r.arch_b
        if _missing(r.iou_diff_mean):
            sentences.append(f"{label(a)} vs {label(b)}: no test image has an IoU for both; no comparison.")
            continue
        # Speak of the winner, so the difference is positive.
        flip = r.iou_diff_mean < 0
        win, lose = (b, a) if flip else (a, b)
        win_iou, lose_iou = (r.mean_iou_b, r.mean_iou_a) if flip else (r.mean_iou_a, r.mean_iou_b)
        diff = -r.iou_diff_mean if flip else r.iou_diff_mean
        low, high = (-r.iou_diff_ci_high, -r.iou_diff_ci_low) if flip else (r.iou_diff_ci_low, r.iou_diff_ci_high)
        p_win = 1 - r.p_a_beats_b if flip else r.p_a_beats_b
        if r.iou_diff_mean == 0:
            start = f"{label(a)} and {label(b)} have the same mean per-image test IoU ({fmt_rate(win_iou)})"
        else:
            start = (
                f"**{label(win)}** has the higher mean per-image test IoU: {fmt_rate(win_iou)} vs "
                f"{fmt_rate(lose_iou)} for {label(lose)}, a difference of {fmt_signed(diff)}"
            )
        if _missing(low) or _missing(high):
            verdict = "too few images for an interval, so **no significant difference** can be claimed"
            ci = "no CI"
        else:
            ci = f"95% paired-bootstrap CI [{fmt_signed(low)}, {fmt_signed(high)}]"
            verdict = (
                "the CI excludes 0: the difference is significant at the 5% level"
                if low > 0 or high < 0
                else "the CI includes 0: **no significant difference**"
            )
        seeds = (
            f" Over {r.n_seeds} paired seeds, {label(win)}'s pooled test IoU is the higher one with "
            f"probability {fmt_rate(p_win, 2)}."
            if not _missing(p_win)
            else ""
        )
        sentences.append(
            f"{start} ({ci}; Wilcoxon signed-rank p = {fmt_p(r.wilcoxon_p)}; {int(r.n_images)} test images, "
            f"each averaged over {r.n_seeds} seeds); {verdict}.{seeds}"
        )
    return sentences


def _table1(res: Results) -> str:
    summary = res.summary.set_index("arch")
    archs = [a for a in res.archs if a in summary.index]
    rows = []
    for key, name, is_count in TABLE1_ROWS:
        if key in summary.columns:
            fmt = fmt_int if is_count else fmt_rate
            rows.append([name, *(fmt(summary.loc[a, key]) for a in archs)])
    return md_table(["statistic", *map(label, archs)], rows)


def _seed_table(res: Results) -> str:
    summary = res.summary.set_index("arch")
    rows = []
    for arch in [a for a in res.archs if a in summary.index]:
        s = summary.loc[arch]
        cells = [fmt_ci(s[f"{m}_mean"], s[f"{m}_ci_low"], s[f"{m}_ci_high"]) for m, _ in SEED_METRICS]
        rows.append([label(arch), fmt_int(s["n_seeds"]), *cells])
    return md_table(["architecture", "seeds", *(n for _, n in SEED_METRICS)], rows)


def _per_seed_table(res: Results) -> str:
    frame = res.results.pivot_table(index="seed", columns="arch", values="threat_score", aggfunc="first")
    archs = [a for a in res.archs if a in frame.columns]
    rows = [[str(seed), *(fmt_rate(frame.loc[seed, a]) for a in archs)] for seed in frame.index]
    return md_table(["seed", *(f"{label(a)} IoU" for a in archs)], rows)


def _paired_table(res: Results) -> str:
    rows = [
        [
            f"{label(r.arch_a)} − {label(r.arch_b)}",
            fmt_rate(r.mean_iou_a),
            fmt_rate(r.mean_iou_b),
            fmt_signed(r.iou_diff_mean),
            f"[{fmt_signed(r.iou_diff_ci_low)}, {fmt_signed(r.iou_diff_ci_high)}]",
            fmt_p(r.wilcoxon_p),
            fmt_rate(r.p_a_beats_b, 2),
            fmt_int(r.n_images),
            fmt_int(r.n_seeds),
        ]
        for r in res.paired.itertuples()
    ]
    header = [
        "pair (a − b)",
        "mean IoU a",
        "mean IoU b",
        "difference",
        "95% CI",
        "Wilcoxon p",
        "P(a beats b), seeds",
        "images",
        "seeds",
    ]
    return md_table(header, rows)


def _cost_table(res: Results) -> str:
    summary = res.summary.set_index("arch")
    rows = []
    for arch in [a for a in res.archs if a in summary.index]:
        s = summary.loc[arch]
        rows.append(
            [
                label(arch),
                "n/a" if _missing(s.get("params")) else f"{s['params'] / 1e6:.2f}",
                "n/a" if _missing(s.get("flops_per_patch")) else f"{s['flops_per_patch'] / 1e9:.1f}",
                "n/a" if _missing(s.get("train_seconds_mean")) else f"{s['train_seconds_mean']:,.0f}",
                "n/a" if _missing(s.get("images_per_second_mean")) else f"{s['images_per_second_mean']:,.1f}",
                "n/a" if _missing(s.get("sweep_device_hours")) else f"{s['sweep_device_hours']:,.2f}",
                fmt_int(s.get("n_trials")),
            ]
        )
    header = [
        "architecture",
        "params (M)",
        "GFLOPs / 384×384 patch",
        "train time per seed (s)",
        "train images/s",
        "sweep device-hours",
        "trials",
    ]
    return md_table(header, rows)


def _budget_table(res: Results) -> str:
    budget = res.budget
    archs = [a for a in res.archs if a in set(budget.arch)]
    n_max = int(budget["n_trials"].max())
    ns = sorted({n for n in (2**i for i in range(20)) if n <= n_max} | {n_max})
    rows = []
    for n in ns:
        cells = []
        for arch in archs:
            hit = budget[(budget.arch == arch) & (budget.n_trials == n)]
            if hit.empty:
                cells.append("")
            else:
                h = hit.iloc[0]
                cells.append(f"{fmt_rate(h.expected_best_val_iou)} ({h.device_hours:,.2f} h)")
        rows.append([str(n), *cells])
    return md_table(["trials", *(f"{label(a)}: E[best val IoU] (device-h)" for a in archs)], rows)


def _config_table(res: Results) -> str:
    configs = res.meta.get("best_configs", {})
    archs = [a for a in res.archs if a in configs]
    keys = list(dict.fromkeys(k for a in archs for k in configs[a].get("config", {})))
    rows = [
        ["trial", *(f"`{configs[a].get('trial_id', 'n/a')}`" for a in archs)],
        ["sweep val IoU", *(fmt_rate(configs[a].get("val_iou")) for a in archs)],
    ]
    rows += [[f"`{k}`", *(fmt_value(configs[a].get("config", {}).get(k, "")) for a in archs)] for k in keys]
    return md_table(["parameter", *map(label, archs)], rows)


def _scene_tables(res: Results) -> str:
    scores = res.scene_scores
    keys = ["precision", "recall", "specificity", "jaccard", "overall_accuracy"]
    archs = [a for a in res.archs if a in set(scores.arch)]
    # Official protocol: mean over scenes per seed; then mean over seeds.
    per_seed = scores.groupby(["arch", "seed"])[keys].mean().groupby("arch").mean()
    rows = [[label(a), *(f"{per_seed.loc[a, k]:.2f}" for k in keys)] for a in archs]
    out = md_table(["architecture", "precision", "recall", "specificity", "Jaccard", "overall accuracy"], rows)
    jaccard = scores.pivot_table(index="scene_id", columns="arch", values="jaccard", aggfunc="mean")
    rows = [[f"`{scene}`", *(fmt_rate(jaccard.loc[scene, a], 2) for a in archs)] for scene in jaccard.index]
    return out + "\n\nJaccard per scene (mean over seeds):\n\n" + md_table(["scene", *map(label, archs)], rows)


def render_markdown(res: Results, figures: dict[str, Path]) -> str:
    """The report's Markdown; ``figures`` maps a figure key to its PNG (linked relative to the report)."""
    meta = res.meta
    archs = [label(a) for a in res.archs]

    def fig(key, alt):
        return f"![{alt}]({figures[key].relative_to(res.root).as_posix()})\n" if key in figures else ""

    seeds = meta.get("seeds", sorted(res.results.seed.unique().tolist()))
    parts = [f"# Benchmark report: {meta.get('benchmark', res.root.name)}", ""]
    sentences = headline(res.paired) or ["Only one architecture: no comparison."]
    # One pair: a paragraph; several: a list, so each comparison stays its own line when rendered.
    parts += [sentences[0], ""] if len(sentences) == 1 else [*(f"- {s}" for s in sentences), ""]
    split = f"`{meta.get('split_hash', 'n/a')}`" + (f" ({meta['split_kind']} split)" if "split_kind" in meta else "")
    parts += [
        f"- Architectures: {', '.join(archs)}; seeds: {', '.join(map(str, seeds))} "
        "(paired: same seed and data order for every architecture).",
        f"- Test split (sha256 of the manifest): {split}; every architecture is scored on exactly these images.",
        f"- Device: {meta.get('device', 'n/a')}; run {meta.get('started_at', '?')} → {meta.get('finished_at', '?')}.",
        "",
        "## Pixel statistics on the test split",
        "",
        f"Counts are summed over the {len(seeds)} seeds (each seed scores the same test pixels); "
        "every rate is computed from those pooled counts.",
        "",
        _table1(res),
        "",
        "## Across seeds",
        "",
        "Mean over seeds of each seed's pooled statistic, with a 95% percentile-bootstrap CI over seeds.",
        "",
        _seed_table(res),
        "",
        _per_seed_table(res),
        "",
    ]
    if len(res.paired):
        parts += [
            "## Paired comparison on test images",
            "",
            "Each image's IoU is averaged over the seeds first; the difference a − b is over images, with a "
            "paired-bootstrap 95% CI and a two-sided Wilcoxon signed-rank test. P(a beats b) is the share of "
            "paired seeds in which a's pooled IoU is higher (ties count one half).",
            "",
            _paired_table(res),
            "",
        ]
    parts += ["## Cost", "", _cost_table(res), ""]
    if res.budget is not None:
        parts += [
            "## Tuning budget",
            "",
            "Expected best validation IoU of n trials drawn from each sweep's trials (Dodge et al. 2019), "
            "with the expected device-hours they cost.",
            "",
            _budget_table(res),
            "",
            fig("budget", "Expected best validation IoU vs trials and device-hours"),
        ]
    parts += ["## Chosen configurations", "", _config_table(res), ""]
    if res.scene_scores is not None:
        parts += ["## Scene-level scores (official protocol, ×100)", "", _scene_tables(res), ""]
    parts += ["## Figures", ""]
    for key, alt, caption in (
        ("curves", "Training curves", "Training and validation curves of the final retrains."),
        ("samples", "Test patches", "Test patches, ground truth, predicted masks and error maps."),
        ("per_image", "Per-image IoU", "Per-image IoU distributions and the paired comparison."),
    ):
        if key in figures:
            parts += [f"**{caption}**", "", fig(key, alt)]
    return "\n".join(parts).rstrip() + "\n"


def write_report(results_dir) -> Path:
    """Render ``report.md`` and ``figures/*.png`` from a results directory; returns the report's path."""
    res = load_results(results_dir)
    fig_dir = res.root / "figures"
    fig_dir.mkdir(exist_ok=True)
    figures: dict[str, Path] = {}
    with matplotlib.rc_context(STYLE):
        if res.curves is not None and len(res.curves):
            figures["curves"] = plot_curves(res.curves, res.archs, fig_dir / "curves.png")
        if res.samples is not None:
            figures["samples"] = plot_samples(res.samples, res.archs, res.per_image, fig_dir / "samples.png")
        if res.per_image is not None and len(res.per_image):
            figures["per_image"] = plot_per_image(res.per_image, res.paired, res.archs, fig_dir / "per_image_iou.png")
        if res.budget is not None and len(res.budget):
            figures["budget"] = plot_budget(res.budget, res.archs, fig_dir / "budget.png")
    path = res.root / "report.md"
    path.write_text(render_markdown(res, figures), encoding="utf-8")
    return path
