"""MLflow: one parent run per (sweep, architecture), exactly one child run per trial, artifacts.

The only module that imports ``mlflow``. :class:`TrialLogger` is driven by the Ray Tune callback in
:mod:`harness.sweep` (which knows Ray; this module does not). Two flaws of the stock integration are
avoided on purpose:

- runs are found by their tags (``sweep_id`` + ``arch`` for a parent, ``trial_id`` for a child), never by
  an in-memory map, so a restored sweep or a retried trial reuses its run instead of logging a duplicate;
- every write goes through a queue that is retried with back-off, so a tracking store that fails
  mid-sweep delays logging but loses nothing; a metric step already in the store is not written twice
  (a trial resumed from an older checkpoint re-reports epochs the store already has).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

# A dead server must not stall the Ray driver inside MLflow's own (minutes-long) retry loop: fail fast
# and let TrialLogger's queue retry with back-off. Set before mlflow reads them.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

ROLE_SWEEP = "sweep"
ROLE_TRIAL = "trial"
ROLE_FINAL = "final_compare"
PARENT_TAG = "mlflow.parentRunId"
#: Metrics logged per epoch (step = epoch); the contract names the first four.
EPOCH_METRICS = (
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_iou",
    "val_precision",
    "val_recall",
    "val_f1",
    "epoch_seconds",
    "train_images_per_second",
    "restored_at_epoch",
)


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message names the URI."""


def resolve_uri(uri: str) -> str:
    """Make a relative ``sqlite:///path`` absolute (Ray workers and the UI may run elsewhere)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    if "://" not in uri:  # a bare path: MLflow's file store
        return Path(uri).resolve().as_uri()
    return uri


def check_tracking_uri(uri: str, *, timeout: float = 10.0, must_exist: bool = False) -> str:
    """Fail fast, with the URI in the message, if the tracking store cannot be reached; return it resolved.

    ``must_exist`` (for readers such as the final comparison): a local SQLite store that is not there
    is an error, instead of being created empty.
    """
    uri = resolve_uri(uri)
    if must_exist and uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise TrackingError(f"tracking URI {uri}: no such store (has a sweep been run with it?)")
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
                if resp.status != 200:
                    raise TrackingError(f"tracking URI {uri} answered HTTP {resp.status} on /health")
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(f"tracking URI {uri} is unreachable: {exc}") from None
    elif scheme == "sqlite":
        db = Path(uri[len("sqlite:///") :])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"tracking URI {uri}: cannot create {db.parent}: {exc}") from None
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(f"tracking URI {uri} cannot be used: {type(exc).__name__}: {exc}") from None
    return uri


def get_or_create_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id; a new one keeps its artifacts beside a local SQLite store."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:
        exp = client.get_experiment_by_name(name)  # another process created it first
        if exp is None:
            raise
        return exp.experiment_id


def git_commit(cwd: str | Path | None = None) -> str:
    """The current git commit of the harness checkout, or ``unknown``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def find_runs(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> list:
    """Runs of the experiment whose tags equal ``tags`` (all of them), oldest first."""
    filt = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=filt, max_results=5000)
    return sorted(runs, key=lambda r: r.info.start_time or 0)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict | tuple) else str(value)
    return text[:6000]


@dataclass
class _Op:
    kind: str  # "start" | "metrics" | "end"
    trial_id: str
    payload: dict[str, Any] = field(default_factory=dict)


class TrialLogger:
    """Logs one sweep of one architecture: a parent run and one child run per trial.

    Calls never raise on a store failure: writes are queued and retried with exponential back-off
    at each later call; :meth:`close` flushes with retries and raises :class:`TrackingError` (after
    saving what it could not write to ``pending_path``) only if the store stays down.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        *,
        sweep_id: str,
        arch: str,
        parent_tags: Mapping[str, str] | None = None,
        pending_path: str | None = None,
        final_flush_seconds: float = 120.0,
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        self.sweep_id = sweep_id
        self.arch = arch
        self.parent_tags = dict(parent_tags or {})
        self.pending_path = pending_path
        self.final_flush_seconds = final_flush_seconds
        self._reset()

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._run_ids: dict[str, str] = {}
        self._max_step: dict[str, int] = {}
        self._pending: list[_Op] = []
        self._failures = 0
        self._next_try = 0.0

    # Ray pickles its callbacks with the experiment; a live client or queue must not travel.
    def __getstate__(self) -> dict[str, Any]:
        keep = ("uri", "experiment", "sweep_id", "arch", "parent_tags", "pending_path", "final_flush_seconds")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.uri)
        return self._client

    # -- the parent run -------------------------------------------------------------------------
    def start(self) -> str:
        """Find or create the parent run (raises TrackingError if the store is unusable now)."""
        try:
            self._experiment_id = get_or_create_experiment(self.client, self.experiment, self.uri)
            tags = {"role": ROLE_SWEEP, "sweep_id": self.sweep_id, "arch": self.arch}
            found = find_runs(self.client, self._experiment_id, tags)
            if found:
                self.parent_run_id = found[-1].info.run_id
                if found[-1].info.status != "RUNNING":
                    self.client.update_run(self.parent_run_id, status="RUNNING")
            else:
                run = self.client.create_run(
                    self._experiment_id,
                    run_name=f"{self.sweep_id}/{self.arch}",
                    tags={**tags, **self.parent_tags},
                )
                self.parent_run_id = run.info.run_id
        except TrackingError:
            raise
        except Exception as exc:
            raise TrackingError(f"tracking URI {self.uri}: cannot open the sweep's parent run: {exc}") from exc
        self._load_children()
        return self.parent_run_id

    def _load_children(self) -> None:
        """Reattach to the child runs an earlier (killed) driver created."""
        tags = {"role": ROLE_TRIAL, PARENT_TAG: self.parent_run_id}
        for run in find_runs(self.client, self._experiment_id, tags):
            trial_id = run.data.tags.get("trial_id")
            if trial_id and trial_id not in self._run_ids:
                self._run_ids[trial_id] = run.info.run_id

    # -- events from the sweep --------------------------------------------------------------------
    def trial_started(self, trial_id: str, config: Mapping[str, Any]) -> None:
        """A trial started (or restarted after a failure or a restore)."""
        self._enqueue(_Op("start", trial_id, {"config": dict(config)}))

    def trial_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """One epoch's result; logged at step = epoch unless the store already has that step."""
        epoch = int(result["epoch"])
        metrics = {}
        for k in EPOCH_METRICS:
            v = result.get(k)
            if isinstance(v, int | float) and not isinstance(v, bool):
                metrics[k] = float(v)
        self._enqueue(_Op("metrics", trial_id, {"epoch": epoch, "metrics": metrics}))

    def trial_finished(self, trial_id: str, stopped_by: str) -> None:
        """The trial ended: completed | asha | diverged | error."""
        self._enqueue(_Op("end", trial_id, {"stopped_by": stopped_by}))

    def log_parent_artifacts(self, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
        """Attach files (best config, checkpoint) to the parent run, with retries."""
        for p in paths:
            p = Path(p)
            fn = self.client.log_artifacts if p.is_dir() else self.client.log_artifact
            _retry(lambda fn=fn, p=p: fn(self.parent_run_id, str(p), artifact_path), what=f"artifact {p}")

    def set_parent_tags(self, tags: Mapping[str, str]) -> None:
        """Tags on the parent run (e.g. the best trial), with retries."""
        for k, v in tags.items():
            _retry(lambda k=k, v=v: self.client.set_tag(self.parent_run_id, k, str(v)), what=f"tag {k}")

    def retire_unknown_trials(self, known_trial_ids: Iterable[str]) -> list[str]:
        """Delete child runs of trials the sweep no longer has; returns their trial ids.

        A driver killed between starting a trial and saving its experiment state leaves an MLflow run
        for a trial that the restored sweep does not know (it suggests a new one in its place). That
        run's results are lost to the sweep, so it is deleted (MLflow's soft delete, tagged with the
        reason) to keep exactly one run per trial of the sweep.
        """
        known = set(known_trial_ids)
        self._flush()
        if self._pending:
            return []  # the store is down: keep everything, close() reports it
        try:
            self._load_children()
        except Exception as exc:
            log.warning("could not list child runs to retire lost trials: %s", exc)
            return []
        retired = []
        for trial_id, run_id in list(self._run_ids.items()):
            if trial_id in known:
                continue
            _retry(lambda r=run_id: self.client.set_tag(r, "retired", "trial lost with a killed driver"), what="tag")
            _retry(lambda r=run_id: self.client.delete_run(r), what=f"delete run of lost trial {trial_id}")
            del self._run_ids[trial_id]
            retired.append(trial_id)
        if retired:
            log.warning(
                "deleted MLflow runs of %d trial(s) the restored sweep does not know: %s", len(retired), retired
            )
        return retired

    def close(self, status: str = "FINISHED") -> None:
        """Flush everything (retrying for up to ``final_flush_seconds``) and end the parent run."""
        deadline = time.monotonic() + self.final_flush_seconds
        delay = 0.5
        while self._pending and time.monotonic() < deadline:
            self._next_try = 0.0
            self._flush()
            if self._pending:
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 15.0)
        if self._pending:
            self._save_pending()
            raise TrackingError(
                f"tracking URI {self.uri} stayed unreachable; {len(self._pending)} pending writes "
                f"saved to {self.pending_path or '(nowhere: no pending_path)'}"
            )
        if self.parent_run_id:
            _retry(lambda: self.client.set_terminated(self.parent_run_id, status), what="end parent run")

    @property
    def pending(self) -> int:
        """How many writes wait for the store."""
        return len(self._pending)

    def run_id(self, trial_id: str) -> str | None:
        """The child run of a trial, if it has been created."""
        return self._run_ids.get(trial_id)

    # -- the queue --------------------------------------------------------------------------------
    def _enqueue(self, op: _Op) -> None:
        self._pending.append(op)
        if time.monotonic() >= self._next_try:
            self._flush()

    def _flush(self) -> None:
        while self._pending:
            op = self._pending[0]
            try:
                self._apply(op)
            except Exception as exc:  # the store is down or failing: keep the op, back off
                self._failures += 1
                wait = min(2.0 ** min(self._failures, 6), 60.0)
                self._next_try = time.monotonic() + wait
                log.warning(
                    "MLflow write failed (%s: %s); %d writes queued, retrying in %.0f s",
                    type(exc).__name__,
                    exc,
                    len(self._pending),
                    wait,
                )
                return
            self._pending.pop(0)
            self._failures = 0

    def _apply(self, op: _Op) -> None:
        if self.parent_run_id is None:
            self.start()
        if op.kind == "start":
            self._ensure_child(op.trial_id, op.payload["config"])
        elif op.kind == "metrics":
            run_id = self._ensure_child(op.trial_id, None)
            step = op.payload["epoch"]
            if step <= self._max_step.get(run_id, 0):
                return  # already in the store: a resumed trial re-reported this epoch
            ts = int(time.time() * 1000)
            # NaN is logged too (MLflow stores it): skipping it would leave a gap in the epoch steps.
            metrics = [Metric(k, v, ts, step) for k, v in op.payload["metrics"].items()]
            self.client.log_batch(run_id, metrics=metrics)
            self._max_step[run_id] = step
        elif op.kind == "end":
            run_id = self._ensure_child(op.trial_id, None)
            stopped = op.payload["stopped_by"]
            self.client.set_tag(run_id, "stopped_by", stopped)
            status = RunStatus.to_string(RunStatus.FAILED if stopped == "error" else RunStatus.FINISHED)
            self.client.set_terminated(run_id, status)

    def _ensure_child(self, trial_id: str, config: Mapping[str, Any] | None) -> str:
        run_id = self._run_ids.get(trial_id)
        if run_id is None:
            tags = {"role": ROLE_TRIAL, PARENT_TAG: self.parent_run_id, "trial_id": trial_id}
            found = find_runs(self.client, self._experiment_id, tags)
            if found:
                run_id = found[0].info.run_id
            else:
                run = self.client.create_run(
                    self._experiment_id,
                    run_name=trial_id,
                    tags={**tags, "arch": self.arch, "sweep_id": self.sweep_id},
                )
                run_id = run.info.run_id
                if config is not None:
                    params = [Param(k, _param_value(v)) for k, v in sorted(config.items())]
                    self.client.log_batch(run_id, params=params)
            self._run_ids[trial_id] = run_id
        if run_id not in self._max_step:
            history = self.client.get_metric_history(run_id, "val_iou")
            self._max_step[run_id] = max((m.step for m in history), default=0)
        if config is not None:
            run = self.client.get_run(run_id)
            if run.info.status != "RUNNING":  # a retried or restored trial runs again
                self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "stopped_by", "running")
        return run_id

    def _save_pending(self) -> None:
        if not self.pending_path:
            return
        path = Path(self.pending_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            for op in self._pending:
                fh.write(json.dumps({"kind": op.kind, "trial_id": op.trial_id, **op.payload}, default=str) + "\n")


def _retry(fn, *, what: str, attempts: int = 6, delay: float = 0.5):
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if i == attempts - 1:
                raise TrackingError(f"MLflow: {what} failed after {attempts} attempts: {exc}") from exc
            time.sleep(delay * 2**i)
    return None


# -- reading sweeps back (final_compare) ----------------------------------------------------------
@dataclass
class TrialRecord:
    """One trial of a sweep as MLflow holds it."""

    run_id: str
    trial_id: str
    arch: str
    params: dict[str, str]
    stopped_by: str
    epochs: int
    val_iou: float
    seconds: float


@dataclass
class SweepRecord:
    """One architecture's sweep: its parent run and trials."""

    sweep_id: str
    arch: str
    parent_run_id: str
    tags: dict[str, str]
    trials: list[TrialRecord]


def read_sweep(
    uri: str, experiment: str, sweep_id: str | None = None, *, benchmark: str | None = None
) -> list[SweepRecord]:
    """The parent runs of a sweep (the latest finished one when ``sweep_id`` is None) with their trials."""
    client = MlflowClient(resolve_uri(uri))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise TrackingError(f"tracking URI {uri}: no experiment named {experiment!r}")
    tags = {"role": ROLE_SWEEP, **({"benchmark": benchmark} if benchmark else {})}
    parents = find_runs(client, exp.experiment_id, tags)
    if sweep_id is None:
        finished = [r for r in parents if r.info.status == "FINISHED"]
        if not finished:
            raise TrackingError(
                f"tracking URI {uri}, experiment {experiment!r}: no finished sweep"
                + (f" of benchmark {benchmark!r}" if benchmark else "")
                + "; run python -m harness.sweep first"
            )
        sweep_id = finished[-1].data.tags["sweep_id"]
    parents = [r for r in parents if r.data.tags.get("sweep_id") == sweep_id]
    if not parents:
        raise TrackingError(f"tracking URI {uri}: no sweep with sweep_id {sweep_id!r}")
    out = []
    for parent in parents:
        children = find_runs(client, exp.experiment_id, {"role": ROLE_TRIAL, PARENT_TAG: parent.info.run_id})
        trials = []
        for run in children:
            hist = client.get_metric_history(run.info.run_id, "val_iou")
            secs = client.get_metric_history(run.info.run_id, "epoch_seconds")
            last = max(hist, key=lambda m: m.step) if hist else None
            trials.append(
                TrialRecord(
                    run_id=run.info.run_id,
                    trial_id=run.data.tags.get("trial_id", ""),
                    arch=parent.data.tags["arch"],
                    params=dict(run.data.params),
                    stopped_by=run.data.tags.get("stopped_by", ""),
                    epochs=last.step if last else 0,
                    val_iou=last.value if last else float("nan"),
                    seconds=float(sum(m.value for m in secs)),
                )
            )
        out.append(
            SweepRecord(
                sweep_id=sweep_id,
                arch=parent.data.tags["arch"],
                parent_run_id=parent.info.run_id,
                tags=dict(parent.data.tags),
                trials=trials,
            )
        )
    return out


def latest_sweep(uri: str) -> tuple[str, str, str]:
    """(experiment name, sweep id, a parent run id) of the most recently finished sweep in the store."""
    client = MlflowClient(resolve_uri(uri))
    exps = {e.experiment_id: e.name for e in client.search_experiments()}
    runs = (
        client.search_runs(
            list(exps),
            filter_string=f"tags.role = '{ROLE_SWEEP}' and attributes.status = 'FINISHED'",
            order_by=["attributes.end_time DESC"],
            max_results=1,
        )
        if exps
        else []
    )
    if not runs:
        raise TrackingError(f"tracking URI {uri}: no finished sweep found; run python -m harness.sweep first")
    run = runs[0]
    return exps[run.info.experiment_id], run.data.tags["sweep_id"], run.info.run_id


def download_artifacts(uri: str, run_id: str, path: str, dst: str | Path) -> str:
    """Download a run's artifact (file or folder) into ``dst``; returns the local path."""
    client = MlflowClient(resolve_uri(uri))
    return client.download_artifacts(run_id, path, str(dst))


def log_run(
    uri: str,
    experiment: str,
    *,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    artifacts_dir: str | Path | None = None,
) -> str:
    """Log a standalone run (the final comparison) with its artifacts; returns its run id."""
    uri = resolve_uri(uri)
    client = MlflowClient(uri)
    exp_id = get_or_create_experiment(client, experiment, uri)
    run = client.create_run(exp_id, run_name=run_name, tags=dict(tags))
    rid = run.info.run_id
    ts = int(time.time() * 1000)
    client.log_batch(
        rid,
        metrics=[Metric(k, float(v), ts, 0) for k, v in (metrics or {}).items() if math.isfinite(float(v))],
        params=[Param(k, _param_value(v)) for k, v in (params or {}).items()],
        tags=[RunTag("role", tags.get("role", ROLE_FINAL))],
    )
    if artifacts_dir is not None:
        client.log_artifacts(rid, str(artifacts_dir))
    client.set_terminated(rid, "FINISHED")
    return rid


def find_final_runs(uri: str, experiment: str, tags: Mapping[str, str]) -> list:
    """Finished runs of the experiment with these tags (used to skip finished retrains)."""
    client = MlflowClient(resolve_uri(uri))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in find_runs(client, exp.experiment_id, tags) if r.info.status == "FINISHED"]


__all__ = [
    "TrackingError",
    "TrialLogger",
    "check_tracking_uri",
    "find_final_runs",
    "git_commit",
    "log_run",
    "read_sweep",
    "resolve_uri",
]
