"""The closing summary of a sweep: per architecture how its trials ended and its best trial, then where to look.

Printed by ``cloudmask sweep`` and ``cloudmask demo`` at every verbosity (``--quiet`` included). Built from
the :class:`~harness.sweep.result.SweepResult` each architecture recorded, so it says what the
comparison will use. A light module: no torch, no ray.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from harness.config import Benchmark
from harness.console import table
from harness.sweep.result import SweepResult

#: ``stopped_by`` values grouped as the summary counts them.
_FAILED = ("diverged", "error")


def sweep_rows(results: Sequence[SweepResult], searched: Mapping[str, Sequence[str]]) -> list[dict]:
    """One row per architecture: trials, how they ended, the best trial, its validation IoU and searched values."""
    rows = []
    for result in results:
        ended = [t.stopped_by for t in result.trials]
        row = {
            "architecture": result.arch,
            "trials": len(ended),
            "completed": ended.count("completed"),
            "stopped (ASHA)": ended.count("asha"),
            "failed": sum(ended.count(s) for s in _FAILED),
            "best trial": result.best.trial_id if result.best else "none",
            "val_iou": result.best.val_iou if result.best else None,
        }
        if result.best is not None:
            config = dataclasses.asdict(result.best.config)
            row.update({key: config.get(key) for key in searched.get(result.arch, ())})
        rows.append(row)
    return rows


def sweep_summary(
    results: Sequence[SweepResult],
    bench: Benchmark,
    *,
    study_storage: str,
    runs_view: str,
    benchmark_file: str | None = None,
) -> str:
    """The summary text: the budget, the table, and where to look next (``benchmark_file``: the compare command's)."""
    searched = {arch: list(space) for arch, space in bench.search_spaces.items()}
    keys = list(dict.fromkeys(k for arch in bench.architectures for k in searched.get(arch, ())))
    columns = ["architecture", "trials", "completed", "stopped (ASHA)", "failed", "best trial", "val_iou", *keys]
    budget = f"{bench.search.num_samples} trials of at most {bench.train.epochs} epochs, "
    budget += f"{bench.search.sampler.upper()} seed {bench.search.seed}"
    if bench.asha.enabled:
        budget += f", ASHA grace {bench.asha.grace_period} factor {bench.asha.reduction_factor}"
    sweep_id = results[0].sweep_id if results else "(none)"
    lines = [
        f"Sweep {sweep_id}: the same budget for each architecture ({budget})",
        table(sweep_rows(results, searched), columns),
        "Next:",
    ]
    if benchmark_file is not None:
        seeds = ", ".join(str(s) for s in bench.compare.seeds)
        lines.append(f"  compare:  cloudmask compare {benchmark_file}   (retrains each best config over seeds {seeds})")
    lines += [
        f"  MLflow:   {runs_view}",
        f"  Optuna:   optuna-dashboard {study_storage}   (studies {sweep_id}-<architecture>)",
    ]
    return "\n".join(lines)


__all__ = ["sweep_rows", "sweep_summary"]
