"""The report's Markdown: a headline per architecture pair, the tables, and the page that links the figures."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from harness.report.format import fmt_ci, fmt_int, fmt_p, fmt_rate, fmt_signed, fmt_value, is_missing, label, md_table
from harness.results import Results

# Table 1 of the study, extended: (confusion_stats key, row label, is a count).
TABLE1_ROWS = [
    ("tp", "TP", True),
    ("fn", "FN", True),
    ("fp", "FP", True),
    ("tn", "TN", True),
    ("total", "total pixels", True),
    ("accuracy", "accuracy", False),
    ("balanced_accuracy", "balanced accuracy", False),
    ("iou", "IoU", False),
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
SCENE_KEYS = [
    ("precision", "precision"),
    ("recall", "recall"),
    ("specificity", "specificity"),
    ("iou", "IoU"),
    ("overall_accuracy", "overall accuracy"),
]
# The study and 38-Cloud each name IoU differently; say so once, where a reader first meets it.
IOU_ALIASES = 'IoU (the study\'s "threat score", 38-Cloud\'s "Jaccard index")'


def headline(paired: pd.DataFrame) -> list[str]:
    """Return one sentence per architecture pair, built from paired.csv only."""
    sentences = []
    for r in paired.itertuples():
        a, b = r.arch_a, r.arch_b
        if is_missing(r.iou_diff_mean):
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
        if is_missing(low) or is_missing(high):
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
            if not is_missing(p_win)
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
    frame = res.results.pivot_table(index="seed", columns="arch", values="iou", aggfunc="first")
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
                "n/a" if is_missing(s.get("params")) else f"{s['params'] / 1e6:.2f}",
                "n/a" if is_missing(s.get("flops_per_patch")) else f"{s['flops_per_patch'] / 1e9:.1f}",
                "n/a" if is_missing(s.get("train_seconds_mean")) else f"{s['train_seconds_mean']:,.0f}",
                "n/a" if is_missing(s.get("images_per_second_mean")) else f"{s['images_per_second_mean']:,.1f}",
                "n/a" if is_missing(s.get("sweep_device_hours")) else f"{s['sweep_device_hours']:,.2f}",
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
    keys = [key for key, _ in SCENE_KEYS]
    archs = [a for a in res.archs if a in set(scores.arch)]
    # Official protocol: mean over scenes per seed; then mean over seeds.
    per_seed = scores.groupby(["arch", "seed"])[keys].mean().groupby("arch").mean()
    rows = [[label(a), *(fmt_rate(per_seed.loc[a, k], 2) for k in keys)] for a in archs]
    out = md_table(["architecture", *(name for _, name in SCENE_KEYS)], rows)
    iou = scores.pivot_table(index="scene_id", columns="arch", values="iou", aggfunc="mean")
    rows = [[f"`{scene}`", *(fmt_rate(iou.loc[scene, a], 2) for a in archs)] for scene in iou.index]
    return out + "\n\nIoU per scene (mean over seeds):\n\n" + md_table(["scene", *map(label, archs)], rows)


def _name_iou_once(lines: list[str]) -> list[str]:
    """Return ``lines`` with the first whole-word "IoU" given its other names (see IOU_ALIASES)."""
    lines = list(lines)
    for i, line in enumerate(lines):
        named, n = re.subn(r"\bIoU\b", IOU_ALIASES, line, count=1)
        if n:
            lines[i] = named
            break
    return lines


def render_markdown(res: Results, figures: dict[str, Path]) -> str:
    """Render the report's Markdown; ``figures`` maps a figure key to its PNG (linked relative to the report)."""
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
    parts[1:] = _name_iou_once(parts[1:])  # after the title, which holds the benchmark's name
    return "\n".join(parts).rstrip() + "\n"
