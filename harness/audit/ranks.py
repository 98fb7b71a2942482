"""Was the tuning fair? The protocol audit: does ASHA's early ranking hold for every architecture alike?

ASHA stops a trial at a rung (epoch ``grace_period * reduction_factor**k``) when its validation IoU there
is below most of the trials already seen at that rung. That is fair to a comparison only when, for every
architecture, the IoU at the rung ranks trials as the IoU at the last epoch does: an architecture that
starts slowly is otherwise cut before it shows what it can do, and the comparison blames the architecture
for the scheduler. From the sweep's own per-epoch curves (no retraining), per architecture and rung:

* the Spearman rank correlation between validation IoU at the rung and at the last epoch, over the trials
  that ran every epoch, with a percentile bootstrap interval over trials;
* how many trials ASHA stopped at the rung although their score there was at least the lowest score the
  final top-k trials had at that rung (a stopped trial that looked as good as a top-k one);

and a verdict: the comparison is flagged when the architectures' correlations at a rung differ by
:data:`RHO_GAP` or more, with advice (a later grace period, a smaller reduction factor, or
``asha.enabled: false``). Only trials that ran every epoch have a final score, so under ASHA the
correlation is measured on the trials that survived every rung (a range-restricted sample); a sweep with
``asha.enabled: false`` audits every trial and answers for the configured rungs prospectively.

Pure functions on curves (numpy, pandas, scipy): no Ray, no MLflow. The results-directory files are
declared in :mod:`harness.results`; :mod:`harness.report.audit` renders them.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from harness.sweep.result import SweepResult

#: Correlations of two architectures at a rung that differ by this much bias the comparison.
RHO_GAP = 0.3
#: A rung whose correlation with the last epoch reaches this ranks trials well enough to stop on.
RHO_OK = 0.7
#: Fewer trials that ran every epoch than this: no correlation is computed for the architecture.
MIN_TRIALS = 5
#: Replayed losses (full-run best - best found under the schedule) that differ by this much IoU bias it.
REPLAY_GAP = 0.01
#: Columns of the per-(arch, rung) table (``protocol_audit.csv``).
AUDIT_COLUMNS = (
    "arch",
    "rung",
    "n_full",
    "spearman",
    "spearman_ci_low",
    "spearman_ci_high",
    "n_stopped",
    "n_stopped_within_top_k",
)
#: Columns of the per-(arch, trial, epoch) curves (``sweep_curves.csv``).
CURVE_COLUMNS = ("arch", "trial_id", "stopped_by", "epoch", "val_iou")


@dataclass(frozen=True)
class TrialCurve:
    """One sweep trial's validation IoU per epoch (``values[e - 1]`` is epoch ``e``) and how it ended."""

    arch: str
    trial_id: str
    stopped_by: str
    values: tuple[float, ...]
    run_id: str | None = None

    @property
    def epochs(self) -> int:
        """Epochs the trial ran."""
        return len(self.values)

    def ran_every_epoch(self, max_epochs: int) -> bool:
        """True when the trial completed all ``max_epochs`` epochs with a finite last score."""
        return self.stopped_by == "completed" and self.epochs >= max_epochs and math.isfinite(self.values[-1])


@dataclass
class ProtocolAudit:
    """The audit of one sweep: the per-(arch, rung) table, the curves it used, and the verdict."""

    table: pd.DataFrame
    curves: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def asha_rungs(grace_period: float, reduction_factor: float, max_epochs: int) -> list[int]:
    """Epochs at which ASHA decides, ascending: Ray's milestones below ``max_epochs``, rounded up.

    Ray's ``_Bracket`` makes ``int(log(max_t / grace) / log(rf) + 1)`` milestones ``grace * rf**k`` and
    judges a trial at the first reported iteration at or past one; at ``max_t`` a trial simply ends.
    """
    count = int(np.log(max_epochs / grace_period) / np.log(reduction_factor) + 1)
    milestones = (grace_period * reduction_factor**k for k in range(count))
    return sorted({math.ceil(m) for m in milestones if m < max_epochs})


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN for fewer than 3 pairs or a constant side."""
    out = _spearman_rows(np.asarray(x, dtype=float)[None, :], np.asarray(y, dtype=float)[None, :])
    return float(out[0])


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman per row of two (B, n) arrays: Pearson correlation of average ranks."""
    if x.shape[1] < 3:
        return np.full(x.shape[0], np.nan)
    rx = rankdata(x, axis=1) - (x.shape[1] + 1) / 2
    ry = rankdata(y, axis=1) - (y.shape[1] + 1) / 2
    num = (rx * ry).sum(axis=1)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def spearman_bootstrap(
    x: Sequence[float], y: Sequence[float], *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float, np.ndarray]:
    """Spearman's rho with a percentile bootstrap interval over pairs: (rho, low, high, replicates).

    Resamples that are constant on one side have no rank correlation and are left out of the interval.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rho = spearman(x, y)
    if len(x) < 3 or math.isnan(rho):
        return rho, math.nan, math.nan, np.array([])
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    reps = _spearman_rows(x[idx], y[idx])
    reps = reps[np.isfinite(reps)]
    if not len(reps):
        return rho, math.nan, math.nan, reps
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return rho, float(low), float(high), reps


def curves_from_sweep(sweep: SweepResult, history: Mapping[str, Sequence[tuple[int, float]]]) -> list[TrialCurve]:
    """The sweep's trials as :class:`TrialCurve` s, from per-run ``(step, value)`` histories (step = epoch).

    Trials without a run id or without a recorded history are left out.
    """
    out = []
    for trial in sweep.trials:
        points = history.get(trial.run_id or "", [])
        if not points:
            continue
        values = tuple(float(v) for _, v in sorted(points))
        out.append(TrialCurve(sweep.arch, trial.trial_id, trial.stopped_by, values, trial.run_id))
    return out


def _resample_seed(seed: int, arch: str, rung: int) -> int:
    """The bootstrap seed of one architecture at one rung: independent across architectures and rungs.

    ``_gaps`` subtracts two architectures' replicates as independent resamples; seeding both with the
    same number would draw the same trial indices for both and understate the gap's spread. The
    architecture enters by its name's CRC-32, so the seed does not depend on the order of the sweeps.
    """
    return int(np.random.SeedSequence([seed, zlib.crc32(arch.encode()), rung]).generate_state(1)[0])


def _arch_rows(
    arch: str, curves: Sequence[TrialCurve], rungs: list[int], max_epochs: int, top_k: int, n_boot: int, seed: int
) -> tuple[list[dict], dict[int, np.ndarray]]:
    """One row per rung for one architecture, and the bootstrap replicates of each rung's rho."""
    full = [c for c in curves if c.ran_every_epoch(max_epochs)]
    final = np.array([c.values[max_epochs - 1] for c in full])
    top = [full[i] for i in np.argsort(-final, kind="stable")[:top_k]]
    rows, reps = [], {}
    for rung in rungs:
        early = np.array([c.values[rung - 1] for c in full])
        rho, low, high, boot = (math.nan, math.nan, math.nan, np.array([]))
        if len(full) >= MIN_TRIALS:
            rho, low, high, boot = spearman_bootstrap(
                early, final, n_boot=n_boot, seed=_resample_seed(seed, arch, rung)
            )
        reps[rung] = boot
        stopped = [c for c in curves if c.stopped_by == "asha" and c.epochs == rung]
        floor = min((c.values[rung - 1] for c in top), default=math.inf)
        within = sum(c.values[rung - 1] >= floor for c in stopped)
        rows.append(
            {
                "arch": arch,
                "rung": rung,
                "n_full": len(full),
                "spearman": rho,
                "spearman_ci_low": low,
                "spearman_ci_high": high,
                "n_stopped": len(stopped),
                "n_stopped_within_top_k": int(within),
            }
        )
    return rows, reps


def audit_protocol(
    curves: Mapping[str, Sequence[TrialCurve]],
    *,
    max_epochs: int,
    grace_period: int,
    reduction_factor: float,
    asha_enabled: bool = True,
    top_k: int = 3,
    n_boot: int = 2000,
    seed: int = 0,
    replay: Mapping[str, Mapping[str, float]] | None = None,
) -> ProtocolAudit:
    """Audit the sweep's early stopping per architecture; ``curves`` maps architecture -> its trials.

    ``replay`` (only for a sweep whose trials all ran every epoch): per architecture, the schedule replayed
    over these curves (:func:`harness.audit.asha_replay.replay_grid`): ``full_best`` (best final IoU with no early
    stopping), ``best_iou_mean`` (mean best found under the schedule), ``p_found_best``,
    ``epochs_fraction_mean``, ``orders``. Losses that differ by :data:`REPLAY_GAP` between architectures
    flag the comparison whatever the correlations say.
    """
    rungs = asha_rungs(grace_period, reduction_factor, max_epochs)
    rows, reps, archs = [], {}, {}
    for arch, arch_curves in curves.items():
        arch_rows, reps[arch] = _arch_rows(arch, arch_curves, rungs, max_epochs, top_k, n_boot, seed)
        rows += arch_rows
        ended = [c.stopped_by for c in arch_curves]
        archs[arch] = {
            "n_trials": len(arch_curves),
            "n_full": sum(c.ran_every_epoch(max_epochs) for c in arch_curves),
            "n_stopped": ended.count("asha"),
            "n_failed": sum(e in ("diverged", "error") for e in ended),
        }
    table = pd.DataFrame(rows, columns=list(AUDIT_COLUMNS))
    gaps = _gaps(table, reps, rungs)
    verdict, advice = _verdict(table, gaps, archs, rungs, reduction_factor, max_epochs, asha_enabled, replay)
    summary = {
        "asha_enabled": bool(asha_enabled),
        "grace_period": grace_period,
        "reduction_factor": reduction_factor,
        "max_epochs": max_epochs,
        "rungs": rungs,
        "top_k": top_k,
        "n_boot": n_boot,
        "min_trials": MIN_TRIALS,
        "rho_gap": RHO_GAP,
        "rho_ok": RHO_OK,
        "replay_gap": REPLAY_GAP,
        "replay": {a: dict(r) for a, r in replay.items()} if replay else None,
        "archs": archs,
        "gaps": gaps,
        "flagged": verdict in ("biased", "possibly biased", "unreliable"),
        "verdict": verdict,
        "advice": advice,
    }
    curve_rows = [
        {"arch": c.arch, "trial_id": c.trial_id, "stopped_by": c.stopped_by, "epoch": e, "val_iou": v}
        for arch_curves in curves.values()
        for c in arch_curves
        for e, v in enumerate(c.values, start=1)
    ]
    return ProtocolAudit(table, pd.DataFrame(curve_rows, columns=list(CURVE_COLUMNS)), summary)


def _gaps(table: pd.DataFrame, reps: Mapping[str, Mapping[int, np.ndarray]], rungs: list[int]) -> list[dict]:
    """Per rung: the largest difference between two architectures' rho, with a bootstrap interval."""
    gaps = []
    for rung in rungs:
        at = table[(table.rung == rung) & table.spearman.notna()]
        if len(at) < 2:
            continue
        high = at.loc[at.spearman.idxmax()]
        rest = at.drop(index=high.name)  # two architectures even when their rhos tie
        low = rest.loc[rest.spearman.idxmin()]
        a, b = reps[high.arch][rung], reps[low.arch][rung]
        n = min(len(a), len(b))
        diff = a[:n] - b[:n]  # independent resamples of two architectures' trials
        ci = np.quantile(diff, [0.025, 0.975]) if n else (math.nan, math.nan)
        gaps.append(
            {
                "rung": rung,
                "high_arch": high.arch,
                "low_arch": low.arch,
                "rho_gap": float(high.spearman - low.spearman),
                "ci_low": float(ci[0]),
                "ci_high": float(ci[1]),
            }
        )
    return gaps


def _replay_loss_gap(replay: Mapping[str, Mapping[str, float]] | None) -> float:
    """Largest difference between two architectures' replayed losses (full-run best - mean best found)."""
    if not replay or len(replay) < 2:
        return math.nan
    losses = [r["full_best"] - r["best_iou_mean"] for r in replay.values()]
    return max(losses) - min(losses)


def _verdict(table, gaps, archs, rungs, rf, max_epochs, asha_enabled, replay) -> tuple[str, list[str]]:
    """(verdict, advice): fair | biased | possibly biased | unreliable | cannot tell | single architecture."""
    if not rungs:
        return "fair", [f"no rung before epoch {max_epochs}: ASHA stops no trial"]
    if _replay_loss_gap(replay) >= REPLAY_GAP:
        worst = max(replay, key=lambda a: replay[a]["full_best"] - replay[a]["best_iou_mean"])
        first = (
            f"{worst}: the schedule loses most of its best trials; replay the sweep (`cloudmask replay`) and "
            "choose the grace period at which every architecture keeps its best trial, or `asha.enabled: false`"
        )
        return "biased", [first, *_rank_advice(table, archs, rungs, rf, max_epochs, asha_enabled)]
    short = [a for a, s in archs.items() if s["n_full"] < MIN_TRIALS]
    if short:
        advice = [
            f"{', '.join(short)}: fewer than {MIN_TRIALS} trials ran every epoch, so early and final scores "
            "cannot be compared; run the sweep with `asha.enabled: false` (or more trials) to audit it, then "
            "`cloudmask replay` it to choose a grace period"
        ]
        return "cannot tell", advice
    if len(archs) < 2:
        verdict = "single architecture"
    else:
        big = [g for g in gaps if g["rho_gap"] >= RHO_GAP]
        if not big:
            noisy = any(table[(table.arch == a) & (table.rung == rungs[0])].spearman.iloc[0] < RHO_OK for a in archs)
            verdict = "unreliable" if noisy else "fair"
        elif any(g["ci_low"] > 0 for g in big):
            verdict = "biased"
        else:
            verdict = "possibly biased"
    return verdict, _rank_advice(table, archs, rungs, rf, max_epochs, asha_enabled)


def _rank_advice(table, archs, rungs, rf, max_epochs, asha_enabled) -> list[str]:
    """Per architecture whose first rung ranks trials poorly: the first rung that ranks well, or no ASHA."""
    advice = []
    what = "stops" if asha_enabled else "would stop"
    for arch in archs:
        rows = table[table.arch == arch].set_index("rung")["spearman"]
        if rows[rungs[0]] >= RHO_OK:
            continue
        later = [r for r in rungs[1:] if rows[r] >= RHO_OK]
        if later:
            advice.append(
                f"{arch}: the IoU at epoch {rungs[0]} ranks trials unlike the last epoch (rho {rows[rungs[0]]:.2f}); "
                f"at epoch {later[0]} it does (rho {rows[later[0]]:.2f}): set `asha.grace_period: {later[0]}`"
            )
        else:
            fewer = " or `asha.reduction_factor: 2` (stop half the trials at each rung, not more)" if rf > 2 else ""
            advice.append(
                f"{arch}: no rung before epoch {max_epochs} ranks trials like the last epoch (rho < {RHO_OK} at "
                f"every rung), so ASHA {what} trials on noise: set `asha.enabled: false`{fewer}"
            )
    return advice


__all__ = [
    "AUDIT_COLUMNS",
    "CURVE_COLUMNS",
    "MIN_TRIALS",
    "REPLAY_GAP",
    "RHO_GAP",
    "RHO_OK",
    "ProtocolAudit",
    "TrialCurve",
    "asha_rungs",
    "audit_protocol",
    "curves_from_sweep",
    "spearman",
    "spearman_bootstrap",
]
