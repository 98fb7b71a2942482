"""``python -m harness.final_compare``: retrain each architecture's best config over paired seeds, score all.

1. Find each architecture's sweep in MLflow and take its best trial by validation IoU among the trials
   that ran every epoch (the choice is recorded in ``meta.json``).
2. Retrain each best config for every seed in ``compare.seeds``: the same seeds, hence the same data
   order and augmentation, for every architecture (paired). Retrains run as Ray tasks, so a cluster
   runs them in parallel; each finished one is logged to MLflow at once, and a re-run reuses it.
3. Score every model on the shared test split, whose hash must equal the sweep's: pooled confusion
   counts and every statistic, per-image counts, and (when the data has scene ground truth and the
   split keeps scenes whole) the official 38-Cloud scene-level protocol.
4. Statistics (:mod:`harness.stats`), cost (parameters, FLOPs per 384x384 patch, training time, sweep
   device-hours) and the expected-best-vs-budget curve go into a results directory that
   :func:`harness.report.write_report` renders; the directory is logged to MLflow as a run tagged
   ``final_compare``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from tqdm import tqdm

from harness import stats
from harness.config import Benchmark, ConfigError, benchmark_from_dict
from harness.data.cache import open_cache
from harness.data.dataset import CloudPatchDataset
from harness.data.prepare import PreparedData, prepare_data, synthetic_dir
from harness.metrics import confusion_stats, per_image_counts, per_image_stats, scene_scores, stitch_scene
from harness.models import count_parameters
from harness.report import write_report
from harness.tracking import (
    SweepRecord,
    TrackingError,
    check_tracking_uri,
    download_artifacts,
    find_final_runs,
    latest_sweep,
    log_run,
    read_sweep,
)
from harness.train import fit, model_from_config, resolve_config, resolve_device

ROLE_RETRAIN = "final_retrain"
FLOP_PATCH = 384


class CompareError(RuntimeError):
    """The comparison cannot run as asked; the message says why."""


# -- choosing what to retrain ---------------------------------------------------------------------
def _typed(value: str) -> Any:
    """MLflow stores params as strings; YAML gives back ints, floats and booleans."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def choose_best(sweep: SweepRecord, max_epochs: int) -> dict[str, Any]:
    """The best trial by final validation IoU among trials that ran every epoch."""
    full = [
        t for t in sweep.trials if t.stopped_by == "completed" and t.epochs >= max_epochs and math.isfinite(t.val_iou)
    ]
    if not full:
        raise CompareError(
            f"sweep {sweep.sweep_id}, {sweep.arch}: no trial ran all {max_epochs} epochs; "
            "raise search.num_samples or lower asha.reduction_factor"
        )
    best = max(full, key=lambda t: t.val_iou)
    config = {k: _typed(v) for k, v in best.params.items()}
    return {"trial_id": best.trial_id, "run_id": best.run_id, "val_iou": best.val_iou, "config": config}


def sample_indices(data: PreparedData, k: int) -> list[int]:
    """K test patches for the figure grid: evenly spread over those with 10-90 % cloud (deterministic)."""
    test = data.indices("test")
    masks = open_cache(data.cache_dir).masks
    frac = np.array([float(masks[i].mean()) for i in test])
    pool = test[(frac > 0.1) & (frac < 0.9)]
    if len(pool) < k:
        pool = test
    picks = np.linspace(0, len(pool) - 1, num=min(k, len(pool))).round().astype(int)
    return [int(pool[i]) for i in sorted(set(picks))]


def source_root(bench: Benchmark) -> Path:
    """The dataset tree the cache was ingested from (the synthetic folder for synthetic data)."""
    if bench.data.root:
        return Path(bench.data.root)
    return synthetic_dir(bench.data.cache_dir, bench.data.synthetic or {})


def find_scene_gts(root: Path) -> dict[str, Path]:
    """Scene ground truths (``Entire_scene_gts/edited_corrected_gts_<SceneID>.TIF``) under ``root``."""
    if not root.exists():
        return {}
    prefix = "edited_corrected_gts_"
    return {
        p.stem[len(prefix) :]: p
        for p in sorted(Path(root).rglob(f"Entire_scene_gts/{prefix}*"))
        if p.suffix.lower() in (".tif", ".tiff")
    }


# -- one retrain (runs as a Ray task) -------------------------------------------------------------
def retrain_and_score(
    config: dict[str, Any],
    data: PreparedData,
    data_args: dict[str, Any],
    sample_rows: list[int],
    scene_gts: dict[str, str],
) -> dict[str, Any]:
    """Train ``config`` on the train split, then score the test split; returns compact results."""
    from harness.sweep import local_data  # the node may need to prepare the data itself

    data = local_data(data, data_args)
    curves: list[dict[str, Any]] = []
    result = fit(config, data, lambda metrics, _ckpt: curves.append(dict(metrics)))
    if result.status != "completed":
        return {"status": result.status, "history": curves}
    cfg = resolve_config(config)
    device = resolve_device(cfg["device"])
    test_rows = data.indices("test")
    test_set = CloudPatchDataset(
        data.cache_dir, test_rows, normalisation=cfg["normalisation"], band_stats=result.band_stats, augment=False
    )
    loader = torch.utils.data.DataLoader(test_set, batch_size=cfg["eval_batch_size"], shuffle=False)
    model = result.model.eval()
    counts, preds = [], []
    keep_all = bool(scene_gts)
    wanted = {row: i for i, row in enumerate(sample_rows)}
    samples = {}
    offset = 0
    with torch.inference_mode():
        for images, masks in loader:
            images, masks = images.to(device), masks.to(device)
            pred = model(images).argmax(dim=1)
            counts.append(per_image_counts(pred, masks))
            pred_np = pred.to(torch.uint8).cpu().numpy()
            for j in range(pred_np.shape[0]):
                row = int(test_rows[offset + j])
                if row in wanted:
                    samples[row] = pred_np[j]
            if keep_all:
                preds.append(pred_np)
            offset += pred_np.shape[0]
    counts_np = torch.cat(counts).cpu().numpy().astype(np.int64)
    scenes = _scene_level(data, test_rows, np.concatenate(preds) if preds else None, scene_gts)
    ips = [m["train_images_per_second"] for m in curves if m.get("train_images_per_second")]
    return {
        "status": "completed",
        "history": curves,
        "per_image_counts": counts_np,
        "test_rows": np.asarray(test_rows, dtype=np.int64),
        "sample_rows": np.asarray(sorted(samples), dtype=np.int64),
        "sample_preds": np.stack([samples[r] for r in sorted(samples)]) if samples else np.zeros((0, 1, 1)),
        "scene_scores": scenes,
        "train_seconds": float(sum(m["epoch_seconds"] for m in curves)),
        "train_images_per_second": float(np.mean(ips)) if ips else float("nan"),
        "device": str(device),
    }


def _scene_level(data, test_rows, preds, scene_gts: dict[str, str]) -> list[dict[str, Any]]:
    """Official 38-Cloud scene scores for every test scene that has a scene ground truth."""
    if preds is None or not scene_gts:
        return []
    import tifffile

    cache = open_cache(data.cache_dir)
    table = cache.patches
    out = []
    test_table = table.iloc[test_rows].reset_index(drop=True)
    for scene_id, group in test_table.groupby("scene_id", sort=True):
        if scene_id not in scene_gts:
            continue
        whole = table[table.scene_id == scene_id]
        grid = (int(whole.row.max()), int(whole.col.max()))
        patches = {(int(r.row), int(r.col)): preds[i] for i, r in group.iterrows()}
        gt = tifffile.imread(scene_gts[scene_id])
        pred = stitch_scene(patches, gt.shape, cache.patch_size, grid_shape=grid)
        out.append({"scene_id": scene_id, **scene_scores(pred, gt)})
    return out


# -- caching retrains in MLflow ---------------------------------------------------------------------
def _config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


_ARRAYS = ("per_image_counts", "test_rows", "sample_rows", "sample_preds")


def _save_retrain(result: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "retrain.npz", **{k: result[k] for k in _ARRAYS})
    meta = {k: v for k, v in result.items() if k not in _ARRAYS}
    (folder / "retrain.json").write_text(json.dumps(meta, default=float))


def _load_retrain(folder: Path) -> dict[str, Any]:
    result = json.loads((folder / "retrain.json").read_text())
    with np.load(folder / "retrain.npz", allow_pickle=False) as arrays:
        result.update({k: arrays[k] for k in _ARRAYS})
    return result


# -- the comparison ---------------------------------------------------------------------------------
def flops_per_patch(config: dict[str, Any]) -> int:
    """Forward FLOPs of one 4-band 384x384 patch, counted by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model_from_config(config).eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 4, FLOP_PATCH, FLOP_PATCH))
    return int(counter.get_total_flops())


def resolve_benchmark(bench: Benchmark | None, uri: str | None) -> tuple[Benchmark, str]:
    """The benchmark to compare and its sweep id (the latest finished sweep when no benchmark is given)."""
    if bench is not None:
        uri = check_tracking_uri(uri or bench.tracking.uri, must_exist=True)
        bench.tracking.uri = uri
        sweeps = read_sweep(uri, bench.tracking.experiment, benchmark=bench.name)
        return bench, sweeps[0].sweep_id
    uri = check_tracking_uri(uri or "sqlite:///mlflow.db", must_exist=True)
    experiment, sweep_id, parent_run_id = latest_sweep(uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(uri, parent_run_id, "benchmark.yaml", tmp)
        raw = yaml.safe_load(Path(path).read_text())
    bench = benchmark_from_dict(raw)
    bench.tracking.uri = uri
    bench.tracking.experiment = experiment
    return bench, sweep_id


def run_compare(
    bench: Benchmark, sweep_id: str, out: Path, *, address: str | None = None, progress: bool = True
) -> Path:
    """Retrain, score and report; returns the report path."""
    from harness.sweep import data_args, run_tasks

    uri, experiment = bench.tracking.uri, bench.tracking.experiment
    sweeps = read_sweep(uri, experiment, sweep_id=sweep_id)
    by_arch = {s.arch: s for s in sweeps}
    missing = [a for a in bench.architectures if a not in by_arch]
    if missing:
        raise CompareError(f"sweep {sweep_id} has no runs for {missing}")
    args = data_args(bench)
    data = prepare_data(**args, progress=progress)
    for s in sweeps:
        if s.tags.get("split_hash") != data.split_hash:
            raise CompareError(
                f"split hash mismatch: the sweep of {s.arch} used {s.tags.get('split_hash', '?')[:12]}, "
                f"this data gives {data.split_hash[:12]}; the comparison must use the sweep's test split"
            )
    max_epochs = int(by_arch[bench.architectures[0]].tags.get("max_epochs", bench.train.epochs))
    best = {arch: choose_best(by_arch[arch], max_epochs) for arch in bench.architectures}
    epochs = bench.compare.epochs or max_epochs
    sample_rows = sample_indices(data, bench.compare.samples_in_figure)
    # The scene protocol needs whole scenes in the test split: only a scene split guarantees that.
    scene_gts = {}
    if bench.split.kind == "scene":
        scene_gts = {k: str(v) for k, v in find_scene_gts(source_root(bench)).items()}
    started = datetime.now(UTC).isoformat(timespec="seconds")

    jobs, results = [], {}
    for arch in bench.architectures:
        for seed in bench.compare.seeds:
            config = {**best[arch]["config"], "arch": arch, "seed": seed, "epochs": epochs}
            config = resolve_config(config)
            tags = {
                "role": ROLE_RETRAIN,
                "sweep_id": sweep_id,
                "arch": arch,
                "seed": str(seed),
                "config_hash": _config_hash(config),
                "split_hash": data.split_hash,
            }
            cached = find_final_runs(uri, experiment, tags)
            if cached:
                with tempfile.TemporaryDirectory() as tmp:
                    folder = Path(download_artifacts(uri, cached[-1].info.run_id, "retrain", tmp))
                    results[(arch, seed)] = _load_retrain(folder)
                continue
            jobs.append(
                (
                    (arch, seed, tags, config),
                    {
                        "config": config,
                        "data": data,
                        "data_args": args,
                        "sample_rows": sample_rows,
                        "scene_gts": scene_gts,
                    },
                )
            )
    if jobs:
        bar = tqdm(total=len(jobs), desc="final retrains", disable=not progress, file=sys.stderr)
        for i, result in run_tasks(
            retrain_and_score,
            [kw for _, kw in jobs],
            cpu=bench.resources.cpu,
            gpu=bench.resources.gpu,
            bench=bench,
            address=address,
        ):
            arch, seed, tags, config = jobs[i][0]
            if result["status"] != "completed":
                raise CompareError(f"retrain of {arch} with seed {seed} {result['status']}")
            with tempfile.TemporaryDirectory() as tmp:
                _save_retrain(result, Path(tmp) / "retrain")
                log_run(
                    uri,
                    experiment,
                    run_name=f"retrain/{arch}/seed{seed}",
                    tags=tags,
                    params=config,
                    artifacts_dir=tmp,
                )
            results[(arch, seed)] = result
            bar.update(1)
        bar.close()

    # Written beside `out`, then renamed into place: a failure never leaves a half-written report.
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_results(bench, sweep_id, data, best, results, by_arch, sample_rows, staging, started)
        write_report(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report = out / "report.md"
    summary = pd.read_csv(out / "summary.csv")
    metrics = {
        f"{r.arch}_{k}": getattr(r, k)
        for r in summary.itertuples()
        for k in ("iou_mean", "iou_ci_low", "iou_ci_high", "f1_mean", "mcc")
    }
    log_run(
        uri,
        experiment,
        run_name=f"final_compare/{sweep_id}",
        tags={
            "role": "final_compare",
            "final_compare": "true",
            "sweep_id": sweep_id,
            "split_hash": data.split_hash,
            "benchmark": bench.name,
        },
        params={"seeds": bench.compare.seeds, "architectures": bench.architectures, "epochs": epochs},
        metrics=metrics,
        artifacts_dir=out,
    )
    return report


def _write_results(bench, sweep_id, data, best, results, by_arch, sample_rows, out: Path, started) -> None:
    table = open_cache(data.cache_dir).patches
    res_rows, img_rows, curve_rows, scene_rows, costs = [], [], [], [], {}
    for (arch, seed), r in sorted(results.items(), key=lambda kv: (bench.architectures.index(kv[0][0]), kv[0][1])):
        counts = np.asarray(r["per_image_counts"], dtype=np.int64)
        tp, fn, fp, tn = (int(x) for x in counts.sum(axis=0))
        res_rows.append(
            {
                "arch": arch,
                "seed": seed,
                **confusion_stats(tp, fn, fp, tn),
                "train_seconds": r["train_seconds"],
                "train_images_per_second": r["train_images_per_second"],
            }
        )
        per_img = per_image_stats(counts)
        rows = np.asarray(r["test_rows"])
        img_rows.append(
            pd.DataFrame(
                {
                    "arch": arch,
                    "seed": seed,
                    "name": table.name.to_numpy()[rows],
                    "scene_id": table.scene_id.to_numpy()[rows],
                    "tp": counts[:, 0],
                    "fn": counts[:, 1],
                    "fp": counts[:, 2],
                    "tn": counts[:, 3],
                    "iou": per_img["threat_score"].to_numpy(),
                    "f1": per_img["f1"].to_numpy(),
                    "accuracy": per_img["accuracy"].to_numpy(),
                }
            )
        )
        for m in r["history"]:
            curve_rows.append(
                {
                    "arch": arch,
                    "seed": seed,
                    **{k: m.get(k) for k in ("epoch", "train_loss", "val_loss", "val_iou")},
                }
            )
        for s in r.get("scene_scores", []):
            scene_rows.append({"arch": arch, "seed": seed, **s})
    gpu, cpu = bench.resources.gpu, bench.resources.cpu
    per_trial_devices = gpu if gpu > 0 else cpu  # GPU-hours on GPU trials, CPU-core-hours otherwise
    trial_rows = []
    for arch in bench.architectures:
        sweep = by_arch[arch]
        hours = [t.seconds / 3600 * per_trial_devices for t in sweep.trials]
        model_config = resolve_config({**best[arch]["config"], "arch": arch})
        costs[arch] = {
            "params": count_parameters(model_from_config(model_config)),
            "flops_per_patch": flops_per_patch(model_config),
            "sweep_device_hours": float(sum(hours)),
            "n_trials": len(sweep.trials),
        }
        trial_rows += [
            {"arch": arch, "val_iou": t.val_iou, "device_hours": h}
            for t, h in zip(sweep.trials, hours, strict=True)
            if math.isfinite(t.val_iou)
        ]
    results_df = pd.DataFrame(res_rows)
    per_image = pd.concat(img_rows, ignore_index=True)
    n_boot = bench.compare.bootstrap_samples
    results_df.to_csv(out / "results.csv", index=False)
    per_image.to_csv(out / "per_image.csv", index=False)
    stats.summary_table(results_df, costs=costs, n_boot=n_boot).to_csv(out / "summary.csv", index=False)
    stats.paired_table(results_df, per_image, n_boot=n_boot).to_csv(out / "paired.csv", index=False)
    pd.DataFrame(curve_rows).to_csv(out / "curves.csv", index=False)
    stats.budget_table(pd.DataFrame(trial_rows)).to_csv(out / "budget.csv", index=False)
    if scene_rows:
        pd.DataFrame(scene_rows).to_csv(out / "scene_scores.csv", index=False)
    _write_samples(bench, data, results, sample_rows, out)
    first = results[(bench.architectures[0], bench.compare.seeds[0])]
    meta = {
        "benchmark": bench.name,
        "sweep_id": sweep_id,
        "split_hash": data.split_hash,
        "split_kind": bench.split.kind,
        "seeds": bench.compare.seeds,
        "architectures": bench.architectures,
        "best_configs": {
            a: {k: best[a][k] for k in ("trial_id", "val_iou", "config", "run_id")} for a in bench.architectures
        },
        "device": first.get("device", "cpu"),
        "device_hours_unit": "GPU" if gpu > 0 else "CPU core",
        "started_at": started,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))


def _write_samples(bench, data, results, sample_rows, out: Path) -> None:
    cache = open_cache(data.cache_dir)
    seed = bench.compare.seeds[0]
    rows = sorted(sample_rows)
    arrays = {
        "rgb": np.stack([np.moveaxis(cache.images[r][:3], 0, -1) for r in rows]).astype(np.float32) / 65535.0,
        "gt": np.stack([cache.masks[r] for r in rows]).astype(np.uint8),
        "names": np.array([str(cache.patches.name.iloc[r]) for r in rows]),
        "seed": np.array(seed),
    }
    for arch in bench.architectures:
        r = results[(arch, seed)]
        lookup = {int(row): i for i, row in enumerate(np.asarray(r["sample_rows"]))}
        arrays[f"pred_{arch}"] = np.stack([np.asarray(r["sample_preds"])[lookup[row]] for row in rows])
    np.savez_compressed(out / "samples.npz", **arrays)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m harness.final_compare``."""
    p = argparse.ArgumentParser(
        prog="python -m harness.final_compare",
        description="Retrain each architecture's best sweep config over paired seeds and compare them on the "
        "shared test split (statistics, confidence intervals, paired tests, figures).",
    )
    p.add_argument("benchmark", nargs="?", help="benchmark YAML (default: the latest finished sweep in the store)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the benchmark's, else sqlite:///mlflow.db)")
    p.add_argument("--out", help="report directory (default: runs/<benchmark>/final_compare)")
    p.add_argument("--sweep-id", help="compare this sweep instead of the latest finished one")
    p.add_argument("--address", help="run the retrains on this Ray cluster (default: a private local instance)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a benchmark key")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from harness.config import load_benchmark

    args = build_parser().parse_args(argv)
    try:
        bench = load_benchmark(args.benchmark, args.set) if args.benchmark else None
        bench, sweep_id = resolve_benchmark(bench, args.tracking_uri)
        if args.sweep_id:
            sweep_id = args.sweep_id
        out = Path(args.out or f"runs/{bench.name}/final_compare")
        t0 = time.monotonic()
        report = run_compare(bench, sweep_id, out, address=args.address)
    except (ConfigError, CompareError, TrackingError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {report}  ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
