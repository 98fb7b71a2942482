"""The comparison's answer in one sentence, and the closing summary ``compare`` and ``demo`` print.

Everything comes from ``paired.csv`` and ``summary.csv`` (:func:`harness.results.load_results`): the
*leader* is the architecture with the highest mean per-image test IoU; it is the *winner* only when the
95 % interval of its difference to every other architecture (``iou_diff_ci_low/high``: Student t over
the paired seeds, "this test set, new training seeds") excludes 0. The same verdict is the MLflow run's
description and its ``winner`` / ``verdict`` tags (:func:`harness.compare.driver.run_compare`).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.console import table
from harness.report.format import fmt_p, fmt_signed, is_missing, label
from harness.results import Results

#: The ``winner`` tag when no architecture's lead is established.
NO_WINNER = "none"


@dataclass(frozen=True)
class PairVerdict:
    """One paired difference ``a - b`` of mean per-image test IoU, ``a`` the higher."""

    arch_a: str
    arch_b: str
    diff: float
    ci_low: float
    ci_high: float
    p: float
    n_seeds: int

    @property
    def established(self) -> bool:
        """True when the interval exists and excludes 0."""
        return not (is_missing(self.ci_low) or is_missing(self.ci_high)) and (self.ci_low > 0 or self.ci_high < 0)

    def sentence(self) -> str:
        """``U-Net leads UNet++ by +0.0120 (95% CI -0.0200 to +0.0440, 5 paired seeds, p = 0.41): ...``."""
        interval = (
            f"95% CI {fmt_signed(self.ci_low)} to {fmt_signed(self.ci_high)}"
            if not (is_missing(self.ci_low) or is_missing(self.ci_high))
            else "no interval"
        )
        p = f", p = {fmt_p(self.p)}" if not is_missing(self.p) else ""
        facts = f"({interval}, {self.n_seeds} paired seeds{p})"
        if self.diff == 0:
            return f"{label(self.arch_a)} and {label(self.arch_b)} tie {facts}: no difference is established"
        verb = "beats" if self.established else "leads"
        end = "" if self.established else ": no difference is established"
        return f"{label(self.arch_a)} {verb} {label(self.arch_b)} by {fmt_signed(self.diff)} {facts}{end}"


@dataclass(frozen=True)
class Verdict:
    """The comparison's answer: who leads, whether that is established, and in words."""

    leader: str | None
    winner: str  # the leader when established, else NO_WINNER
    pairs: tuple[PairVerdict, ...]

    @property
    def text(self) -> str:
        """One sentence: the leader's pairs (all pairs when there is no leader), then the conclusion."""
        if self.leader is None:
            return "No comparison: no test image has cloud in its ground truth."
        mine = [p for p in self.pairs if self.leader in (p.arch_a, p.arch_b)] or list(self.pairs)
        body = "; ".join(p.sentence() for p in mine)
        if self.winner != NO_WINNER:
            end = f"Winner: {label(self.winner)} (mean per-image test IoU)."
        else:
            end = "No winner: the data do not separate the architectures (mean per-image test IoU)."
        return f"{body}. {end}"


def verdict(res: Results) -> Verdict:
    """The verdict of a results directory (its ``paired.csv``, ``a`` the higher-mean architecture of each row)."""
    pairs = []
    for r in res.paired.itertuples():
        if is_missing(r.iou_diff_mean):
            continue
        flip = r.iou_diff_mean < 0  # an older file may put the loser first
        a, b = (r.arch_b, r.arch_a) if flip else (r.arch_a, r.arch_b)
        low, high = (-r.iou_diff_ci_high, -r.iou_diff_ci_low) if flip else (r.iou_diff_ci_low, r.iou_diff_ci_high)
        p = getattr(r, "seed_t_p", float("nan"))
        pairs.append(PairVerdict(a, b, abs(float(r.iou_diff_mean)), float(low), float(high), float(p), int(r.n_seeds)))
    if not pairs:
        return Verdict(None, NO_WINNER, ())
    means: dict[str, float] = {}
    for r in res.paired.itertuples():
        means.setdefault(r.arch_a, float(r.mean_iou_a))
        means.setdefault(r.arch_b, float(r.mean_iou_b))
    leader = max((arch for arch in means if not is_missing(means[arch])), key=lambda arch: means[arch])
    own = [p for p in pairs if leader in (p.arch_a, p.arch_b)]
    won = bool(own) and all(p.arch_a == leader and p.established for p in own)
    return Verdict(leader, leader if won else NO_WINNER, tuple(pairs))


def headline_metrics(v: Verdict) -> dict[str, float]:
    """The verdict's numbers for MLflow: per pair ``<a>_minus_<b>_per_image_iou`` and its interval and p-value."""
    metrics: dict[str, float] = {}
    for p in v.pairs:
        key = f"{p.arch_a}_minus_{p.arch_b}_per_image_iou"
        metrics |= {key: p.diff, f"{key}_ci_low": p.ci_low, f"{key}_ci_high": p.ci_high, f"{key}_seed_t_p": p.p}
    return metrics


def compare_summary(res: Results, *, report: str, runs_view: str) -> str:
    """The closing summary of a comparison: per architecture its headline score with interval, the verdict, links."""
    rows = []
    for r in res.summary.itertuples():
        rows.append(
            {
                "architecture": r.arch,
                "per-image IoU": r.per_image_iou_mean,
                "95% CI (seeds)": _ci(r.per_image_iou_ci_low, r.per_image_iou_ci_high),
                "pooled IoU": r.iou_mean,
                "seeds": int(r.n_seeds),
            }
        )
    columns = ["architecture", "per-image IoU", "95% CI (seeds)", "pooled IoU", "seeds"]
    split = str(res.meta.get("split_hash"))[:12]
    lines = [
        f"Final comparison of sweep {res.meta.get('sweep_id', '?')} on test split {split}",
        table(rows, columns),
        f"Verdict: {verdict(res).text}",
        f"  report:   {report}",
        f"  MLflow:   {runs_view}",
    ]
    for arch, uri in (res.meta.get("registered_models") or {}).items():
        lines.append(f"  {arch}: {uri}   (cloudmask predict --model {uri} ...)")
    return "\n".join(lines)


def _ci(low, high) -> str:
    if is_missing(low) or is_missing(high):
        return "-"
    return f"{low:.4f} to {high:.4f}"


__all__ = ["NO_WINNER", "PairVerdict", "Verdict", "compare_summary", "headline_metrics", "verdict"]
