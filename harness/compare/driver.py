"""The final comparison: retrain each architecture's chosen config over paired seeds and score them all.

1. Read each architecture's :class:`~harness.sweep.result.SweepResult` from its sweep's parent MLflow run:
   the sweep already chose the config; nothing is chosen again here.
2. Retrain each chosen config for every seed in ``compare.seeds``: the same seeds, hence the same data
   order and augmentation, for every architecture (paired). Retrains run as Ray tasks, so a cluster
   runs them in parallel; each finished one is logged to MLflow at once, and a re-run reuses it.
3. Score every model on the shared test split, whose hash must equal the sweep's (:mod:`harness.compare.retrain`).
4. Statistics (:mod:`harness.stats.intervals`), cost and the expected-best-vs-budget curve become a
   :class:`~harness.results.Results`, written atomically as a results directory that
   :func:`harness.report.write_report` renders; the directory is logged to MLflow as a run tagged
   ``final_compare``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness.audit.curves import protocol_audit
from harness.cluster import assigned_device, cap_gpu_memory, run_tasks
from harness.compare.baseline import pixel_baseline
from harness.compare.retrain import retrain_and_score
from harness.compare.tables import build_results, source_root
from harness.config import Benchmark, TrainConfig, benchmark_from_dict, to_flat
from harness.data.cache import open_cache
from harness.data.layout import find_scene_gts
from harness.data.prepare import PreparedData, prepare_data
from harness.diskspace import MB, SpaceEstimate, check_space
from harness.errors import CompareError, TrackingError
from harness.metrics import confusion_stats, per_image_scores
from harness.models import get_model_spec
from harness.predict.preprocessing import MODEL_METADATA_KEY, Preprocessing
from harness.report import write_report
from harness.report.ranking import kway_table
from harness.report.verdict import NO_WINNER, Verdict, headline_metrics, verdict
from harness.results import SCORING_VERSION, RetrainResult, load_results, write_results
from harness.sweep.result import SWEEP_RESULT_FILE, SweepResult
from harness.tracking import (
    DESCRIPTION_TAG,
    ROLE_RETRAIN,
    ComparisonRecorder,
    check_tracking_uri,
    download_artifacts,
    latest_sweep,
    load_dict,
    sweep_parent_runs,
    system_metrics,
)
from harness.training.loop import model_from_config


# -- what to compare --------------------------------------------------------------------------------
def resolve_benchmark(bench: Benchmark | None, uri: str | None) -> Benchmark:
    """The benchmark to compare: as given, or the latest finished sweep's (read from its parent run)."""
    if bench is not None:
        uri = check_tracking_uri(uri or bench.tracking.uri, must_exist=True)
        return dataclasses.replace(bench, tracking=dataclasses.replace(bench.tracking, uri=uri))
    uri = check_tracking_uri(uri or "sqlite:///mlflow.db", must_exist=True)
    experiment, _sweep_id, parent_run_id = latest_sweep(uri)
    import yaml  # the resolved benchmark is stored as YAML beside the sweep's parent run

    with tempfile.TemporaryDirectory() as tmp:
        raw = yaml.safe_load(Path(download_artifacts(uri, parent_run_id, "benchmark.yaml", tmp)).read_text())
    bench = benchmark_from_dict(raw)
    return dataclasses.replace(bench, tracking=dataclasses.replace(bench.tracking, uri=uri, experiment=experiment))


def load_sweep_results(bench: Benchmark, sweep_id: str | None = None) -> dict[str, SweepResult]:
    """Each architecture's SweepResult of ``sweep_id`` (default: the benchmark's latest finished sweep)."""
    uri, experiment = bench.tracking.uri, bench.tracking.experiment
    sweep_id, parents = sweep_parent_runs(uri, experiment, sweep_id, benchmark=bench.name)
    missing = [arch for arch in bench.architectures if arch not in parents]
    if missing:
        raise CompareError(f"sweep {sweep_id} has no runs for {missing}")
    out = {}
    for arch in bench.architectures:
        try:
            out[arch] = SweepResult.from_dict(load_dict(uri, parents[arch], SWEEP_RESULT_FILE))
        except (TrackingError, ValueError) as exc:
            raise CompareError(
                f"sweep {sweep_id}, {arch}: no usable {SWEEP_RESULT_FILE} (an interrupted sweep has none: "
                f"finish it with `cloudmask sweep --resume`): {exc}"
            ) from None
    check_equal_budgets(out, by_device_hours=bench.search.device_hours is not None)
    return out


def check_equal_budgets(results: dict[str, SweepResult], *, by_device_hours: bool = False) -> None:
    """Refuse a comparison whose architectures were not tuned with the same budget on the same split.

    The protocol's fairness rests on it: an architecture given 6 trials beats one given 2 by search alone.
    With a device-hours budget (``search.device_hours``) the trial counts may differ by design (a cheaper
    network runs more trials in the same compute); the epoch cap and the split must still agree.
    """
    budgets = {arch: (len(r.trials), r.max_epochs) for arch, r in results.items()}
    compared = {(0 if by_device_hours else n, e) for n, e in budgets.values()}
    if len(compared) > 1:
        described = ", ".join(f"{arch}: {n} trials of up to {e} epochs" for arch, (n, e) in budgets.items())
        sweep_ids = sorted({r.sweep_id for r in results.values()})
        raise CompareError(
            f"sweep {', '.join(sweep_ids)}: the architectures were not tuned with the same budget ({described}); "
            "finish the sweep with `cloudmask sweep --resume`, or run a new one"
        )
    splits = {arch: r.split_hash for arch, r in results.items()}
    if len(set(splits.values())) > 1:
        raise CompareError(f"the architectures were tuned on different splits: {splits}")
    contents = {arch: r.data_hash for arch, r in results.items() if r.data_hash is not None}
    if len(set(contents.values())) > 1:
        raise CompareError(f"the architectures were tuned on different data (same split, other pixels): {contents}")


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


def config_hash(config: TrainConfig) -> str:
    """A short, stable digest of a training config (finds a finished retrain to reuse)."""
    return hashlib.sha256(json.dumps(to_flat(config), sort_keys=True).encode()).hexdigest()[:16]


# -- the comparison ---------------------------------------------------------------------------------
def run_compare(
    bench: Benchmark,
    sweeps: Mapping[str, SweepResult],
    out: Path,
    *,
    address: str | None = None,
    progress: bool = True,
) -> Path:
    """Retrain, score and report the sweeps' chosen configs; returns the report path."""
    uri, experiment = bench.tracking.uri, bench.tracking.experiment
    data = prepare_data(**bench.prepare_args(), progress=progress)
    for arch, sweep in sweeps.items():
        if sweep.split_hash != data.split_hash:
            raise CompareError(
                f"split hash mismatch: the sweep of {arch} used {sweep.split_hash[:12]}, "
                f"this data gives {data.split_hash[:12]}; the comparison must use the sweep's test split"
            )
        if sweep.data_hash is not None and sweep.data_hash != data.data_hash:
            raise CompareError(
                f"data hash mismatch: the sweep of {arch} was made on data {sweep.data_hash[:12]}, this data "
                f"gives {data.data_hash[:12]}: the same split, but other pixels or masks (another copy of the "
                "dataset, or another version of the synthetic generator); the comparison must score the sweep's data"
            )
    try:
        chosen = {arch: sweeps[arch].best_config for arch in bench.architectures}
    except ValueError as exc:
        raise CompareError(str(exc)) from None
    sweep_id = sweeps[bench.architectures[0]].sweep_id
    epochs = bench.compare.epochs or sweeps[bench.architectures[0]].max_epochs
    # Before any retrain: the results directory (written beside the old one, then renamed) must fit.
    check_space(out, results_estimate(len(data.indices("test")), bench, epochs, replacing=out.exists()), "--out")
    sample_rows = sample_indices(data, bench.compare.samples_in_figure)
    # The scene protocol needs whole scenes in the test split: only a scene split guarantees that.
    scene_gts = {}
    if bench.split.kind == "scene":
        scene_gts = {k: str(v) for k, v in find_scene_gts(source_root(bench)).items()}
    started = datetime.now(UTC).isoformat(timespec="seconds")
    recorder = ComparisonRecorder(
        uri,
        experiment,
        sweep_id=sweep_id,
        tags={"split_hash": data.split_hash, "data_hash": data.data_hash, "benchmark": bench.name},
    )
    recorder.start({"seeds": list(bench.compare.seeds), "architectures": list(bench.architectures), "epochs": epochs})
    try:
        retrains, logged = _retrain_all(
            bench, data, chosen, sweep_id, epochs, sample_rows, scene_gts, recorder, address, progress
        )
        registered = (
            register_best_retrains(recorder, bench.compare.register_models, retrains, logged)
            if bench.compare.register_models
            else {}
        )
        meta = {
            "benchmark": bench.name,
            "sweep_id": sweep_id,
            "split_hash": data.split_hash,
            "data_hash": data.data_hash,
            "split_kind": bench.split.kind,
            "seeds": list(bench.compare.seeds),
            "architectures": list(bench.architectures),
            "arch_labels": {arch: get_model_spec(arch).label for arch in bench.architectures},
            "best_configs": {
                arch: {
                    "trial_id": sweeps[arch].best.trial_id,
                    "run_id": sweeps[arch].best.run_id,
                    "val_iou": sweeps[arch].best.val_iou,
                    "config": to_flat(chosen[arch]),
                }
                for arch in bench.architectures
            },
            "pixel_baseline": _baseline_summary(pixel_baseline(data)),
            "device": retrains[(bench.architectures[0], bench.compare.seeds[0])].device,
            # The precision the retrains trained in (train.precision resolved on their device).
            "precision": sorted({m.get("precision", "unrecorded") for r in retrains.values() for m in r.history[-1:]}),
            "device_hours_unit": "GPU" if bench.resources.gpu > 0 else "CPU core",
            "mlflow_run_id": recorder.run_id,
            # Each architecture's best retrain in the model registry (compare.register_models / --register).
            "registered_models": registered,
            "started_at": started,
        }
        report = _write_atomically(out, bench, data, sweeps, retrains, sample_rows, meta)
        outcome = verdict(load_results(report.parent))
        recorder.finish(
            metrics=summary_metrics(report.parent) | headline_metrics(outcome),
            artifacts_dir=report.parent,
            tags=verdict_tags(outcome, bench, sweep_id),
        )
    except BaseException:
        recorder.fail()  # an interrupted or failed comparison is never taken as a result
        raise
    return report


#: The results directory's fixed part (figures, report.md and report.html with the figures embedded, meta),
#: and the bytes of one row of per_image.csv and of curves.csv.
RESULTS_FIXED_BYTES, PER_IMAGE_ROW_BYTES, CURVE_ROW_BYTES = 16 * MB, 160, 96


def results_estimate(test_images: int, bench: Benchmark, epochs: int, *, replacing: bool = False) -> SpaceEstimate:
    """What the comparison writes to ``--out``: per-image rows, curves, figures and the report.

    Per-image rows for every test image, seed and architecture; twice the whole while an older results
    directory is being replaced (the new one is written beside it, then renamed).
    """
    runs = len(bench.compare.seeds) * len(bench.architectures)
    parts = {
        "per-image table": test_images * runs * PER_IMAGE_ROW_BYTES,
        "curves": runs * epochs * CURVE_ROW_BYTES,
        "figures and report": RESULTS_FIXED_BYTES,
    }
    if replacing:
        parts["the results it replaces, until renamed"] = sum(parts.values())
    return SpaceEstimate(parts)


def _baseline_summary(stats: dict) -> dict:
    """The pixel baseline's counts and headline rates, as ``meta.json`` keeps them."""
    keys = ("tp", "fn", "fp", "tn", "iou", "f1", "accuracy", "tpr", "ppv", "mcc")
    return {"model": "per-pixel logistic regression on log1p(DN) of the 4 bands"} | {k: stats[k] for k in keys}


def summary_metrics(results_dir: Path) -> dict[str, float]:
    """The comparison's headline numbers for MLflow, one unambiguous name per quantity.

    ``<arch>_pooled_iou_*``: IoU of each seed's pooled test pixels, mean and interval over seeds;
    ``<arch>_per_image_iou_mean``: IoU of each test image, averaged over images and seeds;
    ``pixel_baseline_pooled_iou``: the per-pixel logistic regression (:mod:`harness.compare.baseline`) on the
    same pixels; with three or more architectures ``<arch>_rank``, ``_rank_low``/``_rank_high`` (the
    simultaneous rank interval), ``_in_best_set`` (1/0) and ``_vs_best_p_holm`` (:mod:`harness.report.ranking`).
    """
    summary = pd.read_csv(results_dir / "summary.csv")
    metrics = {}
    for row in summary.itertuples():
        for key in ("iou_mean", "iou_ci_low", "iou_ci_high"):
            metrics[f"{row.arch}_pooled_{key}"] = getattr(row, key)
        metrics[f"{row.arch}_pooled_f1_mean"] = row.f1_mean
        metrics[f"{row.arch}_pooled_mcc"] = row.mcc
    meta_file = results_dir / "meta.json"
    baseline = json.loads(meta_file.read_text()).get("pixel_baseline") if meta_file.is_file() else None
    if baseline:
        metrics["pixel_baseline_pooled_iou"] = baseline["iou"]
    per_image = results_dir / "per_image.csv"
    if per_image.is_file():
        for arch, group in pd.read_csv(per_image).groupby("arch"):
            metrics[f"{arch}_per_image_iou_mean"] = float(group["iou"].mean())
        # K >= 3: the report's ranking, so the MLflow UI can sort a zoo by rank and show who is in the best set.
        for row in kway_table(load_results(results_dir)).itertuples():
            metrics[f"{row.arch}_rank"] = float(row.rank)
            metrics[f"{row.arch}_rank_low"] = float(row.rank_low)
            metrics[f"{row.arch}_rank_high"] = float(row.rank_high)
            metrics[f"{row.arch}_in_best_set"] = float(row.in_best_set)
            if not pd.isna(getattr(row, "vs_best_p_holm", float("nan"))):
                metrics[f"{row.arch}_vs_best_p_holm"] = float(row.vs_best_p_holm)
    return metrics


def register_best_retrains(
    recorder: ComparisonRecorder,
    name: str,
    retrains: Mapping[tuple[str, int], RetrainResult],
    logged: Mapping[tuple[str, int], str],
) -> dict[str, str]:
    """Register each architecture's best retrain as ``<name>-<arch>``; returns architecture -> ``models:/`` URI.

    The best is the seed with the highest mean per-image test IoU; its test scores, seed and how it was
    chosen are the version's tags (the model carries its preprocessing, :func:`model_metadata`).
    """
    uris = {}
    for arch in dict.fromkeys(a for a, _ in retrains):
        seeds = {seed: test_metrics(r) for (a, seed), r in retrains.items() if a == arch}
        seed = max(seeds, key=lambda s: (np.nan_to_num(seeds[s]["test_per_image_iou_mean"], nan=-1.0), -s))
        tags = {k: f"{v:.6g}" for k, v in seeds[seed].items()} | {
            "arch": arch,
            "seed": str(seed),
            "chosen_by": f"highest test_per_image_iou_mean of the {len(seeds)} paired seeds",
        }
        uris[arch] = recorder.register_model(logged[(arch, seed)], f"{arch}-seed{seed}", f"{name}-{arch}", tags)
    return uris


def model_metadata(result: RetrainResult) -> dict[str, Any]:
    """What travels with a logged retrain: its preprocessing and training config (``cloudmask predict`` reads them)."""
    preprocessing = Preprocessing.from_training(result.config.normalisation, result.band_stats)
    return {MODEL_METADATA_KEY: {"preprocessing": preprocessing.to_dict(), "train_config": to_flat(result.config)}}


def verdict_tags(outcome: Verdict, bench: Benchmark, sweep_id: str) -> dict[str, str]:
    """The ``final_compare`` run's answer as tags: ``winner`` (or "none"), ``leader``, ``verdict``, the description."""
    description = (
        f"**{outcome.text}**\n\nBenchmark `{bench.name}`, sweep `{sweep_id}`: each architecture's best sweep config "
        f"retrained over paired seeds {', '.join(str(s) for s in bench.compare.seeds)} and scored on the shared test "
        "split. The headline is the mean per-image test IoU; its 95% interval is Student t over the per-seed "
        "differences (this test set, new training seeds). The report is `report.html` in this run's artifacts."
    )
    return {
        "winner": outcome.winner,
        "leader": outcome.leader or NO_WINNER,
        "verdict": outcome.text,
        DESCRIPTION_TAG: description,
    }


def test_metrics(result: RetrainResult) -> dict[str, float]:
    """A retrain's test scores for MLflow: pooled statistics and the mean per-image IoU (cloudy images)."""
    counts = np.asarray(result.per_image_counts, dtype=np.int64)
    pooled = confusion_stats(*(int(x) for x in counts.sum(axis=0)))
    per_image = per_image_scores(counts)["iou"]  # the ground-truth-chosen image set, as in the report
    return {
        "test_pooled_iou": pooled["iou"],
        "test_pooled_f1": pooled["f1"],
        "test_pooled_accuracy": pooled["accuracy"],
        "test_pooled_mcc": pooled["mcc"],
        "test_per_image_iou_mean": float(per_image.mean()),
    }


def retrain_task(system: Mapping[str, Any], **kwargs: Any) -> RetrainResult:
    """One final retrain as a Ray task (:func:`~harness.compare.retrain.retrain_and_score`), with system metrics.

    ``system`` (tracking URI, experiment, the retrain run's tags, sampling interval) names the run the
    comparison opened for this retrain; the machine's CPU, memory and GPU use are logged there while it trains.
    """
    # "auto" in a task given no GPU is the CPU, also on a GPU node (see harness.cluster.device_for_task).
    # The result keeps the config as chosen (its hash names the retrain in MLflow); its device field says
    # where it ran.
    config = kwargs["config"]
    kwargs["config"] = dataclasses.replace(config, device=assigned_device(config.device))
    cap_gpu_memory()  # a fraction of a GPU is a fraction of its memory too
    with system_metrics(system["uri"], system["experiment"], system["tags"], interval_s=system["interval_s"]):
        return dataclasses.replace(retrain_and_score(**kwargs), config=config)


def _retrain_all(bench, data, chosen, sweep_id, epochs, sample_rows, scene_gts, recorder, address, progress):
    """Every (architecture, seed) retrain: reused from MLflow when finished before, else run as Ray tasks."""
    uri = bench.tracking.uri
    jobs, retrains, logged = [], {}, {}  # logged: (arch, seed) -> the retrain's MLflow run
    for arch in bench.architectures:
        for seed in bench.compare.seeds:
            config = dataclasses.replace(chosen[arch], seed=seed, epochs=epochs)
            tags = {
                "sweep_id": sweep_id,
                "arch": arch,
                "seed": str(seed),
                "config_hash": config_hash(config),
                "split_hash": data.split_hash,
                # Same names in the same splits is not enough to reuse a retrain: the pixels must match too.
                "data_hash": data.data_hash,
                # A retrain scored by older code is not reused: it would lack what scoring now computes.
                "scoring_version": str(SCORING_VERSION),
            }
            if bench.compare.official_test:  # reused only if scored on the same official test tree
                tags["official_test"] = str(Path(bench.compare.official_test).resolve())
            cached = recorder.finished_retrain({**tags, "role": ROLE_RETRAIN})
            if cached:
                with tempfile.TemporaryDirectory() as tmp:
                    retrains[(arch, seed)] = RetrainResult.load(download_artifacts(uri, cached, "retrain", tmp))
                logged[(arch, seed)] = cached
                continue
            kwargs = {
                "config": config,
                "data": data,
                "prepare_args": bench.prepare_args(),
                "sample_rows": sample_rows,
                "scene_gts": scene_gts,
                "official_test": bench.compare.official_test,
            }
            jobs.append((tags, kwargs))
    if not jobs:
        return retrains, logged
    patch = open_cache(data.cache_dir).patch_size
    # Two patches, as the network sees them: the logged model's signature and input example.
    example = np.zeros((2, 4, patch, patch), dtype=np.float32)
    # Each retrain's run exists before it trains: the task logs its machine's system metrics there.
    run_ids = [recorder.open_retrain(run_name=f"{kw['config'].arch}/seed{kw['config'].seed}", tags=t) for t, kw in jobs]
    system = {"uri": uri, "experiment": bench.tracking.experiment, "interval_s": bench.tracking.system_metrics_s}
    task_kwargs = [
        {**kwargs, "system": {**system, "tags": recorder.retrain_tags({"arch": tags["arch"], "seed": tags["seed"]})}}
        for tags, kwargs in jobs
    ]
    bar = tqdm(total=len(jobs), desc="final retrains", disable=not progress, file=sys.stderr)
    for i, result in run_tasks(
        retrain_task,
        task_kwargs,
        cpu=bench.resources.cpu,
        gpu=bench.resources.gpu,
        max_retries=bench.failure.max_failures,
        options=bench.ray,
        address=address,
        loader_workers=max(kwargs["config"].num_workers for _, kwargs in jobs),
    ):
        if result.status != "completed":
            raise CompareError(f"retrain of {result.arch} with seed {result.seed} {result.status}")
        model = model_from_config(result.config)
        model.load_state_dict(result.model_state)
        with tempfile.TemporaryDirectory() as tmp:
            result.save(Path(tmp) / "retrain")
            recorder.log_retrain(
                run_id=run_ids[i],
                run_name=f"{result.arch}/seed{result.seed}",
                tags=jobs[i][0],
                params=to_flat(result.config),
                history=result.history,
                test_metrics=test_metrics(result),
                artifacts_dir=tmp,
                model=model,
                input_example=example,
                model_metadata=model_metadata(result),
            )
        logged[(result.arch, result.seed)] = run_ids[i]
        retrains[(result.arch, result.seed)] = dataclasses.replace(result, model_state=None)
        bar.update(1)
    bar.close()
    return retrains, logged


def _write_atomically(out: Path, bench, data, sweeps, retrains, sample_rows, meta) -> Path:
    """Results and report written beside ``out``, then renamed into place: never half-written."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    # mkdtemp makes the folder private (0700); the report is for sharing: the umask's usual mode instead.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        meta = {**meta, "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
        results = build_results(staging, bench, data, sweeps, retrains, sample_rows, meta)
        results.protocol_audit = protocol_audit(bench, sweeps)  # was the tuning fair? (harness.audit.ranks)
        write_results(staging, results)
        write_report(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "report.md"
