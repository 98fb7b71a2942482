"""Search efficiency with confidence: TPE + ASHA, TPE alone, ASHA alone and random search over many seeds.

Benchmark: ``benchmarks/search-efficiency.yaml`` (U-Net, 8 epochs, a finite space of 72 configurations:
6 learning rates x 3 depths x 2 widths x 2 norms, from dead ones at IoU 0 to the best at 0.89). Every
configuration is trained once (``search_pool.py``; its curves are kept in ``results/search_pool.json``).
A sweep of this benchmark that runs one trial at a time is then a deterministic function of its searcher
seed, and :func:`harness.audit.search_replay.replay_search` replays it exactly: the same Optuna sampler the
sweep builds (:func:`harness.sweep.sampling.make_sampler`), the same intermediate values and PRUNED / COMPLETE
states, Ray's ASHA rule. ``--check-trials N`` runs one real sweep (``harness.sweep.driver.run_sweep``, TPE + ASHA)
and compares it with its replay: the same configurations in the same order, the same stops, its MLflow
curves equal to the pool's.

Per strategy and searcher seed (``--seeds``), ``trials`` trials per sweep:

- ``search_iou_gap`` = best final validation IoU the sweep finds (``select_best``'s rule: trials that ran
  every epoch) - best final validation IoU of any configuration in the space (<= 0; 0 = found the best);
- ``search_epochs_fraction`` = epochs run / (trials x epochs);
- ``gap_vs_random``: best found - random search's best at the same seed (paired);
- ``equal_epochs_gap_vs_random``: the ASHA strategies get random search's epochs (trials x epochs) and run
  up to 4x the trials (the sampler set up for that many); best found within them - random search's best.

Each is reported as the mean over seeds with a 95 % percentile-bootstrap interval over seeds. A grid of
TPE + ASHA settings (grace period x TPE start-up trials) is what the shipped defaults are chosen from.

    python benchmarks/perf/search_efficiency.py --quick --json benchmarks/perf/results/search_efficiency.json
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import perfutil
import search_pool

#: name: (sampler, ASHA grace period or None); "configured" is the benchmark's asha.grace_period.
STRATEGIES = {
    "tpe_asha": ("tpe", "configured"),
    "tpe_asha_grace2": ("tpe", 2),
    "tpe_asha_grace4": ("tpe", 4),
    "tpe": ("tpe", None),
    "random_asha": ("random", "configured"),
    "random": ("random", None),
}


def mean_ci(values, *, n_boot: int = 10000, seed: int = 0) -> dict[str, float]:
    """Mean with a 95 % percentile-bootstrap interval over the values (searcher seeds)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    boot = x[np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return {"mean": float(x.mean()), "ci_low": float(low), "ci_high": float(high), "n": len(x)}


def _pool(pool: dict) -> tuple[dict, float]:
    curves = {k: c["val_iou"] for k, c in search_pool.pool_curves(pool).items()}
    max_epochs = pool["max_epochs"]
    return curves, max(v[-1] for v in curves.values() if len(v) == max_epochs and math.isfinite(v[-1]))


def run_strategies(pool: dict, seeds: list[int], trials: int, grace: int, rf: int) -> dict[str, dict]:
    """Replay every strategy for every seed; per strategy: per-seed values and their summaries."""
    from harness.audit.search_replay import replay_search

    curves, optimum = _pool(pool)
    max_epochs, space = pool["max_epochs"], pool["space"]
    budget = trials * max_epochs
    per_seed: dict[str, dict[str, list]] = {name: {"best": [], "epochs": [], "best_eq": []} for name in STRATEGIES}
    for seed in seeds:
        for name, (sampler, g) in STRATEGIES.items():
            asha = None if g is None else (grace if g == "configured" else g, rf)
            kw = {"space": space, "sampler": sampler, "seed": seed, "asha": asha, "max_epochs": max_epochs}
            run = replay_search(curves, trials=trials, **kw)
            per_seed[name]["best"].append(run.best)
            per_seed[name]["epochs"].append(sum(run.epochs))
            # Equal epochs: an ASHA sweep set up for 4x the trials, cut when it has spent random search's epochs.
            eq = replay_search(curves, trials=4 * trials, **kw).best_within(budget) if asha else run.best
            per_seed[name]["best_eq"].append(eq)
    random_best = np.array(per_seed["random"]["best"])
    out = {}
    for name, values in per_seed.items():
        best, best_eq = np.array(values["best"]), np.array(values["best_eq"])
        out[name] = {
            "search_iou_gap": mean_ci(best - optimum),
            "search_epochs_fraction": mean_ci(np.array(values["epochs"]) / budget),
            "gap_vs_random": mean_ci(best - random_best),
            "equal_epochs_gap_vs_random": mean_ci(best_eq - random_best),
            "found_optimum": float(np.mean(best >= optimum)),
            "per_seed_best": [float(v) for v in best],
            "per_seed_epochs": values["epochs"],
            "per_seed_best_equal_epochs": [float(v) for v in best_eq],
        }
    return {"optimum": optimum, "strategies": out}


def default_grid(pool: dict, seeds: list[int], trials: int, graces, startups, rf: int) -> list[dict]:
    """TPE (+ ASHA) per (grace period or None, start-up trials): gap, epochs, and the paired difference to
    the same grace period with today's start-up (``harness.sweep.sampling.tpe_startup_trials``)."""
    from harness.audit.search_replay import replay_search
    from harness.sweep.sampling import tpe_startup_trials

    curves, optimum = _pool(pool)
    max_epochs = pool["max_epochs"]
    shipped = tpe_startup_trials(trials)
    rows, gaps = [], {}
    for grace in graces:
        for startup in sorted({*startups, shipped}):
            best, epochs = [], []
            for seed in seeds:
                run = replay_search(
                    curves, space=pool["space"], sampler="tpe", seed=seed, trials=trials,
                    asha=None if grace is None else (grace, rf), max_epochs=max_epochs, startup_trials=startup,
                )  # fmt: skip
                best.append(run.best - optimum)
                epochs.append(sum(run.epochs) / (trials * max_epochs))
            gaps[(grace, startup)] = np.array(best)
            rows.append(
                {
                    "grace_period": grace,
                    "startup_trials": startup,
                    "search_iou_gap": mean_ci(best),
                    "search_epochs_fraction": mean_ci(epochs),
                }
            )
    for row in rows:
        row["gap_vs_shipped_startup"] = mean_ci(
            gaps[(row["grace_period"], row["startup_trials"])] - gaps[(row["grace_period"], shipped)]
        )
    return rows


def rank_correlations(pool: dict) -> dict[int, float]:
    """Spearman correlation of each epoch's validation IoU with the last epoch's, over the configurations."""
    from harness.audit.ranks import spearman

    max_epochs = pool["max_epochs"]
    full = [c["val_iou"] for c in pool["configs"] if len(c["val_iou"]) == max_epochs]
    return {e: spearman([c[e - 1] for c in full], [c[-1] for c in full]) for e in range(1, max_epochs)}


def _fmt(s: dict, digits: int = 3) -> str:
    return f"{s['mean']:+.{digits}f} [{s['ci_low']:+.{digits}f}, {s['ci_high']:+.{digits}f}]"


def main() -> None:
    p = perfutil.parser(__doc__)
    p.add_argument("--seeds", type=int, help="searcher seeds (default: 100 quick, 400 full)")
    p.add_argument("--trials", default="8,16", help="comma-separated trials per sweep (default: 8,16)")
    p.add_argument("--check-trials", type=int, default=8, help="trials of the real sweep checked (0: no check)")
    p.add_argument("--workers", type=int, default=2, help="processes recording the pool when it is missing")
    args = p.parse_args()
    perfutil.quiet_logs()
    from harness.config import load_benchmark
    from harness.sweep.sampling import tpe_startup_trials

    started = time.perf_counter()
    bench = load_benchmark(search_pool.BENCHMARK)
    pool = search_pool.record_pool(bench, workers=args.workers)
    seeds = list(range(args.seeds or (100 if args.quick else 400)))
    grace, rf = bench.asha.grace_period, bench.asha.reduction_factor
    budgets = [int(t) for t in args.trials.split(",")]
    results = {n: run_strategies(pool, seeds, n, grace, rf) for n in budgets}
    grid = {n: default_grid(pool, seeds, n, (1, 2, 4, None), (2, 4, 8), rf) for n in budgets}
    check = None
    if args.check_trials:
        with tempfile.TemporaryDirectory(prefix="perf-search-") as tmp:
            check = search_pool.check_real_sweep(bench, pool, Path(tmp), seed=0, trials=args.check_trials)
    ranks = rank_correlations(pool)
    print("Spearman, epoch e vs epoch 8 over the space:", ", ".join(f"{e}: {r:.2f}" for e, r in ranks.items()))
    for n in budgets:
        print(f"\n{n} trials, {len(seeds)} seeds; optimum of the space {results[n]['optimum']:.4f}")
        for name, r in results[n]["strategies"].items():
            print(
                f"{name:16s} gap {_fmt(r['search_iou_gap'])}  epochs {r['search_epochs_fraction']['mean']:.2f}  "
                f"vs random {_fmt(r['gap_vs_random'])}  at equal epochs {_fmt(r['equal_epochs_gap_vs_random'])}"
            )
        for row in grid[n]:
            asha = "no ASHA " if row["grace_period"] is None else f"grace {row['grace_period']}"
            print(
                f"TPE {asha:8s} startup {row['startup_trials']:2d}: gap {_fmt(row['search_iou_gap'])} "
                f"epochs {row['search_epochs_fraction']['mean']:.2f}  vs shipped start-up "
                f"{_fmt(row['gap_vs_shipped_startup'])}"
            )
    payload = {
        "budgets": {str(n): results[n] for n in budgets},
        "pool_spearman_vs_last_epoch": {str(e): r for e, r in ranks.items()},
        "defaults_grid": {str(n): grid[n] for n in budgets},
        "check_real_sweep": check,
        "config": {
            "benchmark": str(search_pool.BENCHMARK.relative_to(search_pool.REPO)),
            "arch": pool["arch"],
            "configurations": len(pool["configs"]),
            "trials": budgets,
            "epochs": pool["max_epochs"],
            "seeds": len(seeds),
            "asha": {"grace_period": grace, "reduction_factor": rf},
            "tpe_startup_trials": {str(n): tpe_startup_trials(n) for n in budgets},
            "equal_epochs_trials": {str(n): 4 * n for n in budgets},
            "pool_record_seconds": pool["record_seconds"],
            "pool_fingerprint": pool["fingerprint"],
        },
    }
    perfutil.finish(args, payload, started)
    if check is not None and not (check["same_configs"] and check["same_stops"] and check["max_abs_curve_diff"] < 1e-6):
        # The replay stands in for training only while it is exact: a stale pool must not pass for a result.
        sys.exit(f"the real sweep does not match the replay ({check}); re-record the pool (search_pool.py)")


if __name__ == "__main__":
    main()
