"""Harness overhead: a one-trial sweep (Ray Tune + MLflow + per-epoch checkpoints) vs a bare PyTorch loop.

Both train the same U-Net (64 px patches, base 16, depth 3, batch 8, Adam, cross-entropy, smoke-like
synthetic data with augmentation) for the same epochs with the same torch thread count, in this one run:

- bare: ``torch.set_num_threads(T)``; a plain Adam + cross-entropy loop over a DataLoader of the cache;
- sweep: ``harness.sweep.driver.run_sweep`` on smoke.yaml overridden to one architecture, one trial,
  ``asha.enabled=false``, ``resources.cpu=T`` (Ray sets OMP_NUM_THREADS=T in the trial), a temporary
  storage and a SQLite MLflow store.

``harness_overhead_ratio`` = the trial's training images/s as logged to MLflow (``train_images_per_second``)
/ the bare loop's images/s. The bare loop runs before and after the sweep (averaged, so drifting machine
load hits both sides), plain (default memory format) and channels_last: against the latter,
``harness_overhead_ratio_same_kernels`` is the overhead alone, without the harness's choice of kernels.
Wall-clock ratios are reported too: for the whole trial (Tune's ``time_total_s``: setup, training,
evaluation, checkpoints, reports) and for the whole sweep (Ray start included). The difference is split
into fixed costs (Ray start, driver setup, actor start, trial setup, teardown) and per-epoch costs
(evaluation, checkpoint + report, driver latency).

    python benchmarks/perf/overhead.py --quick --json benchmarks/perf/results/overhead.json
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import perfutil
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

MODEL = {"arch": "unet", "depth": 3, "base_channels": 16}
PATCH, SCENES, BATCH, LR = 64, 30, 8, 3e-3


def bare_loop(data, epochs: int, threads: int, channels_last: bool = False) -> dict:
    """The plain loop: per-epoch images/s and the wall time from model construction to the last step.

    ``channels_last`` runs the same loop in the memory format the harness uses, which isolates the
    harness's overhead from its choice of kernels.
    """
    from harness.data.dataset import CloudPatchDataset
    from harness.models import build_model

    torch.set_num_threads(threads)
    started = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(MODEL["arch"], depth=MODEL["depth"], base_channels=MODEL["base_channels"])
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    optimiser = torch.optim.Adam(model.parameters(), lr=LR)
    dataset = CloudPatchDataset(data.cache_dir, data.indices("train"), augment=True, seed=0)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))
    per_epoch = []
    model.train()
    for epoch in range(1, epochs + 1):
        dataset.set_epoch(epoch)
        start, seen = time.perf_counter(), 0
        for images, masks in loader:
            images = images.contiguous(memory_format=memory_format)
            optimiser.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images), masks)
            loss.backward()
            optimiser.step()
            seen += images.shape[0]
        per_epoch.append(seen / (time.perf_counter() - start))
    return {
        "images_per_second_per_epoch": per_epoch,
        "images_per_second": float(np.mean(per_epoch)),
        "wall_s": time.perf_counter() - started,
        "images": seen * epochs,
        "threads": torch.get_num_threads(),
        "channels_last": channels_last,
    }


def sweep_trial(data, epochs: int, threads: int, workdir: Path) -> dict:
    """Run the one-trial sweep; read its figures back from MLflow and from Tune's result.json."""
    import ray
    from mlflow.tracking import MlflowClient

    from harness import sweep
    from harness.cluster import start_ray
    from harness.config import load_benchmark
    from harness.tracking import sweep_parent_runs

    uri, experiment = f"sqlite:///{workdir / 'mlflow.db'}", "perf-overhead"
    overrides = [
        "name=perf-overhead",
        f"data.synthetic={json.dumps(perfutil.synthetic(PATCH, scenes=SCENES))}",
        f"data.cache_dir={Path(data.cache_dir)}",
        f"architectures=[{MODEL['arch']}]",
        f"search_spaces.{MODEL['arch']}={{lr: {LR}, depth: {MODEL['depth']}}}",
        f"train.base_channels={MODEL['base_channels']}",
        f"train.batch_size={BATCH}",
        f"train.epochs={epochs}",
        "train.device=cpu",
        "search.num_samples=1",
        "search.max_concurrent=1",
        "asha.enabled=false",
        "failure.max_failures=0",
        f"resources.cpu={threads}",
        f"ray.num_cpus={threads}",
        f"tracking.uri={uri}",
        f"tracking.experiment={experiment}",
        f"storage={workdir / 'sweep'}",
    ]
    bench = load_benchmark(perfutil.SMOKE, overrides)
    t0 = time.time()
    start_ray(bench.ray, None)  # timed apart; run_sweep then reuses this instance
    t1 = time.time()
    try:
        outcomes = sweep.run_sweep(bench)
    finally:
        ray.shutdown()
    t_end = time.time()
    assert outcomes and outcomes[0].best is not None, outcomes

    (trial,) = outcomes[0].trials
    _sweep_id, parents = sweep_parent_runs(uri, experiment, outcomes[0].sweep_id)
    client = MlflowClient(uri)
    parent, child = client.get_run(parents[MODEL["arch"]]), client.get_run(trial.run_id)
    ips_hist = sorted(client.get_metric_history(trial.run_id, "train_images_per_second"), key=_step)
    mlflow_ips = [m.value for m in ips_hist]
    epoch_s = [m.value for m in sorted(client.get_metric_history(trial.run_id, "epoch_seconds"), key=_step)]
    (result_file,) = (workdir / "sweep" / MODEL["arch"]).glob("*/result.json")
    results = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
    iter_s = [r["time_this_iter_s"] for r in results]
    images = len(data.indices("train"))
    train_s = [images / ips for ips in mlflow_ips]
    first_logged, last_logged = ips_hist[0].timestamp / 1000, ips_hist[-1].timestamp / 1000
    return {
        "images_per_second_per_epoch": mlflow_ips,
        "images_per_second": float(np.mean(mlflow_ips)),
        "sweep_wall_s": t_end - t0,
        "trial_wall_s": results[-1]["time_total_s"],
        "images": images * epochs,
        "fixed_s": {
            "ray_start": t1 - t0,
            # prepare_data (cache reused), sweep state, Optuna storage, Tune setup, MLflow parent run
            "driver_setup": parent.info.start_time / 1000 - t1,
            # from the trial's MLflow run creation to the trainable's first line: actor process start
            "actor_start": (first_logged - child.info.start_time / 1000) - iter_s[0],
            # inside the trainable before epoch 1 trains: imports, data check, model, loaders
            "trial_setup": iter_s[0] - epoch_s[0],
            # last epoch logged -> sweep returned: trial end, best checkpoint artifacts, ray.shutdown
            "teardown": t_end - last_logged,
        },
        "per_epoch_s": {
            "train": train_s,
            "eval": [e - t for e, t in zip(epoch_s, train_s, strict=True)],
            # time_this_iter_s runs from report to report: it adds the checkpoint + report to epoch_seconds
            "checkpoint_report": [i - e for i, e in zip(iter_s[1:], epoch_s[1:], strict=True)],
            # a result's arrival in MLflow after the previous one, minus the trainable's own time
            "driver_latency": [
                (b.timestamp - a.timestamp) / 1000 - i
                for a, b, i in zip(ips_hist[:-1], ips_hist[1:], iter_s[1:], strict=True)
            ],
        },
        "threads": threads,
    }


def checkpoint_cost(base: int, depth: int, workdir: Path) -> dict:
    """Size and save time of a per-epoch checkpoint (weights + Adam state) of a U-Net, as ``fit`` writes it."""
    from harness.config import TrainConfig
    from harness.training.checkpoints import CHECKPOINT_FILENAME, save_checkpoint
    from harness.training.loop import model_from_config

    model = model_from_config(TrainConfig(arch="unet", depth=depth, base_channels=base))
    optimiser = torch.optim.Adam(model.parameters())
    F.cross_entropy(model(torch.rand(1, 4, 32, 32)), torch.zeros(1, 32, 32, dtype=torch.long)).backward()
    optimiser.step()  # Adam's two moments now exist: the checkpoint has its real size
    state = {"model": model.state_dict(), "optimiser": optimiser.state_dict()}
    path = workdir / CHECKPOINT_FILENAME
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        save_checkpoint(path, state)
        seconds.append(time.perf_counter() - start)
    return {"base_channels": base, "depth": depth, "megabytes": path.stat().st_size / 1e6, "save_s": min(seconds)}


def _step(metric) -> int:
    return metric.step


def main() -> None:
    args = perfutil.parser(__doc__).parse_args()
    perfutil.quiet_logs()
    started = time.perf_counter()
    threads = torch.get_num_threads()
    epochs = 4 if args.quick else 10
    data = perfutil.prepare(PATCH, scenes=SCENES)
    # The bare loop runs before and after the sweep: both are averaged, so drift in machine load
    # (another process on a 2-core machine) hits both sides alike.
    perfutil.wait_quiet()
    bare_runs = [bare_loop(data, epochs, threads), bare_loop(data, epochs, threads, channels_last=True)]
    with tempfile.TemporaryDirectory(prefix="perf-overhead-") as tmp:
        swept = sweep_trial(data, epochs, threads, Path(tmp))
        checkpoints = [
            checkpoint_cost(MODEL["base_channels"], MODEL["depth"], Path(tmp)),
            checkpoint_cost(32, 4, Path(tmp)),
        ]
    bare_runs += [bare_loop(data, epochs, threads, channels_last=True), bare_loop(data, epochs, threads)]
    plain = [b for b in bare_runs if not b["channels_last"]]
    bare_ips = float(np.mean([b["images_per_second"] for b in plain]))
    bare_steady = float(np.mean([b["images_per_second_per_epoch"][1:] for b in plain]))
    bare_wall = float(np.mean([b["wall_s"] for b in plain]))
    same_kernels = float(np.mean([b["images_per_second"] for b in bare_runs if b["channels_last"]]))
    images = swept["images"]
    per_epoch = {k: float(np.mean(v)) if v else 0.0 for k, v in swept["per_epoch_s"].items()}
    results = {
        "harness_overhead_ratio": swept["images_per_second"] / bare_ips,
        # vs the bare loop in the harness's memory format: the overhead alone, without the kernel choice
        "harness_overhead_ratio_same_kernels": swept["images_per_second"] / same_kernels,
        "harness_overhead_ratio_steady": float(np.mean(swept["images_per_second_per_epoch"][1:])) / bare_steady,
        "harness_overhead_ratio_trial_wall": (images / swept["trial_wall_s"]) / (images / bare_wall),
        "harness_overhead_ratio_sweep_wall": (images / swept["sweep_wall_s"]) / (images / bare_wall),
        "bare_images_per_second": bare_ips,
        "bare_channels_last_images_per_second": same_kernels,
        "sweep_images_per_second": swept["images_per_second"],
        "bare_wall_s": bare_wall,
        "trial_wall_s": swept["trial_wall_s"],
        "sweep_wall_s": swept["sweep_wall_s"],
        "fixed_s": swept["fixed_s"],
        "fixed_total_s": float(sum(swept["fixed_s"].values())),
        "per_epoch_mean_s": per_epoch,
        "per_epoch_extra_fraction": (per_epoch["eval"] + per_epoch["checkpoint_report"]) / per_epoch["train"],
        # per-epoch checkpoint: this model and the GPU-sized one (U-Net base 32, depth 4)
        "checkpoints": checkpoints,
        "config": {
            **MODEL,
            "patch": PATCH,
            "scenes": SCENES,
            "train_patches": len(data.indices("train")),
            "val_patches": len(data.indices("val")),
            "batch_size": BATCH,
            "lr": LR,
            "epochs": epochs,
            "threads": threads,
        },
        "bare_runs": bare_runs,
        "sweep": swept,
    }
    perfutil.finish(args, results, started)


if __name__ == "__main__":
    main()
