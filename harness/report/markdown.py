"""The report's Markdown: a headline per architecture pair, the tables, and the page that links the figures."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from harness.report.audit import protocol_audit_section
from harness.report.format import fmt_ci, fmt_int, fmt_p, fmt_rate, fmt_signed, fmt_value, is_missing, label, md_table
from harness.report.methods import budget_text, cloud_free_text, paired_text, scene_notes, scored_on
from harness.report.ranking import ranking_section
from harness.results import MIN_SCENES_FOR_NEW_SCENES, Results, has_seed_level_intervals

# Table 1 of the study, extended: (confusion_stats key, row label, is a count).
TABLE1_ROWS = [
    ("tp", "TP", True),
    ("fn", "FN", True),
    ("fp", "FP", True),
    ("tn", "TN", True),
    ("total", "total pixels", True),
    ("accuracy", "accuracy", False),
    ("balanced_accuracy", "balanced accuracy", False),
    ("iou", "IoU (pooled pixels)", False),
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
    ("iou", "pooled IoU"),
    ("per_image_iou", "mean per-image IoU"),
    ("f1", "F1"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced acc."),
]
SCENE_KEYS = [
    ("precision", "precision"),
    ("recall", "recall"),
    ("specificity", "specificity"),
    ("iou", "scene IoU"),
    ("overall_accuracy", "overall accuracy"),
]
# The study and 38-Cloud each name IoU differently; say so once, where a reader first meets it.
IOU_ALIASES = 'IoU (the study\'s "threat score", 38-Cloud\'s "Jaccard index")'


def _interval(low, high, digits: int = 4, fmt=fmt_signed) -> str:
    return "no interval" if is_missing(low) or is_missing(high) else f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def headline(paired: pd.DataFrame) -> list[str]:
    """Return one sentence per architecture pair, built from paired.csv only.

    Each states the difference winner − loser, its 95% interval with what it covers ("this test set, new
    training seeds": Student t over the per-seed differences), the smallest difference the design could
    detect when no difference is established, the "new scenes" interval or why there is none, and the
    probability of improvement; never an image-level test: images of one scene are not independent
    draws, and the training seed is the unit of replication.
    """
    sentences = []
    seed_level = has_seed_level_intervals(paired)
    for r in paired.itertuples():
        a, b = r.arch_a, r.arch_b
        if is_missing(r.iou_diff_mean):
            sentences.append(f"{label(a)} vs {label(b)}: no test image has cloud in its ground truth; no comparison.")
            continue
        # Speak of the winner, so the difference is positive (paired.csv puts the winner first; an older
        # file may not).
        flip = r.iou_diff_mean < 0
        win, lose = (b, a) if flip else (a, b)
        win_iou, lose_iou = (r.mean_iou_b, r.mean_iou_a) if flip else (r.mean_iou_a, r.mean_iou_b)
        diff = -r.iou_diff_mean if flip else r.iou_diff_mean
        p, p_low, p_high = r.p_a_better, r.p_a_better_ci_low, r.p_a_better_ci_high
        if flip:
            p, p_low, p_high = 1 - p, 1 - p_high, 1 - p_low
        seeds_won = r.n_seeds - r.seeds_a_higher if flip else r.seeds_a_higher
        n_seeds, n_scenes = int(r.n_seeds), int(r.n_scenes)
        if r.iou_diff_mean == 0:
            start = f"{label(a)} and {label(b)} have the same mean per-image test IoU ({fmt_rate(win_iou)})"
        else:
            start = (
                f"**{label(win)}** has the higher mean per-image test IoU: {fmt_rate(win_iou)} vs "
                f"{fmt_rate(lose_iou)} for {label(lose)}, a difference of {fmt_signed(diff)}"
            )
        basis = f"{int(r.n_images)} test images with cloud, {n_scenes} scenes, {n_seeds} paired seeds"
        if r.iou_diff_mean != 0:
            basis = f"{label(win)} − {label(lose)}; {basis}"
        low, high = _oriented(r.iou_diff_ci_low, r.iou_diff_ci_high, flip)
        if seed_level:
            interval = (
                f"for this test set and new training seeds, 95% CI {_interval(low, high)} (Student t over the "
                f"{n_seeds} per-seed differences)"
            )
        else:
            interval = (
                f"95% CI {_interval(low, high)} from a percentile hierarchical bootstrap over seeds, scenes and "
                "images (written before issue 18; it undercovers with few seeds: rerun `cloudmask compare`)"
            )
        if is_missing(low) or is_missing(high):
            verdict = "there is no interval, so **no difference is established**"
        elif low > 0 or high < 0:
            verdict = "the interval excludes 0"
        else:
            verdict = "the interval includes 0: **no difference is established**"
            if seed_level and not is_missing(r.detectable_diff):
                verdict += (
                    f"; differences below {fmt_rate(r.detectable_diff)} would likely go unseen with {n_seeds} "
                    "seeds (power 0.8)"
                )
        if n_seeds < 2:
            verdict += " (one seed: no seed-to-seed variation is observed)"
        sentences.append(
            f"{start} ({basis}); {interval}; {verdict}. {new_scenes_sentence(r, flip, seed_level)} "
            f"{_improvement_sentence(win, lose, p, p_low, p_high)}; {label(win)} is higher in {seeds_won:g} of "
            f"{n_seeds} paired seeds"
            + (f" (paired t-test over seeds: p = {fmt_p(r.seed_t_p)})." if not is_missing(r.seed_t_p) else ".")
        )
    return sentences


def _oriented(low, high, flip: bool) -> tuple[float, float]:
    return (-high, -low) if flip else (low, high)


def new_scenes_sentence(r, flip: bool = False, seed_level: bool = True) -> str:
    """What a paired.csv row says about new scenes: the interval with enough scenes, otherwise why not."""
    n_scenes = int(r.n_scenes)
    if not seed_level:
        return "Generalisation to new scenes is not estimated."
    if n_scenes < MIN_SCENES_FOR_NEW_SCENES:
        return (
            f"Generalisation to new scenes is not estimated: {n_scenes} test scenes are too few to estimate how "
            f"the difference varies between scenes (it takes at least {MIN_SCENES_FOR_NEW_SCENES})."
        )
    low, high = _oriented(r.new_scenes_ci_low, r.new_scenes_ci_high, flip)
    return f"For new scenes (seeds and scenes both random), 95% CI {_interval(low, high)}" + (
        f", detectable difference {fmt_rate(r.new_scenes_detectable_diff)}."
        if not is_missing(r.new_scenes_detectable_diff)
        else "."
    )


def _improvement_sentence(win: str, lose: str, p: float, low: float, high: float) -> str:
    text = f"P({label(win)} > {label(lose)}) = {fmt_rate(p, 2)} {_interval(low, high, 2, fmt_rate)}"
    if p == 1.0:
        return text + f" (every {label(win)} seed beats every {label(lose)} seed on every scene)"
    if p == 0.0:
        return text + f" (no {label(win)} seed beats any {label(lose)} seed on any scene)"
    return text + f" (a {label(win)} seed beats a {label(lose)} seed on a scene, averaged over scenes)"


def baseline_text(res: Results) -> list[str]:
    """The per-pixel baseline beside the networks, and each network's margin over it with its interval."""
    base = res.meta.get("pixel_baseline")
    if not base:
        return []
    summary = res.summary.set_index("arch")
    margins = []
    for a in res.archs:
        if a not in summary.index or "iou_mean" not in summary.columns:
            continue
        s = summary.loc[a]
        # The baseline is fit once on training pixels: a constant, so the margin's interval is the
        # network's interval over seeds shifted by it.
        margin = f"{label(a)} {fmt_signed(float(s['iou_mean']) - base['iou'])}"
        if not (is_missing(s.get("iou_ci_low")) or is_missing(s.get("iou_ci_high"))):
            margin += f" {_interval(s['iou_ci_low'] - base['iou'], s['iou_ci_high'] - base['iou'])}"
        margins.append(margin)
    return [
        "Floor: a per-pixel logistic regression on the four log-bands (no spatial context, "
        f"`harness/compare/baseline.py`, fit on training pixels) scores IoU {base['iou']:.4f}, F1 {base['f1']:.4f}, "
        f"accuracy {base['accuracy']:.4f} on the same test pixels. Margin of each network over it (mean over "
        f"seeds of each seed's pooled IoU minus the floor's, with the 95% Student-t interval over seeds): "
        f"{', '.join(margins)}. A margin is how far above a per-pixel classifier a network lands on this data, "
        "not a measured effect of spatial context alone; a margin near zero means this data cannot rank "
        "architectures.",
        "",
    ]


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
    return md_table(["seed", *(f"{label(a)} pooled IoU" for a in archs)], rows)


def _paired_table(res: Results) -> str:
    rows, seed_level = [], has_seed_level_intervals(res.paired)
    for r in res.paired.itertuples():
        row = [
            f"{label(r.arch_a)} − {label(r.arch_b)}",
            fmt_rate(r.mean_iou_a),
            fmt_rate(r.mean_iou_b),
            fmt_signed(r.iou_diff_mean),
            _interval(r.iou_diff_ci_low, r.iou_diff_ci_high),
        ]
        if seed_level:
            row.append(fmt_rate(r.detectable_diff))
        row += [
            f"{fmt_rate(r.p_a_better, 2)} {_interval(r.p_a_better_ci_low, r.p_a_better_ci_high, 2, fmt_rate)}",
            f"{r.seeds_a_higher:g} of {int(r.n_seeds)}",
            fmt_p(r.seed_t_p),
        ]
        if seed_level:
            enough = int(r.n_scenes) >= MIN_SCENES_FOR_NEW_SCENES
            row.append(
                _interval(r.new_scenes_ci_low, r.new_scenes_ci_high)
                if enough
                else f"not estimated ({int(r.n_scenes)} scenes)"
            )
        row += [
            _interval(r.image_ci_low, r.image_ci_high),
            fmt_p(r.image_wilcoxon_p),
            f"{int(r.n_images)} / {int(r.n_scenes)}",
        ]
        rows.append(row)
    header = [
        "pair (a − b)",
        "mean per-image IoU a",
        "mean per-image IoU b",
        "difference",
        "95% CI, this test set, new seeds" if seed_level else "95% CI, hierarchical bootstrap",
        *(["detectable difference"] if seed_level else []),
        "P(a > b) [95% CI]",
        "seeds a higher",
        "t-test p, seeds",
        *(["95% CI, new scenes"] if seed_level else []),
        "95% CI, image-level",
        "Wilcoxon p, image-level",
        "images / scenes",
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
                "n/a"
                if is_missing(s.get("inference_images_per_second_mean"))
                else f"{s['inference_images_per_second_mean']:,.1f}",
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
        "test images/s",
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
                sd = getattr(h, "expected_best_val_iou_sd", float("nan"))
                spread = "" if is_missing(sd) else f" ± {fmt_rate(sd)}"
                cells.append(f"{fmt_rate(h.expected_best_val_iou)}{spread} ({h.device_hours:,.2f} h)")
        rows.append([str(n), *cells])
    header = ["trials", *(f"{label(a)}: E[best val IoU] ± sd (device-h)" for a in archs)]
    return md_table(header, rows)


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
    # 38-Cloud's averaging: mean over scenes per seed; then mean over seeds.
    per_seed = scores.groupby(["arch", "seed"])[keys].mean().groupby("arch").mean()
    rows = [[label(a), *(fmt_rate(per_seed.loc[a, k], 2) for k in keys)] for a in archs]
    out = md_table(["architecture", *(name for _, name in SCENE_KEYS)], rows)
    iou = scores.pivot_table(index="scene_id", columns="arch", values="iou", aggfunc="mean")
    rows = [[f"`{scene}`", *(fmt_rate(iou.loc[scene, a], 2) for a in archs)] for scene in iou.index]
    return out + "\n\nScene IoU per scene (mean over seeds):\n\n" + md_table(["scene", *map(label, archs)], rows)


#: The official protocol's scores, and Cloud-Net's published ones on 38-Cloud's test set (Mohajerani & Saeedi 2019).
OFFICIAL_KEYS = (
    ("precision", "precision"),
    ("recall", "recall"),
    ("specificity", "specificity"),
    ("jaccard", "Jaccard"),
    ("overall_accuracy", "overall accuracy"),
)
CLOUD_NET_PUBLISHED = {
    "precision": 91.24,
    "recall": 84.86,
    "specificity": 98.68,
    "jaccard": 78.50,
    "overall_accuracy": 96.49,
}


def official_text(res: Results) -> str:
    """What the official-protocol numbers are, and how they differ from the harness's own."""
    scores = res.official_scores
    scenes = scores.scene_id.nunique()
    return (
        f"Every patch of the {scenes} scene(s) of the 38-Cloud test tree (`compare.official_test`), predicted by "
        "each retrain, its cloud probability saved as 8-bit and thresholded at 12/255, stitched on its scene's "
        "canvas and cropped centrally to the scene ground truth, as the dataset's `evaluation.m` does; the "
        "scores are per scene (×100), averaged over the scenes, then over the seeds. Protocol: scene, not patch; "
        "threshold 12/255 on the probability, not argmax; border patches included. Not comparable with the "
        "tables above (the harness's own test split and protocol). Cloud-Net's published scores on 38-Cloud's "
        "test set are given for reference; they are comparable only when this tree is that test set."
    )


def _official_table(res: Results) -> str:
    scores = res.official_scores
    keys = [key for key, _ in OFFICIAL_KEYS]
    per_seed = scores.groupby(["arch", "seed"])[keys].mean().groupby("arch").mean()
    archs = [a for a in res.archs if a in per_seed.index]
    rows = [[label(a), *(fmt_rate(per_seed.loc[a, k], 2) for k in keys)] for a in archs]
    rows.append(["Cloud-Net (published)", *(f"{CLOUD_NET_PUBLISHED[k]:.2f}" for k in keys)])
    return md_table(["architecture", *(name for _, name in OFFICIAL_KEYS)], rows)


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
        f"- Test split (sha256 of the manifest): {split}; {scored_on(res)}.",
        *(
            [f"- Data (sha256 of every split's patch names and pixels): `{meta['data_hash']}`."]
            if "data_hash" in meta
            else []
        ),
        f"- Device: {meta.get('device', 'n/a')}; run {meta.get('started_at', '?')} → {meta.get('finished_at', '?')}.",
        "",
        "## Pixel statistics on the test split",
        "",
        f"Counts are summed over the {len(seeds)} seeds (each seed scores the same test pixels); "
        "every rate is computed from those pooled counts.",
        "",
        _table1(res),
        "",
        *baseline_text(res),
        "## Across seeds",
        "",
        f"Mean over the {len(seeds)} seeds of each seed's statistic, with a 95% Student-t interval over seeds "
        "(mean ± t·sd/√n: the seed is the unit of replication; the interval assumes roughly normal seed-to-seed "
        "variation and is wide for few seeds). IoU, F1 and accuracies are of each seed's pooled test pixels; "
        "per-image IoU is each seed's mean over the per-image IoU set.",
        "",
        _seed_table(res),
        "",
        *cloud_free_text(res),
        _per_seed_table(res),
        "",
    ]
    if len(res.paired):
        parts += [
            "## Paired comparison on test images",
            "",
            *paired_text(res),
            _paired_table(res),
            "",
        ]
    parts += ranking_section(res, figures)
    parts += ["## Cost", "", _cost_table(res), ""]
    if res.budget is not None:
        parts += [
            "## Tuning budget",
            "",
            *budget_text(res),
            _budget_table(res),
            "",
            fig("budget", "Expected best validation IoU vs trials and device-hours"),
        ]
    parts += protocol_audit_section(res, figures)
    parts += ["## Chosen configurations", "", _config_table(res), ""]
    if res.scene_scores is not None or res.meta.get("scene_protocol"):
        parts += ["## Scene-level scores (38-Cloud stitching, argmax labels, ×100)", "", *scene_notes(res)]
        parts += [_scene_tables(res), ""] if res.scene_scores is not None else []
    if res.official_scores is not None:
        parts += ["## 38-Cloud official protocol (×100)", "", official_text(res), "", _official_table(res), ""]
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
