"""``python -m harness.sweep``: one Ray Tune run per architecture, same budget, TPE + ASHA, MLflow.

The one module that imports ``ray``. For each architecture of a benchmark it runs a ``Tuner`` with
the same number of trials, the same seeded TPE sampler settings, the same ASHA schedule and the same
per-trial resources; every trial trains with :func:`harness.train.fit` and reports every epoch (with
a checkpoint) to Tune, to the scheduler, to Optuna and, through a driver-side callback, to MLflow.

Everything that can be checked is checked before Ray starts: the benchmark file, the search spaces,
the tracking URI, the storage path, the data. With no ``--address`` a private local Ray instance is
started (never a stale cluster left on the machine); with one, the sweep joins that cluster and
refuses per-trial resources no node of it can provide.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Per-epoch checkpoints make Tune warn about frequent experiment snapshots; they are intended here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import optuna
import ray
import yaml
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from harness.config import Benchmark, ConfigError, load_benchmark
from harness.data.prepare import PreparedData, prepare_data
from harness.search import make_sampler, stopped_by, to_optuna, trial_outcome
from harness.tracking import TrackingError, TrialLogger, check_tracking_uri, git_commit

log = logging.getLogger("harness.sweep")
METRIC, MODE = "val_iou", "max"
SWEEP_FILE = "sweep.json"


class SweepError(RuntimeError):
    """A sweep cannot start or continue; the message says why and what to do."""


# -- the searcher ---------------------------------------------------------------------------------
class PruneAwareOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, but an ASHA-stopped trial is told to Optuna as PRUNED, not COMPLETE.

    Ray's version tells Optuna every trial that did not error COMPLETED with its last result, so TPE
    learns from a trial ASHA cut after one epoch as if its low score were final. Intermediate values
    still reach Optuna every epoch through ``on_trial_result`` (the base class's ``trial.report``).
    """

    def restore(self, checkpoint_path: str) -> None:
        """Restore the searcher, then fail the Optuna trials of trials the killed driver never saved.

        Such a trial was asked of Optuna (and persisted in its storage) after the searcher state Tune
        restores was saved; Tune does not know it and asks for a replacement, so it would stay RUNNING
        in the study for ever.
        """
        super().restore(checkpoint_path)
        known = {t.number for t in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number not in known:
                self._ot_study.tell(frozen.number, state=TrialState.FAIL)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        state, value = trial_outcome(result, metric=self._metric, error=error)
        ot_trial = self._ot_trials[trial_id]
        if state == TrialState.PRUNED and result and result.get(self._metric) is not None:
            # Tune skips on_trial_result for the result on which ASHA stops a trial, so the value at
            # the stopping epoch reaches Optuna only here: TPE ranks pruned trials by it.
            ot_trial.report(float(result[self._metric]), int(result["training_iteration"]))
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except Exception as exc:  # e.g. the trial was already told before a restore
            log.warning("Optuna tell failed for %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)


# -- the MLflow bridge ----------------------------------------------------------------------------
class MlflowTrialCallback(tune.Callback):
    """Forwards Tune's trial events (on the driver) to :class:`harness.tracking.TrialLogger`."""

    def __init__(self, trial_logger: TrialLogger) -> None:
        self.trial_logger = trial_logger

    def setup(self, **info: Any) -> None:
        self.trial_logger.start()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.trial_logger.trial_started(trial.trial_id, {"arch": self.trial_logger.arch, **trial.config})

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.trial_logger.trial_result(trial.trial_id, result)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.trial_logger.trial_finished(trial.trial_id, stopped_by(trial.last_result, error=False))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.trial_logger.trial_finished(trial.trial_id, "error")

    def on_experiment_end(self, trials, **info) -> None:
        self.trial_logger.retire_unknown_trials(t.trial_id for t in trials)
        self.trial_logger.close()


# -- the trainable --------------------------------------------------------------------------------
def local_data(data: PreparedData, data_args: dict[str, Any]) -> PreparedData:
    """The prepared data on this node: as given (shared storage) or re-prepared here, same split."""
    if Path(data.cache_dir).is_dir() and Path(data.manifest_path).is_file():
        return data
    local = prepare_data(**data_args)
    if local.split_hash != data.split_hash:
        raise SweepError(
            f"split hash on this node ({local.split_hash[:12]}) differs from the driver's "
            f"({data.split_hash[:12]}): the nodes do not see the same dataset"
        )
    return local


def train_trial(config: dict[str, Any], data: PreparedData, data_args: dict[str, Any]) -> None:
    """A Tune function trainable: fit one configuration, reporting every epoch with a checkpoint."""
    from harness import train  # imported in the worker; the loop knows nothing of Ray

    data = local_data(data, data_args)
    first_epoch: list[int] = []

    def report(metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        # restored_at_epoch: the checkpointed epoch this run of the trial resumed from (0 = fresh),
        # so a retried trial shows it did not start again from scratch.
        if not first_epoch:
            first_epoch.append(int(metrics["epoch"]))
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report({**metrics, "restored_at_epoch": first_epoch[0] - 1}, checkpoint=checkpoint)

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        train.fit(config, data, report)
    else:
        with checkpoint.as_directory() as resume_dir:
            train.fit(config, data, report, checkpoint_dir=resume_dir)


# -- the driver -----------------------------------------------------------------------------------
@dataclass
class ArchOutcome:
    """What one architecture's sweep produced."""

    arch: str
    sweep_id: str
    experiment_path: str
    n_trials: int
    n_completed: int
    best_trial_id: str | None
    best_val_iou: float | None
    best_config: dict[str, Any] | None
    parent_run_id: str | None


def _storage_root(bench: Benchmark) -> tuple[str, Path]:
    """(Tune storage path or URI, local dir for the sweep's own files such as sweep.json and optuna.db)."""
    storage = bench.storage
    if "://" in storage and not storage.startswith("file://"):
        return storage.rstrip("/"), Path("runs") / bench.name / "driver"
    local = Path(storage.removeprefix("file://")).resolve()
    return str(local), local


def data_args(bench: Benchmark) -> dict[str, Any]:
    """Keyword arguments of :func:`prepare_data` for this benchmark (absolute paths)."""
    return {
        "root": str(Path(bench.data.root).resolve()) if bench.data.root else None,
        "synthetic": dict(bench.data.synthetic) if bench.data.synthetic else None,
        "cache_dir": str(Path(bench.data.cache_dir).resolve()),
        "split_kind": bench.split.kind,
        "fractions": tuple(bench.split.fractions),
        "split_seed": bench.split.seed,
        "nonempty_only": bench.split.nonempty_only,
    }


def _sweep_state(local_dir: Path, bench: Benchmark, resume: bool, data: PreparedData) -> dict[str, Any]:
    path = local_dir / SWEEP_FILE
    if path.exists():
        state = json.loads(path.read_text())
        if not resume:
            raise SweepError(
                f"a sweep already exists in {local_dir} (sweep_id {state['sweep_id']}); "
                "continue it with --resume, or pass another --storage"
            )
        if state["split_hash"] != data.split_hash:
            raise SweepError(
                f"{path}: the sweep was started on split {state['split_hash'][:12]}, "
                f"this data gives {data.split_hash[:12]}; refusing to mix them"
            )
        return state
    if resume:
        raise SweepError(f"--resume: no sweep to resume in {local_dir} (no {SWEEP_FILE})")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(f"{local_dir}|{time.time_ns()}".encode()).hexdigest()[:6]
    state = {
        "sweep_id": f"{bench.name}-{stamp}-{digest}",
        "benchmark": bench.name,
        "split_hash": data.split_hash,
        "created": stamp,
        "git_commit": git_commit(),
        "config": bench.to_dict(),
    }
    local_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)
    return state


def start_ray(bench: Benchmark, address: str | None) -> bool:
    """Connect to ``address`` or start a private local instance; returns True if this call started Ray."""
    if ray.is_initialized():
        return False
    if address is None:
        # "local" always starts a new instance: never attach to a stale cluster left on the machine.
        ray.init(
            address="local",
            num_cpus=bench.ray.num_cpus,
            num_gpus=bench.ray.num_gpus,
            include_dashboard=False,
            log_to_driver=True,
        )
        return True
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=True)
    except Exception as exc:
        raise SweepError(f"cannot connect to the Ray cluster at --address {address}: {exc}") from None
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a ``host:port`` (or ``ray://host:port``) address does not answer."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and friends: Ray resolves them itself
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise SweepError(f"cannot connect to the Ray cluster at --address {address}: {exc}") from None


@contextlib.contextmanager
def ray_session(bench: Benchmark, address: str | None = None):
    """Keep one Ray connection open across several steps (the demo's sweep and final comparison)."""
    started = start_ray(bench, address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def check_resources(cpu: float, gpu: float) -> None:
    """Refuse per-trial resources that no alive node can provide (instead of trials pending forever)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= cpu and n["Resources"].get("GPU", 0) >= gpu]
    if not fits:
        total = ray.cluster_resources()
        raise SweepError(
            f"resources: each trial asks for cpu={cpu:g}, gpu={gpu:g}, but no node of the Ray cluster has "
            f"that (cluster: {total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU on {len(nodes)} "
            "node(s)); lower resources.cpu/resources.gpu or add nodes"
        )


def _tuner(bench: Benchmark, arch: str, data: PreparedData, state: dict, storage: str, local_dir: Path):
    space = bench.search_spaces[arch]
    fixed = {k: v for k, v in bench.trial_defaults().items() if k not in space}
    fixed["arch"] = arch
    fixed["seed"] = bench.train.seed
    optuna_db = f"sqlite:///{local_dir / 'optuna.db'}"
    searcher = PruneAwareOptunaSearch(
        space=to_optuna(space),
        metric=METRIC,
        mode=MODE,
        sampler=make_sampler(bench.search.sampler, bench.search.seed, budget=bench.search.num_samples),
        study_name=f"{state['sweep_id']}-{arch}",
        storage=optuna.storages.RDBStorage(optuna_db),
    )
    trial_logger = TrialLogger(
        bench.tracking.uri,
        bench.tracking.experiment,
        sweep_id=state["sweep_id"],
        arch=arch,
        parent_tags={
            "benchmark": bench.name,
            "split_hash": data.split_hash,
            "searcher_seed": str(bench.search.seed),
            "git_commit": state.get("git_commit", "unknown"),
            "num_samples": str(bench.search.num_samples),
            "max_epochs": str(bench.train.epochs),
        },
        pending_path=str(local_dir / f"mlflow-pending-{arch}.jsonl"),
    )
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=data, data_args=data_args(bench)),
        {"cpu": bench.resources.cpu, "gpu": bench.resources.gpu},
    )
    tune_config = tune.TuneConfig(
        metric=METRIC,
        mode=MODE,
        # A new worker per trial costs ~2 s of imports; reusing actors halves per-trial scheduling
        # overhead (benchmarks/perf/RESULTS.md, search_efficiency.py --reuse-actors).
        reuse_actors=True,
        num_samples=bench.search.num_samples,
        search_alg=ConcurrencyLimiter(searcher, max_concurrent=bench.search.max_concurrent),
        scheduler=ASHAScheduler(
            time_attr="training_iteration",
            max_t=bench.train.epochs,
            grace_period=bench.asha.grace_period,
            reduction_factor=bench.asha.reduction_factor,
        )
        if bench.asha.enabled
        else FIFOScheduler(),
    )
    run_config = tune.RunConfig(
        name=arch,
        storage_path=storage,
        callbacks=[MlflowTrialCallback(trial_logger)],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=bench.failure.max_failures),
        verbose=1,
    )
    return trainable, tune_config, run_config, fixed, trial_logger


def run_architecture(
    bench: Benchmark, arch: str, data: PreparedData, state: dict, storage: str, local_dir: Path, resume: bool
) -> ArchOutcome:
    """Run (or resume) one architecture's Tune experiment and attach its best trial to MLflow."""
    trainable, tune_config, run_config, fixed, trial_logger = _tuner(bench, arch, data, state, storage, local_dir)
    exp_path = f"{storage}/{arch}"
    if resume and tune.Tuner.can_restore(exp_path):
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=fixed, tune_config=tune_config, run_config=run_config)
    grid = tuner.fit()

    completed = []
    for result in grid:
        metrics = result.metrics or {}
        if result.error is None and metrics.get("status") == "completed":
            completed.append(result)
    outcome = ArchOutcome(arch, state["sweep_id"], exp_path, len(grid), len(completed), None, None, None, None)
    # The restored callback is a copy made by Tune; open our own logger to attach the best trial.
    trial_logger.start()
    outcome.parent_run_id = trial_logger.parent_run_id
    if completed:
        best = max(completed, key=lambda r: r.metrics[METRIC])
        outcome.best_trial_id = best.metrics["trial_id"]
        outcome.best_val_iou = float(best.metrics[METRIC])
        outcome.best_config = dict(best.config)
        art = local_dir / f"best-{arch}"
        shutil.rmtree(art, ignore_errors=True)
        art.mkdir(parents=True)
        (art / "best_config.yaml").write_text(yaml.safe_dump(outcome.best_config, sort_keys=True))
        if best.checkpoint is not None:
            best.checkpoint.to_directory(str(art / "checkpoint"))
        # One folder: best/best_config.yaml, best/checkpoint/checkpoint.pt
        trial_logger.log_parent_artifacts([art], artifact_path="best")
        trial_logger.set_parent_tags(
            {"best_trial_id": outcome.best_trial_id, "best_val_iou": f"{outcome.best_val_iou:.6f}"}
        )
    # The resolved benchmark lets `final_compare` with no arguments redo this sweep's data and split.
    bench_file = local_dir / "benchmark.yaml"
    bench_file.write_text(yaml.safe_dump(bench.to_dict(), sort_keys=False))
    trial_logger.log_parent_artifacts([bench_file])
    trial_logger.set_parent_tags({"n_trials": str(len(grid)), "n_completed": str(len(completed))})
    trial_logger.close()
    return outcome


def run_sweep(bench: Benchmark, *, address: str | None = None, resume: bool = False) -> list[ArchOutcome]:
    """Validate everything, prepare the data once, then sweep each architecture in turn."""
    bench.tracking.uri = check_tracking_uri(bench.tracking.uri)
    storage, local_dir = _storage_root(bench)
    data = prepare_data(**data_args(bench), progress=True)
    state = _sweep_state(local_dir, bench, resume, data)
    started = start_ray(bench, address)
    try:
        check_resources(bench.resources.cpu, bench.resources.gpu)
        outcomes = []
        for arch in bench.architectures:
            log.info("sweeping %s: %d trials", arch, bench.search.num_samples)
            outcomes.append(run_architecture(bench, arch, data, state, storage, local_dir, resume))
        state["finished"] = time.strftime("%Y%m%d-%H%M%S")
        state["outcomes"] = [asdict(o) for o in outcomes]
        (local_dir / SWEEP_FILE).write_text(json.dumps(state, indent=2, default=str))
        return outcomes
    finally:
        if started:
            ray.shutdown()


def run_tasks(
    fn: Any,
    kwargs_list: list[dict[str, Any]],
    *,
    cpu: float,
    gpu: float,
    bench: Benchmark,
    address: str | None = None,
):
    """Run ``fn(**kwargs)`` for each item as Ray tasks; yield ``(index, result)`` as each finishes.

    Used by the final comparison so a cluster retrains every (architecture, seed) in parallel. The
    resource request is checked like a sweep's before anything is submitted.
    """
    started = start_ray(bench, address)
    try:
        check_resources(cpu, gpu)
        remote = ray.remote(num_cpus=cpu, num_gpus=gpu, max_retries=bench.failure.max_failures)(fn)
        pending = {remote.remote(**kw): i for i, kw in enumerate(kwargs_list)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m harness.sweep``."""
    p = argparse.ArgumentParser(
        prog="python -m harness.sweep",
        description="Tune every architecture of a benchmark with the same budget (Ray Tune + Optuna TPE + "
        "ASHA), recording every trial in MLflow.",
    )
    p.add_argument("benchmark", help="benchmark YAML file, e.g. benchmarks/smoke.yaml")
    p.add_argument("--data", help="dataset root (38-Cloud/95-Cloud tree); replaces the file's data section")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the file's tracking.uri)")
    p.add_argument("--storage", help="Ray Tune storage: a local dir, a shared path or an s3:// URI")
    p.add_argument("--address", help="join this Ray cluster (default: start a private local instance)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep in --storage")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key, repeatable")
    return p


def load_with_cli(args: argparse.Namespace) -> Benchmark:
    """The benchmark file with the command line's overrides applied (shared with final_compare)."""
    overrides = list(args.set)
    if getattr(args, "data", None):
        overrides += [f"data.root={args.data}", "data.synthetic=null"]
    if getattr(args, "tracking_uri", None):
        overrides.append(f"tracking.uri={args.tracking_uri}")
    if getattr(args, "storage", None):
        overrides.append(f"storage={args.storage}")
    return load_benchmark(args.benchmark, overrides)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        bench = load_with_cli(args)
        outcomes = run_sweep(bench, address=args.address, resume=args.resume)
    except (ConfigError, SweepError, TrackingError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for o in outcomes:
        best = f"best {o.best_trial_id} val_iou={o.best_val_iou:.4f}" if o.best_trial_id else "no completed trial"
        print(f"{o.arch}: {o.n_trials} trials, {o.n_completed} ran every epoch, {best}")
    print(f"MLflow: mlflow ui --backend-store-uri {bench.tracking.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
