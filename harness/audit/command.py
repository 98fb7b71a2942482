"""``cloudmask replay``: replay ASHA schedules over a finished sweep's recorded curves and print the table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.audit.asha_replay import replay_sweep
from harness.audit.curves import load_sweep, sweep_curves
from harness.config import load_benchmark
from harness.report.format import fmt_rate, md_table
from harness.tracking import check_tracking_uri, latest_sweep


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table (what the command prints)."""
    rows = []
    for r in summary.itertuples():
        schedule = "no ASHA" if r.asha == "off" else f"grace {r.grace_period:g}, factor {r.reduction_factor:g}"
        rows.append(
            [
                r.arch,
                schedule,
                fmt_rate(r.best_iou_mean),
                fmt_rate(r.best_iou_p05),
                fmt_rate(r.best_iou_median),
                fmt_rate(r.p_found_best, 2),
                f"{r.epochs_fraction_mean:.2f} (max {r.epochs_fraction_max:.2f})",
                f"{r.completed_mean:.1f}",
            ]
        )
    header = ["arch", "schedule", "best IoU mean", "p05", "median", "P(found best)", "epochs spent", "ran every epoch"]
    return md_table(header, rows)


def replay_command(args) -> int:
    """``cloudmask replay``: read the sweep, replay the grid of schedules, print the table, write the CSVs."""
    bench = load_benchmark(args.benchmark) if args.benchmark else None
    uri = args.tracking_uri or (bench.tracking.uri if bench else "sqlite:///mlflow.db")
    uri = check_tracking_uri(uri, must_exist=True)
    experiment = args.experiment or (bench.tracking.experiment if bench else latest_sweep(uri)[0])
    sweep_id, sweeps, raw = load_sweep(uri, experiment, args.sweep_id, benchmark=bench.name if bench else None)
    concurrency = args.concurrency or (
        bench.search.max_concurrent if bench else int((raw.get("search") or {}).get("max_concurrent", 1))
    )
    curves = {arch: sweep_curves(uri, sweep) for arch, sweep in sweeps.items()}
    timing = args.timing if all(d is not None for _, d in curves.values()) else "equal"
    summary, runs = replay_sweep(
        sweeps,
        curves,
        grace_periods=args.grace_periods,
        reduction_factors=args.reduction_factors,
        orders=args.orders,
        concurrency=concurrency,
        timing=timing,
        seed=args.seed,
    )
    out = Path(args.out or f"replay-{sweep_id}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out, index=False)
    runs.to_csv(out.with_name(f"{out.stem}-runs.csv"), index=False)
    n = {arch: len(s.trials) for arch, s in sweeps.items()}
    print(
        f"sweep {sweep_id}: {', '.join(f'{a} {k} trials' for a, k in n.items())}, "
        f"{next(iter(sweeps.values())).max_epochs} epochs; {args.orders} random arrival orders per schedule, "
        f"{concurrency} trial(s) at a time, epoch durations {'as recorded' if timing == 'recorded' else 'equal'}\n"
    )
    print(format_summary(summary))
    print(f"\nsummary: {out}\nper order: {out.with_name(f'{out.stem}-runs.csv')}")
    return 0
