"""A finished sweep's per-epoch curves, read back from MLflow: the input of the protocol audit and the replay.

:func:`load_sweep` finds a sweep's :class:`~harness.sweep.result.SweepResult` s (one per architecture) and its
resolved benchmark; :func:`sweep_curves` reads each trial's ``val_iou`` and ``epoch_seconds`` per epoch
(:func:`harness.tracking.reader.trial_curves`); :func:`protocol_audit` is the final comparison's audit
(:func:`harness.audit.ranks.audit_protocol`) of the sweeps it compares.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from harness.audit.asha_replay import replay_sweep
from harness.audit.ranks import ProtocolAudit, TrialCurve, audit_protocol, curves_from_sweep
from harness.errors import ReplayError, TrackingError
from harness.sweep.result import SWEEP_RESULT_FILE, SweepResult
from harness.tracking import download_artifacts, load_dict, sweep_parent_runs
from harness.tracking.reader import trial_curves

#: Random arrival orders the comparison's audit replays the configured schedule over.
REPLAY_ORDERS = 200


def load_sweep(
    uri: str, experiment: str, sweep_id: str | None = None, *, benchmark: str | None = None
) -> tuple[str, dict[str, SweepResult], dict]:
    """(sweep id, {arch: SweepResult}, the sweep's resolved benchmark as a dict or {}) from the store."""
    sweep_id, parents = sweep_parent_runs(uri, experiment, sweep_id, benchmark=benchmark)
    sweeps, raw = {}, {}
    for arch, run_id in parents.items():
        try:
            sweeps[arch] = SweepResult.from_dict(load_dict(uri, run_id, SWEEP_RESULT_FILE))
        except TrackingError:
            continue  # an architecture whose sweep did not finish
        if not raw:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    raw = yaml.safe_load(Path(download_artifacts(uri, run_id, "benchmark.yaml", tmp)).read_text())
            except Exception:  # a sweep logged before benchmark.yaml existed: defaults apply
                raw = {}
    if not sweeps:
        raise ReplayError(f"sweep {sweep_id}: no architecture has a {SWEEP_RESULT_FILE} (did the sweep finish?)")
    return sweep_id, sweeps, raw or {}


def sweep_curves(
    uri: str, sweep: SweepResult, *, durations: bool = True
) -> tuple[list[TrialCurve], list[list[float]] | None]:
    """The sweep's trial curves (validation IoU per epoch) and their epoch durations (None when incomplete)."""
    run_ids = [t.run_id for t in sweep.trials if t.run_id]
    curves = curves_from_sweep(sweep, trial_curves(uri, run_ids))
    if not durations:
        return curves, None
    seconds = trial_curves(uri, run_ids, "epoch_seconds")
    times = [[v for _, v in seconds.get(c.run_id or "", [])] for c in curves]
    if any(len(d) < c.epochs or not all(x > 0 for x in d) for d, c in zip(times, curves, strict=True)):
        return curves, None
    return curves, times


def protocol_audit(bench, sweeps: Mapping[str, SweepResult], *, orders: int = REPLAY_ORDERS) -> ProtocolAudit:
    """The final comparison's audit of its sweeps (:func:`harness.audit.ranks.audit_protocol`), curves from MLflow.

    The ASHA settings and concurrency are the ones the sweep ran with (its stored ``benchmark.yaml``), else
    ``bench``'s. When every trial ran every epoch, the configured schedule is also replayed over the curves
    (``orders`` random arrival orders) and its cost per architecture goes into the audit.
    """
    uri, experiment = bench.tracking.uri, bench.tracking.experiment
    try:
        _, _, raw = load_sweep(uri, experiment, next(iter(sweeps.values())).sweep_id)
    except (TrackingError, ReplayError):
        raw = {}
    asha = {**dataclasses.asdict(bench.asha), **(raw.get("asha") or {})}
    grace, rf = int(asha["grace_period"]), float(asha["reduction_factor"])
    concurrency = int((raw.get("search") or {}).get("max_concurrent", bench.search.max_concurrent))
    curves = {arch: sweep_curves(uri, s) for arch, s in sweeps.items()}
    max_epochs = max(s.max_epochs for s in sweeps.values())
    replay = None
    if grace < max_epochs:
        try:
            summary, _ = replay_sweep(
                sweeps, curves, grace_periods=[grace], reduction_factors=[rf], orders=orders, concurrency=concurrency,
                timing="recorded" if all(d is not None for _, d in curves.values()) else "equal",
            )  # fmt: skip
        except ReplayError:  # trials ASHA stopped: their later epochs are unknown
            summary = None
        if summary is not None:
            off = summary[summary.asha == "off"].set_index("arch")
            replay = {
                r.arch: {
                    "full_best": float(off.loc[r.arch, "best_iou_mean"]),
                    "best_iou_mean": float(r.best_iou_mean),
                    "p_found_best": float(r.p_found_best),
                    "epochs_fraction_mean": float(r.epochs_fraction_mean),
                    "orders": int(r.orders),
                    "concurrency": concurrency,
                }
                for r in summary[summary.asha == "on"].itertuples()
            }
    return audit_protocol(
        {arch: c for arch, (c, _) in curves.items()},
        max_epochs=max_epochs,
        grace_period=grace,
        reduction_factor=rf,
        asha_enabled=bool(asha["enabled"]),
        n_boot=bench.compare.bootstrap_samples,
        replay=replay,
    )
