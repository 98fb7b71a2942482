"""The Ray Tune driver: one Tune run per architecture, same budget, TPE + ASHA, every trial in MLflow.

The driver's modules (this one, :mod:`harness.sweep.trainable`, :mod:`harness.sweep.resume`,
:mod:`harness.sweep.searcher`, :mod:`harness.sweep.progress`, :mod:`harness.cluster`) are the only ones that import
``ray``. For each
architecture of a benchmark it runs a ``Tuner`` with the same number of trials, the same seeded TPE
sampler settings, the same ASHA schedule and the same per-trial resources; every trial trains with
:func:`harness.training.loop.fit` (through :func:`~harness.sweep.trainable.train_trial`) and reports every
epoch (with a checkpoint) to Tune, to the scheduler, to Optuna (:class:`~harness.sweep.searcher.OptunaStudySearcher`)
and, through a driver-side callback, to MLflow.
Everything a resume needs is in the sweep's storage (:mod:`harness.sweep.storage`).

Everything that can be checked is checked before ``sweep.json`` is written: the benchmark file, the
search spaces, the storage (scheme, reachability, credentials), the tracking URI and its artifact store,
the data, the Ray cluster (address, token, resources). With no ``--address`` a private local Ray instance is
started (never a stale cluster left on the machine); with one, the sweep joins that cluster and
refuses per-trial resources no node of it can provide. Each architecture's answer is one
:class:`~harness.sweep.result.SweepResult`, chosen by :func:`~harness.sweep.result.select_best` and
stored on its parent MLflow run, where :func:`harness.compare.driver.load_sweep_results` reads it. The command
line is in :mod:`harness.cli` (``cloudmask sweep`` / ``python -m harness.sweep``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Per-epoch checkpoints make Tune warn about frequent experiment snapshots; they are intended here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from harness.cluster import check_loader_workers, check_resources, driver_address, ray_session
from harness.config import Benchmark, from_flat, to_flat
from harness.console import QUIET, VERBOSE, verbosity
from harness.data.cache import open_cache
from harness.data.prepare import PreparedData, prepare_data
from harness.diskspace import free_bytes, megabytes, no_space_detail
from harness.errors import NoSpaceError, StorageError, SweepError, SweepInterrupted, TrackingError
from harness.models import get_model_spec
from harness.sweep.checks import check_every_architecture_chose, check_trials_can_run, most_loader_workers
from harness.sweep.disk import check_sweep_space, low_water_bytes, snapshot_state, state_files, storage_folder
from harness.sweep.parallel import run_side_by_side
from harness.sweep.progress import TrialTable, tune_verbosity
from harness.sweep.result import SWEEP_RESULT_FILE, SweepResult, TrialSummary, select_best
from harness.sweep.resume import STATE_READERS, check_restorable, check_same_benchmark, recover_lost_checkpoints
from harness.sweep.sampling import stopped_by, to_optuna
from harness.sweep.searcher import TRIAL_LINKS, TRIAL_NUMBERS, OptunaStudySearcher
from harness.sweep.signals import check_not_interrupted, graceful_stop
from harness.sweep.storage import LOCK_FILE, SWEEP_FILE, SweepStorage
from harness.sweep.trainable import METRIC, train_trial
from harness.tracking import (
    DESCRIPTION_TAG,
    OPTUNA_NUMBER_TAG,
    OPTUNA_STORAGE_TAG,
    OPTUNA_STUDY_TAG,
    TrialLogger,
    TrialRunFinder,
    check_tracking_uri,
    git_commit,
)
from harness.tracking.server import check_artifact_store

log = logging.getLogger("harness.sweep")
MODE = "max"  # of METRIC, the validation IoU each trial reports
__all__ = ["SWEEP_FILE", "StorageError", "SweepError", "SweepInterrupted", "run_sweep"]


# -- the MLflow bridge ----------------------------------------------------------------------------
class MlflowTrialCallback(tune.Callback):
    """Forwards Tune's trial events (on the driver) to :class:`harness.tracking.TrialLogger`."""

    def __init__(self, trial_logger: TrialLogger, study_name: str | None = None) -> None:
        self.trial_logger = trial_logger
        self.study_name = study_name  # the architecture's Optuna study: each trial's run is tagged with its number
        self._running: set[str] = set()  # trials started in this session and not ended yet

    def _optuna_tags(self, trial_id: str) -> dict[str, str]:
        # The searcher of this process keeps each Ray trial's Optuna number (harness.sweep.searcher).
        number = TRIAL_NUMBERS.get(self.study_name or "", {}).get(trial_id)
        if number is None:
            return {}
        return {OPTUNA_STUDY_TAG: str(self.study_name), OPTUNA_NUMBER_TAG: str(number)}

    def setup(self, **info: Any) -> None:
        """Open (or find again) the architecture's parent run."""
        self.trial_logger.start()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        """Create or reopen the trial's child run with its config."""
        self._running.add(trial.trial_id)
        self.trial_logger.trial_started(trial.trial_id, dict(trial.config), self._optuna_tags(trial.trial_id))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        """Log one epoch's metrics at step = epoch."""
        self.trial_logger.trial_result(trial.trial_id, result, self._optuna_tags(trial.trial_id))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        """Mark the trial's run finished with how it stopped (and why, for a configuration that cannot run)."""
        self._running.discard(trial.trial_id)
        self.trial_logger.trial_finished(
            trial.trial_id, stopped_by(trial.last_result, error=False), (trial.last_result or {}).get("error")
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        """Mark the trial's run failed, with the error that ended it (its last failure's trace)."""
        self._running.discard(trial.trial_id)
        self.trial_logger.trial_finished(trial.trial_id, "error", last_failure(trial.error_file))

    def on_experiment_end(self, trials, **info) -> None:
        """Retire runs of trials the sweep lost, flush and close the parent run.

        Tune calls this also when a stop signal ended the experiment early: the unfinished trials' runs
        and the parent run are then KILLED (a resume reopens them), never FINISHED. Tune's clean-up marks
        the trials it stops TERMINATED without a completion event, so the events say which are unfinished.
        """
        self.trial_logger.retire_unknown_trials(t.trial_id for t in trials)
        unfinished = sorted(self._running | {t.trial_id for t in trials if t.status in ("PENDING", "PAUSED")})
        for trial_id in unfinished:
            self.trial_logger.trial_interrupted(trial_id)
        self.trial_logger.close("KILLED" if unfinished else "FINISHED")


class StorageGuard(tune.Callback):
    """Keeps a full disk from costing the sweep: a low-water mark on the storage, and a copy of the last good state.

    Every step of Tune's loop (at most once a second): when the storage's file system has less than
    ``low_water`` bytes free, the experiment is stopped as Ctrl-C stops it (Tune's SIGUSR1: trials paused
    at their checkpoints, the state saved) and :attr:`tripped` says why; the driver then ends with a
    :class:`~harness.errors.NoSpaceError` naming the storage. Whenever Tune's saved experiment state has
    changed and every file of it parses, a copy is kept beside it (:func:`harness.sweep.disk.snapshot_state`),
    which ``--resume`` restores when a full disk cut the state itself. Local and shared storage only.
    """

    def __init__(
        self, key: tuple[str, str], storage: SweepStorage | None, low_water: int = 0, interval_s: float = 1.0
    ) -> None:
        self.key = key  # (sweep id, architecture)
        self.folder = storage_folder(storage) if storage is not None else None
        self.exp_dir = self.folder / key[1] if self.folder is not None else None
        self.low_water, self.interval_s = low_water, interval_s
        self.tripped: str | None = None
        self._next_check = 0.0
        self._state_seen: tuple | None = None
        if storage is not None:
            GUARDS[key] = self

    def __reduce__(self):
        # Tune pickles the run config, callbacks included, into its experiment (tuner.pkl) and a restored
        # Tuner unpickles them: the copy then becomes this driver's live guard, with today's storage and
        # low-water mark, not the first driver's.
        return (_live_guard, (self.key,))

    def on_step_end(self, iteration, trials, **info) -> None:
        """Check the free space, and keep a copy of a new saved state that parses."""
        now = time.monotonic()
        if self.folder is None or now < self._next_check:
            return
        self._next_check = now + self.interval_s
        free = free_bytes(self.folder)
        if self.tripped is None and free is not None and free < self.low_water:
            self.tripped = (
                f"storage {self.folder} is nearly full: {megabytes(free)} left, below the "
                f"{megabytes(self.low_water)} the sweep keeps for the trials in flight; the sweep stopped with its "
                "trials paused at their checkpoints and its state saved: free space and continue with --resume"
            )
            log.error(self.tripped)
            if callable(signal.getsignal(signal.SIGUSR1)):  # Tune's graceful stop, as graceful_stop sends it
                os.kill(os.getpid(), signal.SIGUSR1)
        files = state_files(self.exp_dir)
        seen = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        if files and seen != self._state_seen and snapshot_state(self.exp_dir, STATE_READERS) is not None:
            self._state_seen = seen


#: The live guard of each experiment, by (sweep id, architecture).
GUARDS: dict[tuple[str, str], StorageGuard] = {}


def _live_guard(key: tuple[str, str]) -> StorageGuard:
    """This process's guard of ``key``; an inactive one where there is none (the experiment read elsewhere)."""
    return GUARDS.get(key) or StorageGuard(key, None)


def last_failure(error_file: str | None) -> str | None:
    """The last failure Tune appended to a trial's error file on the driver; None when there is none.

    Tune writes the file (one "Failure # n" block per failure) before it calls ``on_trial_error``; its
    copy in the storage comes later, so the callback reads the driver's.
    """
    if not error_file or not os.path.isfile(error_file):
        return None
    text = Path(error_file).read_text(errors="replace")
    return "Failure # " + text.rsplit("Failure # ", 1)[-1].strip() if "Failure # " in text else text.strip() or None


# -- the driver -----------------------------------------------------------------------------------
def _workdir(bench: Benchmark, storage: SweepStorage) -> Path:
    """The driver's own scratch folder (MLflow writes it could not deliver, the resolved benchmark).

    Nothing a resume needs lives here: that is all in the storage.
    """
    return Path(storage.uri) if not storage.remote else (Path("runs") / bench.name / "driver").resolve()


def _existing_state(storage: SweepStorage, resume: bool, data: PreparedData, bench: Benchmark) -> dict[str, Any] | None:
    """The stored sweep state, checked against the command (read only: nothing is written here)."""
    state = storage.read_json(SWEEP_FILE)
    if state is not None and not resume:
        raise SweepError(
            f"a sweep already exists in {storage.uri} (sweep_id {state['sweep_id']}); "
            "continue it with --resume, or pass another --storage"
        )
    if state is None and resume:
        raise SweepError(f"--resume: no sweep to resume in {storage.uri} (no {SWEEP_FILE})")
    if state is not None and state["split_hash"] != data.split_hash:
        raise SweepError(
            f"{storage.child(SWEEP_FILE)}: the sweep was started on split {state['split_hash'][:12]}, "
            f"this data gives {data.split_hash[:12]}; refusing to mix them"
        )
    if state is not None and state.get("data_hash", data.data_hash) != data.data_hash:
        raise SweepError(
            f"{storage.child(SWEEP_FILE)}: the sweep was started on data {state['data_hash'][:12]}, this data "
            f"gives {data.data_hash[:12]} (same split, other pixels or masks); refusing to mix them"
        )
    if state is not None:
        check_same_benchmark(state.get("config"), bench, storage)
        check_restorable(storage, bench.architectures)
    return state


def _new_state(bench: Benchmark, storage: SweepStorage, data: PreparedData) -> dict[str, Any]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(f"{storage.uri}|{time.time_ns()}".encode()).hexdigest()[:6]
    return {
        "sweep_id": f"{bench.name}-{stamp}-{digest}",
        "benchmark": bench.name,
        "split_hash": data.split_hash,
        "data_hash": data.data_hash,
        "created": stamp,
        "git_commit": git_commit(),
        "storage": storage.uri,
        "study_storage": bench.search.study_database or storage.study_storage(),
        "config": bench.to_dict(),
    }


def _tuner(
    bench: Benchmark,
    arch: str,
    data: PreparedData,
    state: dict,
    storage: SweepStorage,
    workdir: Path,
    guard: StorageGuard,
):
    space = bench.search_spaces[arch]
    # The Tune boundary: the typed config goes in flat, sampled keys on top; train_trial reads it back typed.
    fixed = {k: v for k, v in to_flat(bench.trial_config(arch)).items() if k not in space}
    study_name, study_storage = f"{state['sweep_id']}-{arch}", bench.search.study_database or storage.study_storage()
    searcher = OptunaStudySearcher(
        to_optuna(space),
        study_name=study_name,
        storage=study_storage,
        metric=METRIC,
        mode=MODE,
        sampler=bench.search.sampler,
        seed=bench.search.seed,
        budget=bench.search.num_samples,
        device_hours=bench.search.device_hours,
        device_units=bench.resources.gpu if bench.resources.gpu > 0 else bench.resources.cpu,
    )
    trial_logger = TrialLogger(
        bench.tracking.uri,
        bench.tracking.experiment,
        sweep_id=state["sweep_id"],
        arch=arch,
        parent_tags={
            "benchmark": bench.name,
            "split_hash": data.split_hash,
            "data_hash": data.data_hash,
            "searcher_seed": str(bench.search.seed),
            "git_commit": state.get("git_commit", "unknown"),
            "num_samples": str(bench.search.num_samples),
            "max_epochs": str(bench.train.epochs),
            OPTUNA_STUDY_TAG: study_name,
            OPTUNA_STORAGE_TAG: study_storage,
            DESCRIPTION_TAG: sweep_description(bench, arch, state["sweep_id"], study_name, study_storage),
        },
        pending_path=str(workdir / f"mlflow-pending-{arch}.jsonl"),
    )
    # The Optuna trial names its MLflow run (optuna-dashboard shows user attributes beside each trial).
    find_run = TrialRunFinder(bench.tracking.uri, bench.tracking.experiment, sweep_id=state["sweep_id"], arch=arch)
    TRIAL_LINKS[searcher.study_name] = lambda ray_id: {"mlflow_run_id": run_id} if (run_id := find_run(ray_id)) else {}
    trainable = tune.with_resources(
        tune.with_parameters(
            train_trial,
            data=data,
            prepare_args=bench.prepare_args(),
            run={
                "uri": bench.tracking.uri,
                "experiment": bench.tracking.experiment,
                "sweep_id": state["sweep_id"],
                "arch": arch,
                "interval_s": bench.tracking.system_metrics_s,
                "verbose": verbosity() >= VERBOSE,
            },
        ),
        {"cpu": bench.resources.cpu, "gpu": bench.resources.gpu},
    )
    tune_config = tune.TuneConfig(
        metric=METRIC,
        mode=MODE,
        # A new worker per trial costs ~2 s of imports; reusing actors halves per-trial scheduling
        # overhead (benchmarks/perf/RESULTS.md, search_efficiency.py --reuse-actors).
        reuse_actors=True,
        # Unlimited for Tune: the searcher ends the sweep at search.num_samples trials (FINISHED), counted
        # from the experiment Tune restores, which Tune's own sample counter may not match after a SIGKILL.
        num_samples=-1,
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
        storage_path=storage.uri,
        callbacks=[MlflowTrialCallback(trial_logger, study_name), guard],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=bench.failure.max_failures),
        # The trials as a table of their searched values (harness.sweep.progress), not Tune's status blocks.
        progress_reporter=TrialTable(
            arch, bench.search.num_samples, list(space), metric=METRIC, max_epochs=bench.train.epochs
        ),
        verbose=tune_verbosity(),
    )
    return trainable, tune_config, run_config, fixed, trial_logger


def sweep_description(bench: Benchmark, arch: str, sweep_id: str, study_name: str, study_storage: str) -> str:
    """The parent run's description (MLflow's note, Markdown): what was searched, the budget, where the study is."""
    asha = (
        f"ASHA (grace period {bench.asha.grace_period}, reduction factor {bench.asha.reduction_factor})"
        if bench.asha.enabled
        else "no early stopping"
    )
    searched = ", ".join(f"`{key}`" for key in bench.search_spaces[arch])
    return (
        f"**{get_model_spec(arch).label}** sweep of benchmark `{bench.name}` (sweep `{sweep_id}`): "
        f"{bench.search.num_samples} trials of at most {bench.train.epochs} epochs, {bench.search.sampler.upper()} "
        f"(seed {bench.search.seed}) with {asha}, the same budget as every other architecture of the sweep. "
        f"Searched: {searched}. Optuna study `{study_name}` in `{study_storage}` "
        f"(`optuna-dashboard {study_storage}`). Each child run is one trial; `best_trial_id` names the chosen one."
    )


def trial_summaries(grid: tune.ResultGrid, run_id_of: Callable[[str], str | None]) -> tuple[TrialSummary, ...]:
    """Every trial of a finished Tune run as a row of the sweep's trial table (``run_id_of``: trial id → run).

    A trial that failed before its first report on a worker that never ran it (its node lost while it
    started, or an errored trial restored from storage) has only its trial id in its ``Result``, no config;
    Tune's experiment state has the config, and the trial stays in the table as an error.
    """
    results = list(grid)
    saved_configs: dict[str, dict] = {}  # trial folder name -> config, read only when needed
    if any(r.config is None for r in results):
        analysis = tune.ExperimentAnalysis(grid.experiment_path, storage_filesystem=grid.filesystem)
        saved_configs = {Path(t.path).name: t.config for t in analysis.trials}
    summaries = []
    for result in results:
        metrics = result.metrics or {}
        config = result.config if result.config is not None else saved_configs[Path(result.path).name]
        trial_id = str(metrics.get("trial_id") or Path(result.path).name)  # Tune always sets it
        value = metrics.get(METRIC)
        summaries.append(
            TrialSummary(
                trial_id=trial_id,
                run_id=run_id_of(trial_id),
                config=from_flat(config),
                stopped_by=stopped_by(metrics, error=result.error is not None),
                epochs=int(metrics.get("training_iteration", 0)),
                val_iou=float(value) if value is not None else math.nan,
                seconds=float(metrics.get("time_total_s", 0.0)),
            )
        )
    return tuple(summaries)


def run_architecture(
    bench: Benchmark,
    arch: str,
    data: PreparedData,
    state: dict,
    storage: SweepStorage,
    workdir: Path,
    resume: bool,
    stop_signals: list[int] | None = None,
) -> SweepResult:
    """Run (or resume) one architecture's Tune experiment; choose and record its :class:`SweepResult`.

    Raises :class:`SweepInterrupted` when a stop signal (``stop_signals``, from
    :func:`~harness.sweep.signals.graceful_stop`) ended it, :class:`SweepError` when Tune left trials
    unfinished without one: nothing is chosen or recorded then.
    """
    guard = StorageGuard((state["sweep_id"], arch), storage, low_water_bytes(bench))
    trainable, tune_config, run_config, fixed, trial_logger = _tuner(bench, arch, data, state, storage, workdir, guard)
    exp_path = storage.child(arch)
    # check_restorable refused an unreadable state before Ray started: what exists here can be restored.
    if resume and tune.Tuner.can_restore(exp_path):
        recover_lost_checkpoints(exp_path)
        # The restored run config's guard unpickles to `guard` (StorageGuard.__reduce__).
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=fixed, tune_config=tune_config, run_config=run_config)
    try:
        grid = tuner.fit()
    finally:
        GUARDS.pop(guard.key, None)
    unfinished = len(grid) - grid.num_terminated - grid.num_errors
    if guard.tripped or stop_signals or unfinished:
        # Stopped before its budget was spent: the parent run is KILLED (a resume reopens it), also when no
        # trial had started yet, where Tune's callback saw nothing unfinished and closed it FINISHED.
        try:
            trial_logger.start()
            trial_logger.close("KILLED")
        except TrackingError as exc:  # the store on the same full disk: the reason below matters more
            log.warning("could not mark %s's parent run KILLED: %s", arch, exc)
    if guard.tripped:
        raise NoSpaceError(guard.tripped)
    check_not_interrupted(stop_signals or [], storage, arch, unfinished)

    # The callback Tune ran is its own copy: open our logger (it finds the runs by their tags).
    trial_logger.start()
    trials = trial_summaries(grid, trial_logger.run_id)
    best = select_best(trials, bench.train.epochs)
    result = SweepResult(
        sweep_id=state["sweep_id"],
        benchmark=bench.name,
        arch=arch,
        split_hash=data.split_hash,
        max_epochs=bench.train.epochs,
        best=best,
        trials=tuple(sorted(trials, key=lambda t: t.trial_id)),
        data_hash=data.data_hash,
    )
    trial_logger.log_parent_dict(result.to_dict(), SWEEP_RESULT_FILE)
    if best is not None:
        trial_logger.log_parent_metrics({"best_val_iou": best.val_iou})
        searched = to_flat(best.config)
        chosen = ", ".join(f"`{key}={searched[key]}`" for key in bench.search_spaces[arch] if key in searched)
        trial_logger.set_parent_tags(
            {
                "best_trial_id": best.trial_id,
                DESCRIPTION_TAG: trial_logger.parent_tags[DESCRIPTION_TAG]
                + f"\n\nBest trial: `{best.trial_id}`, val_iou {best.val_iou:.4f} with {chosen}.",
            }
        )
        best_checkpoint = next((r.checkpoint for r in grid if (r.metrics or {}).get("trial_id") == best.trial_id), None)
        if best_checkpoint is not None:
            trial_logger.log_parent_artifacts([best_checkpoint.to_directory()], artifact_path="best_checkpoint")
    # The resolved benchmark lets `cloudmask compare` without a benchmark file redo this sweep's data and split.
    workdir.mkdir(parents=True, exist_ok=True)
    bench_file = workdir / "benchmark.yaml"
    bench_file.write_text(yaml.safe_dump(bench.to_dict(), sort_keys=False))
    trial_logger.log_parent_artifacts([bench_file])
    completed = sum(t.stopped_by == "completed" for t in trials)
    trial_logger.set_parent_tags({"n_trials": str(len(trials)), "n_completed": str(completed)})
    trial_logger.close()
    return result


def run_sweep(bench: Benchmark, *, address: str | None = None, resume: bool = False) -> list[SweepResult]:
    """Check everything, prepare the data once, then sweep each architecture in turn.

    The order is what makes a failed start harmless: the storage (scheme, reachability, credentials),
    the tracking store (and that it accepts artifacts), the stored sweep state, the data, the Ray
    cluster (address, token, resources) are all checked before ``sweep.json`` is written, so a
    corrected re-run is never refused as "a sweep already exists".
    """
    storage = SweepStorage.parse(bench.storage)
    folder = storage_folder(storage)
    made_here = folder is not None and not folder.exists()
    held = contextlib.ExitStack()  # the storage's lock, held until the sweep ends
    try:
        storage.check()
        held.enter_context(storage.lock())  # refused while another driver holds it
        uri = check_tracking_uri(bench.tracking.uri)
        check_artifact_store(uri, bench.tracking.experiment)
        bench = dataclasses.replace(bench, tracking=dataclasses.replace(bench.tracking, uri=uri))
        data = prepare_data(**bench.prepare_args(), progress=verbosity() > QUIET)
        check_trials_can_run(bench, int(open_cache(data.cache_dir).images.shape[-1]))
        state = _existing_state(storage, resume, data, bench)
        check_sweep_space(bench, storage)  # what the sweep (or the rest of it) will write must fit
        workdir = _workdir(bench, storage)
        results = _run_in_ray(bench, storage, data, state, workdir, address, resume)
    except BaseException as exc:
        held.close()
        # A start refused (bad input, an unreachable cluster) leaves nothing behind: not even the empty
        # storage folder it made. Once sweep.json is written the folder holds the sweep and stays.
        if made_here and folder.is_dir() and {p.name for p in folder.iterdir()} <= {LOCK_FILE}:
            shutil.rmtree(folder)
        detail = no_space_detail(exc) if isinstance(exc, Exception) else None
        if detail is None or isinstance(exc, NoSpaceError):
            raise
        raise NoSpaceError(
            f"no space left while sweeping into storage {storage.uri} ({detail}); nothing of the sweep's own "
            "files is half-written: free space and continue with --resume"
        ) from exc
    held.close()
    check_every_architecture_chose(results)
    return results


def _run_in_ray(bench, storage, data, state, workdir, address, resume) -> list[SweepResult]:
    with ray_session(bench.ray, address):
        check_resources(bench.resources.cpu, bench.resources.gpu)
        check_loader_workers(
            most_loader_workers(bench), bench.search.max_concurrent, bench.resources.cpu, bench.resources.gpu
        )
        if state is None:
            state = _new_state(bench, storage, data)
            storage.write_json(SWEEP_FILE, state)
        results = []
        with graceful_stop() as stop_signals:
            if bench.search.parallel_architectures > 1 and len(bench.architectures) > 1:
                results = run_side_by_side(bench, data, state, workdir, resume, driver_address(), stop_signals)
            for arch in bench.architectures if not results else ():
                check_not_interrupted(stop_signals, storage, arch)
                log.info("sweeping %s: %d trials", arch, bench.search.num_samples)
                results.append(run_architecture(bench, arch, data, state, storage, workdir, resume, stop_signals))
    state["finished"] = time.strftime("%Y%m%d-%H%M%S")
    storage.write_json(SWEEP_FILE, state)
    return results
