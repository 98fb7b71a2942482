"""Search efficiency: TPE + ASHA vs random search at full budget, same trial count, several searcher seeds.

Both are ``harness.sweep.run_sweep`` on smoke.yaml (synthetic data, its search space for U-Net: lr and
depth), differing only in ``search.sampler`` (tpe | random) and ``asha.enabled`` (true | false). For each
searcher seed, from MLflow (``harness.tracking.read_sweep``):

- ``search_iou_gap`` = best validation IoU of TPE+ASHA - best of random full budget (best among the
  trials that ran every epoch: what the sweep itself would pick), averaged over seeds;
- ``search_epochs_fraction`` = epochs run by TPE+ASHA / epochs run by random full budget (summed over seeds).

One Ray instance serves every sweep (``run_sweep`` reuses it), each sweep has its own MLflow store.

    python benchmarks/perf/search_efficiency.py --quick --json benchmarks/perf/results/search_efficiency.json
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import perfutil

ARCH = "unet"


def one_sweep(workdir: Path, name: str, seed: int, trials: int, epochs: int, baseline: bool) -> dict:
    """Run one sweep and return its trials' epochs and IoUs as MLflow holds them."""
    from harness import sweep
    from harness.config import load_benchmark

    uri, experiment = f"sqlite:///{workdir / name / 'mlflow.db'}", "perf-search"
    overrides = [
        f"name=perf-search-{name}",
        f"data.synthetic={json.dumps(perfutil.synthetic(32))}",
        f"data.cache_dir={perfutil.cache_dir(32)}",
        f"architectures=[{ARCH}]",
        f"search.seed={seed}",
        f"search.num_samples={trials}",
        f"train.epochs={epochs}",
        "train.device=cpu",
        f"search.sampler={'random' if baseline else 'tpe'}",
        f"asha.enabled={'false' if baseline else 'true'}",
        f"tracking.uri={uri}",
        f"tracking.experiment={experiment}",
        f"storage={workdir / name / 'sweep'}",
    ]
    bench = load_benchmark(perfutil.SMOKE, overrides)
    start = time.perf_counter()
    (outcome,) = sweep.run_sweep(bench)
    wall = time.perf_counter() - start
    trials_ = [{"epochs": t.epochs, "val_iou": t.val_iou, "stopped_by": t.stopped_by} for t in outcome.trials]
    complete = [t["val_iou"] for t in trials_ if t["epochs"] == epochs]
    return {
        "wall_s": wall,
        "epochs": int(sum(t["epochs"] for t in trials_)),
        "best_val_iou": max(complete) if complete else float("nan"),
        "best_val_iou_any": max(t["val_iou"] for t in trials_),
        "trials": trials_,
    }


def reuse_actors() -> None:
    """Make ``harness.sweep`` ask Tune to reuse trial actors (a proposed change to its ``TuneConfig``)."""
    import functools

    from ray import tune

    tune.TuneConfig = functools.partial(tune.TuneConfig, reuse_actors=True)


def main() -> None:
    p = perfutil.parser(__doc__)
    p.add_argument(
        "--reuse-actors",
        action="store_true",
        help="run the sweeps with Tune's reuse_actors=True (harness.sweep does not set it today)",
    )
    args = p.parse_args()
    perfutil.quiet_logs()
    import ray

    if args.reuse_actors:
        reuse_actors()

    started = time.perf_counter()
    seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    trials, epochs = (8, 4) if args.quick else (16, 8)
    perfutil.prepare(32)
    per_seed = []
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="perf-search-") as tmp:
            for seed in seeds:
                tpe = one_sweep(Path(tmp), f"tpe-asha-{seed}", seed, trials, epochs, baseline=False)
                rnd = one_sweep(Path(tmp), f"random-full-{seed}", seed, trials, epochs, baseline=True)
                per_seed.append({"seed": seed, "tpe_asha": tpe, "random_full": rnd})
    finally:
        ray.shutdown()
    gaps = [s["tpe_asha"]["best_val_iou"] - s["random_full"]["best_val_iou"] for s in per_seed]
    results = {
        "search_iou_gap": float(np.mean(gaps)),
        "search_iou_gap_per_seed": gaps,
        "search_epochs_fraction": sum(s["tpe_asha"]["epochs"] for s in per_seed)
        / sum(s["random_full"]["epochs"] for s in per_seed),
        "wall_fraction": sum(s["tpe_asha"]["wall_s"] for s in per_seed)
        / sum(s["random_full"]["wall_s"] for s in per_seed),
        "config": {
            "arch": ARCH,
            "trials": trials,
            "epochs": epochs,
            "seeds": seeds,
            "data": "smoke (32 px)",
            "reuse_actors": args.reuse_actors,
        },
        "per_seed": per_seed,
    }
    perfutil.finish(args, results, started)


if __name__ == "__main__":
    main()
