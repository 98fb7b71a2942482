"""The recorded pool behind search_efficiency.py: every configuration of a finite search space, trained once.

A benchmark whose search space is all categorical (``benchmarks/search-efficiency.yaml``: 6 learning
rates x 3 depths x 2 widths x 2 norms = 72 configurations) has finitely many trials a sweep can run. Each
is trained here once with :func:`harness.training.loop.fit`, the function every sweep trial calls, on one CPU
thread (what a ``resources.cpu: 1`` Ray trial gets), and its per-epoch validation IoU is kept. Training
is deterministic, so a sweep that samples a configuration gets exactly this curve, and a trial ASHA stops
after r epochs has exactly its first r values: searchers and schedulers can then be replayed over the
pool instead of training. :func:`check_real_sweep` verifies that claim against a real ``run_sweep``.

    python benchmarks/perf/search_pool.py [--benchmark FILE] [--workers 2]   # (re)records the pool
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCHMARK = REPO / "benchmarks" / "search-efficiency.yaml"
POOL = Path(__file__).resolve().parent / "results" / "search_pool.json"


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def pool_space(bench, arch: str) -> dict[str, list]:
    """The categorical choices of ``arch``'s search space (ValueError for any continuous entry)."""
    space = bench.search_spaces[arch]
    bad = [k for k, spec in space.items() if spec["type"] != "categorical"]
    if bad:
        raise ValueError(f"{bench.name}: {arch} searches {bad} over a range; a pool needs categorical entries")
    return {k: list(spec["choices"]) for k, spec in space.items()}


def fingerprint(bench, arch: str, data_hash: str) -> str:
    """What the pool's curves depend on: fixed config, space, the split and its pixels, torch's version.

    ``data_hash`` (``PreparedData.data_hash``) covers the split and every patch's pixels and mask: a new
    synthetic generator (``SYNTH_VERSION``) keeps the patch names (so the split hash) and changes the pixels.
    """
    import torch

    from harness.config import to_flat

    payload = {
        "fixed": to_flat(bench.trial_config(arch)),
        "space": pool_space(bench, arch),
        "data_hash": data_hash,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # a resources.cpu=1 Ray trial runs with OMP_NUM_THREADS=1


def _train(flat: dict[str, Any], data) -> dict[str, Any]:
    from harness.config import from_flat
    from harness.training.loop import fit

    result = fit(from_flat(flat), data, None)
    return {
        "val_iou": [float(h["val_iou"]) if h.get("val_iou") is not None else float("nan") for h in result.history],
        "epoch_seconds": [float(h["epoch_seconds"]) for h in result.history],
        "status": result.status,
    }


def record_pool(bench, arch: str = "unet", *, workers: int = 2, path: Path = POOL, progress: bool = True) -> dict:
    """Train every configuration of ``arch``'s categorical space once; write and return the pool.

    An existing pool file with the same :func:`fingerprint` is returned unchanged.
    """
    from harness.config import to_flat
    from harness.data.prepare import prepare_data

    data = prepare_data(**bench.prepare_args())
    fp = fingerprint(bench, arch, data.data_hash)
    if path.is_file():
        pool = json.loads(path.read_text())
        if pool.get("fingerprint") == fp:
            return pool
    space = pool_space(bench, arch)
    fixed = to_flat(bench.trial_config(arch))
    combos = [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]
    started = time.perf_counter()
    configs = []
    os.environ["OMP_NUM_THREADS"] = "1"
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that has imported torch
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, mp_context=spawn) as ex:
        futures = [ex.submit(_train, {**fixed, **params}, data) for params in combos]
        for i, (params, fut) in enumerate(zip(combos, futures, strict=True)):
            configs.append({"params": params, **fut.result()})
            if progress:
                print(f"[{i + 1}/{len(combos)}] {params} -> {configs[-1]['val_iou'][-1]:.3f}", flush=True)
    pool = {
        "fingerprint": fp,
        "benchmark": bench.name,
        "arch": arch,
        "split_hash": data.split_hash,
        "max_epochs": bench.train.epochs,
        "space": space,
        "record_seconds": round(time.perf_counter() - started, 1),
        "workers": workers,
        "configs": configs,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pool, indent=1) + "\n")
    return pool


def pool_curves(pool: dict) -> dict[str, dict[str, Any]]:
    """Configuration key (sorted JSON of its params) -> its recorded entry."""
    return {_key(c["params"]): c for c in pool["configs"]}


def check_real_sweep(bench, pool: dict, workdir: Path, *, seed: int, trials: int) -> dict[str, Any]:
    """Run one real TPE + ASHA sweep (one trial at a time) and compare it with its replay over the pool.

    Returns the largest difference between a real trial's per-epoch validation IoU and the pool's curve
    of the same configuration, and whether the replay chose the same configurations in the same order
    and stopped the same trials after the same epochs.
    """
    from harness.audit.search_replay import replay_search
    from harness.sweep.driver import run_sweep
    from harness.tracking.reader import trial_curves

    arch = pool["arch"]
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    from harness.config import load_benchmark

    real = load_benchmark(
        bench.source,
        [
            f"architectures=[{arch}]",
            f"search.seed={seed}",
            f"search.num_samples={trials}",
            "search.sampler=tpe",
            "search.max_concurrent=1",
            "asha.enabled=true",
            f"tracking.uri={uri}",
            f"storage={workdir / 'sweep'}",
        ],
    )
    started = time.perf_counter()
    (sweep,) = run_sweep(real)  # a private local Ray instance, as `cloudmask sweep` starts one
    wall = time.perf_counter() - started
    curves = trial_curves(uri, [t.run_id for t in sweep.trials if t.run_id])
    entries = pool_curves(pool)
    space = list(pool["space"])
    # The order the searcher was asked in: the sweep's Optuna study numbers its trials, each with its Ray id.
    import optuna

    study = optuna.load_study(
        study_name=f"{sweep.sweep_id}-{arch}", storage=f"sqlite:///{workdir / 'sweep' / 'optuna.db'}"
    )
    asked = {t.user_attrs["ray_trial_id"]: t.number for t in study.trials}
    ordered = sorted(sweep.trials, key=lambda t: asked[t.trial_id])
    real_configs = [{k: getattr(t.config, k) for k in space} for t in ordered]
    diffs = []
    for t, params in zip(ordered, real_configs, strict=True):
        recorded = entries[_key(params)]["val_iou"]
        values = [v for _, v in curves.get(t.run_id, [])]
        diffs += [abs(a - b) for a, b in zip(values, recorded, strict=False)]
    replay = replay_search(
        {k: entries[k]["val_iou"] for k in entries},
        space=pool["space"],
        sampler="tpe",
        seed=seed,
        trials=trials,
        asha=(real.asha.grace_period, real.asha.reduction_factor),
        max_epochs=pool["max_epochs"],
    )
    return {
        "seed": seed,
        "trials": trials,
        "wall_s": round(wall, 1),
        "max_abs_curve_diff": max(diffs) if diffs else float("nan"),
        "same_configs": [json.loads(k) for k in replay.keys] == real_configs,
        "real_epochs": [t.epochs for t in ordered],
        "replay_epochs": list(replay.epochs),
        "same_stops": list(replay.epochs) == [t.epochs for t in ordered],
        "real_best_val_iou": sweep.best.val_iou if sweep.best else float("nan"),
        "replay_best_val_iou": replay.best,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default=str(BENCHMARK), help="benchmark file with a categorical search space")
    p.add_argument("--arch", default="unet", help="architecture whose space is recorded")
    p.add_argument("--workers", type=int, default=2, help="training processes (one CPU thread each)")
    p.add_argument("--out", default=str(POOL), help="pool JSON to write (reused when its fingerprint matches)")
    args = p.parse_args()
    from harness.config import load_benchmark

    pool = record_pool(load_benchmark(args.benchmark), args.arch, workers=args.workers, path=Path(args.out))
    print(f"{len(pool['configs'])} configurations, recorded in {pool['record_seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
