"""The report's statements of method: what each number rests on, and what it leaves out.

Text only, from a :class:`~harness.results.Results`: the per-image IoU set and the cloud-free images,
the paired comparison's unit of resampling, how the tuning-budget curve counts trials, and how scenes
were scored. :mod:`harness.report.markdown` places these paragraphs in their sections.
"""

from __future__ import annotations

from harness.report.format import fmt_int, fmt_rate, is_missing, label, md_table
from harness.results import MIN_SCENES_FOR_NEW_SCENES, Results, has_seed_level_intervals


def iou_set(res: Results) -> tuple[float, float]:
    """Return (images with cloud, cloud-free images) per seed from summary.csv; NaN when not recorded."""
    summary = res.summary
    if "iou_images" not in summary or "cloud_free_images" not in summary or summary.empty:
        return float("nan"), float("nan")
    return float(summary["iou_images"].iloc[0]), float(summary["cloud_free_images"].iloc[0])


def cloud_free_text(res: Results) -> list[str]:
    """Return the paragraph (and table) on the per-image IoU set and the cloud-free test images."""
    with_cloud, cloud_free = iou_set(res)
    if is_missing(with_cloud):
        return []
    text = (
        f"Per-image IoU is over the {fmt_int(with_cloud)} test images whose ground truth has cloud: one set, "
        "chosen from the ground truth alone, for every architecture, seed, table and figure."
    )
    if not cloud_free:
        return [text + " No test image is cloud-free.", ""]
    summary = res.summary.set_index("arch")
    rows = [
        [
            label(a),
            fmt_rate(summary.loc[a, "cloud_free_fp_image_share"], 3),
            fmt_rate(summary.loc[a, "cloud_free_fpr"]),
        ]
        for a in res.archs
        if a in summary.index
    ]
    text += (
        f" The {fmt_int(cloud_free)} cloud-free test images have no IoU (nothing to intersect: one false-positive "
        "pixel would score 0, none would be undefined); they are judged by their false positives, over all seeds:"
    )
    header = ["architecture", "cloud-free images with a false positive (share)", "FPR on their pixels"]
    return [text, "", md_table(header, rows), ""]


def scene_notes(res: Results) -> list[str]:
    """Return the scene section's notes: how scenes were scored, and every test scene left out."""
    protocol = res.meta.get("scene_protocol") or {}
    if protocol.get("not_scored"):
        return [f"No scene scores: {protocol['not_scored']}."]
    notes = [
        "Every patch of each test scene is predicted (border patches that the split's non-empty filter "
        "left out of training and of the patch statistics included), stitched and cropped to the scene "
        "ground truth as 38-Cloud's `evaluation.m` does; scores are the mean over scenes per seed, then over "
        "seeds. Not 38-Cloud's official numbers: patches are labelled by argmax (cloud probability > 0.5), "
        "as every other number here, where `evaluation.m` thresholds the cloud probability at 12/255."
    ]
    without = protocol.get("scenes_without_gt") or []
    if without:
        scored = len(protocol.get("scored_scenes") or [])
        notes.append(
            f"**Warning:** {len(without)} of {len(without) + scored} test scenes have no scene ground truth "
            f"and are not scored: {', '.join(f'`{s}`' for s in without)}."
        )
    stale = protocol.get("stale_retrains") or []
    if stale:
        notes.append(
            f"**Warning:** the scene scores of {len(stale)} reused retrains ({', '.join(stale)}) were computed "
            "by an older harness from the test split's patches only and are left out; retrain them to score scenes."
        )
    return [x for note in notes for x in (note, "")]


def scored_on(res: Results) -> str:
    """Return what every architecture and seed is scored on (the test split bullet's second half)."""
    with_cloud, cloud_free = iou_set(res)
    if is_missing(with_cloud):
        return "every architecture and seed is scored on the same test pixels"
    return (
        f"every architecture and seed is scored on all {fmt_int(with_cloud + cloud_free)} test images "
        f"({fmt_int(with_cloud)} with cloud in the ground truth form the per-image IoU set, "
        f"{fmt_int(cloud_free)} are cloud-free)"
    )


def paired_text(res: Results) -> list[str]:
    """Return the paired section's explanation of its columns (paragraphs, each followed by a blank)."""
    if not has_seed_level_intervals(res.paired):
        return [
            "Per-image IoU over the set above; the difference a − b is its mean over seeds and images. This "
            "results directory was written before issue 18: its 95% CI is the percentile hierarchical bootstrap "
            "(seeds, then scenes, then images), which covers only 75-92% with 3-5 seeds "
            "(`benchmarks/stats/RESULTS.md`); rerun `cloudmask compare` for the seed-level interval.",
            "",
        ]
    n_scenes = int(res.paired["n_scenes"].min()) if len(res.paired) else 0
    text = [
        "Per-image IoU over the set above; every pair is written a − b with a the architecture with the higher "
        "mean, and the difference is the mean of a − b over seeds and images.",
        "**What the intervals cover.** The headline 95% CI is for *this test set, new training seeds*: the "
        "difference retraining both architectures on new seeds and rescoring these test images would give on "
        "average. The training seed is the unit of replication, so it is a Student-t interval over the per-seed "
        "mean differences (S − 1 degrees of freedom), with the paired t-test over seeds beside it. The "
        '"detectable difference" is the smallest true difference this number of seeds detects with probability '
        '0.8 at the 5% level, from the observed seed-to-seed spread: read "no difference is established" '
        "together with it. P(a > b), the probability of improvement, is on each scene the share of (seed of a, "
        "seed of b) pairs in which a's mean IoU on that scene is higher, averaged over scenes; its interval is "
        "the Wilson bound with n = seeds (a Mann-Whitney probability cannot vary more than P(1 − P)/n), "
        "conservative by design with few seeds.",
        f"The *new scenes* interval treats seeds and scenes as random (two-way random effects, min(seeds, "
        f"scenes) − 1 degrees of freedom): it is what the comparison says about scenes not in the test set. "
        f"With fewer than {MIN_SCENES_FOR_NEW_SCENES} test scenes the between-scene variance rests on too few "
        "values, so it is not estimated"
        + (f" here ({n_scenes} scenes)." if n_scenes < MIN_SCENES_FOR_NEW_SCENES else ".")
        + " Coverage of every interval was measured by simulation (`benchmarks/stats/coverage.py`, "
        "`benchmarks/stats/RESULTS.md`).",
        "The image-level columns average each image over seeds and treat images as independent: they ignore "
        "seed-to-seed variation and within-scene correlation, so they are narrower than the data support and are "
        "shown for reference only, not as evidence of a difference.",
    ]
    return [x for paragraph in text for x in (paragraph, "")]


def budget_text(res: Results) -> list[str]:
    """Return the tuning-budget section's explanation: how trials count, and the estimator's bias."""
    summary = res.summary.set_index("arch")
    endings = []
    for arch in [a for a in res.archs if a in summary.index]:
        s = summary.loc[arch]
        if not is_missing(s.get("n_trials_completed")):
            endings.append(
                f"{label(arch)} {fmt_int(s['n_trials'])} trials ({fmt_int(s['n_trials_completed'])} completed, "
                f"{fmt_int(s['n_trials_stopped'])} stopped by ASHA, {fmt_int(s['n_trials_failed'])} diverged or failed)"
            )
    text = (
        "Expected best validation IoU of n trials drawn with replacement from each sweep's trials (Dodge et al. "
        "2019), with the expected device-hours they cost: equal trials are not equal compute, so compare "
        "architectures at equal device-hours too. Every trial is a draw: a completed trial at its final score, an "
        "ASHA-stopped trial at its score when stopped (lower than had it run on), a diverged or failed trial at "
        "IoU 0. Near n = N the estimate is biased low (draws with replacement repeat trials, so it stays below the "
        "best trial found): read the right end as a lower bound."
    )
    return [text + (f" Trials: {'; '.join(endings)}." if endings else ""), ""]
