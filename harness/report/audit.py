"""The report's "Was the tuning fair?" section and its figure, from the protocol audit of the results directory.

Presentation only: every number comes from ``protocol_audit.csv``, ``protocol_audit.json`` and
``sweep_curves.csv`` (:mod:`harness.audit.ranks` computed them; :mod:`harness.results` declares them).
:func:`protocol_audit_section` returns the section's Markdown lines (none without an audit); :func:`plot_protocol_audit`
draws each architecture's sweep trials, early against final IoU, stopped trials marked where they stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.audit.ranks import ProtocolAudit
from harness.report.format import fmt_ci, fmt_int, fmt_rate, fmt_signed, is_missing, label, md_table
from harness.report.style import PALETTE, save
from harness.results import Results

STOPPED, FAILED, RUNG = "0.55", "0.75", "#CC79A7"


def _schedule(s: dict) -> str:
    rungs = ", ".join(str(r) for r in s.get("rungs", [])) or "none"
    what = f"ASHA (grace period {s['grace_period']}, reduction factor {s['reduction_factor']:g}; rungs at epoch {rungs}"
    return what + f" of {s['max_epochs']})"


def _verdict(s: dict) -> str:
    gaps = sorted(s.get("gaps", []), key=lambda g: -g["rho_gap"])
    worst, gap = (gaps[0] if gaps else None), ""
    if worst is not None:
        gap = (
            f"at epoch {worst['rung']}, ρ is {fmt_signed(worst['rho_gap'], 2)} higher for {label(worst['high_arch'])} "
            f"than for {label(worst['low_arch'])} (95% CI of the difference "
            f"[{fmt_signed(worst['ci_low'], 2)}, {fmt_signed(worst['ci_high'], 2)}])"
        )
    verdict = s.get("verdict")
    replay = s.get("replay") or {}
    losses = {a: r["full_best"] - r["best_iou_mean"] for a, r in replay.items()}
    if verdict == "biased" and len(losses) > 1 and max(losses.values()) - min(losses.values()) >= s["replay_gap"]:
        worst, best = max(losses, key=losses.get), min(losses, key=losses.get)
        return (
            f"**Flagged: the early stopping biases this comparison.** Replayed, the schedule costs {label(worst)} "
            f"{fmt_rate(losses[worst], 3)} of its best validation IoU and {label(best)} {fmt_rate(losses[best], 3)}: "
            f"a difference of {s['replay_gap']} or more handicaps one architecture."
        )
    if verdict == "biased":
        return f"**Flagged: the early stopping biases this comparison.** {gap[0].upper()}{gap[1:]}."
    if verdict == "possibly biased":
        return (
            f"**Flagged: the early stopping may bias this comparison.** {gap[0].upper()}{gap[1:]}; the interval "
            "includes 0, so with these few full-length trials the difference is not established either way."
        )
    if verdict == "unreliable":
        return (
            f"**Flagged: early scores do not rank trials** (ρ below {s['rho_ok']} at epoch {s['rungs'][0]} for at "
            "least one architecture): ASHA stops trials on noise, which can favour either architecture; that the "
            f"correlations differ by less than {s['rho_gap']} is then no evidence of fairness."
        )
    if verdict == "fair":
        return f"**No sign of bias:** at every rung the architectures' correlations differ by less than {s['rho_gap']}."
    if verdict == "cannot tell":
        return (
            f"**Cannot tell:** an architecture has fewer than {s['min_trials']} trials that ran every epoch, too few "
            "to compare its early and final scores."
        )
    return "One architecture: there is no comparison to bias; the table says how well early scores ranked its trials."


def _table(audit: ProtocolAudit, archs: list[str], top_k: int) -> str:
    table = audit.table
    rows = []
    for arch in [a for a in archs if a in set(table.arch)]:
        for r in table[table.arch == arch].sort_values("rung").itertuples():
            rho = "n/a" if is_missing(r.spearman) else fmt_ci(r.spearman, r.spearman_ci_low, r.spearman_ci_high, 2)
            rows.append(
                [
                    label(arch),
                    str(r.rung),
                    fmt_int(r.n_full),
                    rho,
                    fmt_int(r.n_stopped),
                    fmt_int(r.n_stopped_within_top_k),
                ]
            )
    header = [
        "architecture",
        "rung (epoch)",
        "trials that ran every epoch",
        "Spearman ρ, rung vs last epoch [95% CI]",
        "stopped at the rung",
        f"of those, as good there as a final top-{top_k} trial",
    ]
    return md_table(header, rows)


def _replay_lines(s: dict, archs: list[str]) -> list[str]:
    """The configured schedule replayed over the sweep's curves (only when every trial ran every epoch)."""
    replay = s.get("replay") or {}
    if not replay:
        return []
    any_r = next(iter(replay.values()))
    rows = [
        [
            label(a),
            fmt_rate(r["full_best"]),
            fmt_rate(r["best_iou_mean"]),
            fmt_signed(r["best_iou_mean"] - r["full_best"]),
            fmt_rate(r["p_found_best"], 2),
            fmt_rate(r["epochs_fraction_mean"], 2),
        ]
        for a, r in sorted(replay.items(), key=lambda kv: archs.index(kv[0]) if kv[0] in archs else len(archs))
    ]
    header = ["architecture", "best, every epoch", "best found, mean", "cost", "best trial kept", "epochs spent"]
    return [
        f"Every trial ran every epoch, so the schedule was replayed over these curves ({any_r['orders']} random "
        f"arrival orders, {any_r['concurrency']} trial(s) at a time; Ray's ASHA rule, no training): the best final "
        "validation IoU the sweep would still have found, and the share of orders that kept the best trial.",
        "",
        md_table(header, rows),
        "",
    ]


def protocol_audit_section(res: Results, figures: dict[str, Path]) -> list[str]:
    """Return the "Was the tuning fair?" section's Markdown lines; none when the results hold no audit."""
    audit = res.protocol_audit
    if audit is None:
        return []
    s = audit.summary
    if s.get("asha_enabled", True):
        intro = (
            f"The sweep stopped trials with {_schedule(s)}: a trial whose validation IoU at a rung is below most "
            "trials seen there is stopped. That is fair to the comparison only if, for every architecture, the "
            "IoU at the rung ranks trials as the IoU at the last epoch does; an architecture that starts slowly is "
            "otherwise cut before it shows what it can do."
        )
    else:
        intro = (
            f"The sweep ran every trial to the end (`asha.enabled: false`); the table says how the configured "
            f"{_schedule(s)} would have ranked its trials."
        )
    method = (
        f"Spearman's rank correlation between each trial's validation IoU at the rung and at epoch "
        f"{s['max_epochs']}, over the trials that ran every epoch ({s['n_boot']} bootstrap resamples of trials; "
        f"none below {s['min_trials']} trials). Only those trials have a final score: under ASHA they are the "
        "ones that passed every rung, a narrower sample than all trials."
    )
    parts = ["## Was the tuning fair?", "", intro, "", method, "", _table(audit, res.archs, s["top_k"]), ""]
    parts += _replay_lines(s, res.archs)
    parts += [_verdict(s), ""]
    parts += [*(f"- {a}" for a in s.get("advice", [])), ""] if s.get("advice") else []
    parts += [
        "`cloudmask replay` replays ASHA schedules over a sweep run with `asha.enabled: false` (no training) and "
        "shows, per architecture, the best IoU each schedule would still have found and the epochs it would cost.",
        "",
    ]
    if "protocol_audit" in figures:
        link = figures["protocol_audit"].relative_to(res.root).as_posix()
        parts += [f"![Validation IoU per epoch of every sweep trial]({link})", ""]
    return parts


def plot_protocol_audit(audit: ProtocolAudit, archs: list[str], path: Path) -> Path:
    """One panel per architecture: every sweep trial's validation IoU per epoch; stopped trials end in ×."""
    curves = audit.curves.replace([np.inf, -np.inf], np.nan)
    s = audit.summary
    shown = [a for a in archs if a in set(curves.arch)] or sorted(set(curves.arch))
    fig = Figure(figsize=(5.2 * max(1, len(shown)), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(shown)), sharey=True))
    table = audit.table
    for i, (ax, arch) in enumerate(zip(axes, shown, strict=False)):
        colour = PALETTE[archs.index(arch) % len(PALETTE)] if arch in archs else PALETTE[i % len(PALETTE)]
        for rung in s.get("rungs", []):
            ax.axvline(rung, color=RUNG, ls="--", lw=0.9, zorder=0)
        for _, trial in curves[curves.arch == arch].groupby("trial_id", sort=True):
            trial = trial.sort_values("epoch")
            x, y = trial["epoch"].to_numpy(), trial["val_iou"].to_numpy(float)
            ended = trial["stopped_by"].iloc[0]
            if ended == "completed" and len(x) >= s["max_epochs"]:
                ax.plot(x, y, "-", color=colour, lw=1.4, alpha=0.85)
            elif ended == "asha":
                ax.plot(x, y, "-", color=STOPPED, lw=1, alpha=0.8)
                ax.plot(x[-1:], y[-1:], "x", color="0.25", ms=6, mew=1.5)
            else:
                ax.plot(x, y, ":", color=FAILED, lw=1)
        rhos = table[(table.arch == arch) & table.spearman.notna()].sort_values("rung")
        rho = "; ".join(f"ρ@{int(r.rung)} = {fmt_rate(r.spearman, 2)}" for r in rhos.itertuples()) or "ρ: n/a"
        ax.set(title=f"{label(arch)} ({rho})", xlabel="epoch")
        ax.title.set_fontsize(9)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel("validation IoU")
    handles = [
        Line2D([], [], color="0.3", lw=1.4, label="ran every epoch"),
        Line2D([], [], color=STOPPED, marker="x", mec="0.25", label="stopped by ASHA (× where)"),
        Line2D([], [], color=FAILED, ls=":", label="diverged or failed"),
        Line2D([], [], color=RUNG, ls="--", label="ASHA rung (epoch it decides at)"),
    ]
    axes[-1].legend(handles=handles, frameon=False, loc="lower right", fontsize=8)
    fig.suptitle("Was the tuning fair? Every sweep trial's validation IoU per epoch")
    return save(fig, path)
