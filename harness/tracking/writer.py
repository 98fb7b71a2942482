"""The write path: one parent run per (sweep, architecture), one child run per trial, standalone runs.

:class:`TrialLogger` is driven by the Ray Tune callback in :mod:`harness.sweep.driver` (which knows Ray; this
module does not). Two flaws of the stock integration are avoided on purpose:

- runs are found by their tags (``sweep_id`` + ``arch`` for a parent, ``trial_id`` for a child), never by
  an in-memory map, so a restored sweep or a retried trial reuses its run instead of logging a duplicate;
- every write goes through a queue that is retried with back-off, so a tracking store that fails
  mid-sweep delays logging but loses nothing; a metric step already in the store is not written twice
  (a trial resumed from an older checkpoint re-reports epochs the store already has).

Each child run holds its trial's config twice: as MLflow params (strings, for the UI and for search
filters) and as the JSON artifact ``config.json`` (typed, for :func:`harness.tracking.reader.load_dict`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from harness.errors import TrackingError
from harness.tracking.store import (
    CONFIG_ARTIFACT,
    EPOCH_METRICS,
    OPTUNA_NUMBER_TAG,
    PARENT_TAG,
    ROLE_SWEEP,
    ROLE_TRIAL,
    RUN_FACTS,
    client_for,
    find_runs,
    get_or_create_experiment,
    retry,
    standard_tags,
)

log = logging.getLogger(__name__)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict | tuple) else str(value)
    return text[:6000]  # MLflow's limit on a param value


def _error_tag(error: Any, limit: int = 5000) -> str:
    """An error message that fits a tag: a long one (a trace) keeps its start and its end, the exception."""
    text = str(error)
    if len(text) <= limit:
        return text
    cut = "\n[... cut ...]\n"
    head = (limit - len(cut)) // 4
    return text[:head] + cut + text[-(limit - len(cut) - head) :]


def _jsonable(config: Mapping[str, Any]) -> dict[str, Any]:
    # A value json cannot encode would fail the write on every retry and block the queue behind it:
    # such values are stored as their str() instead.
    return json.loads(json.dumps(dict(config), default=str))


def _finite_metrics(metrics: Mapping[str, float], ts: int, step: int) -> list[Metric]:
    return [Metric(k, float(v), ts, step) for k, v in metrics.items() if math.isfinite(float(v))]


@dataclass
class _Op:
    kind: str  # "start" | "metrics" | "end"
    trial_id: str
    payload: dict[str, Any] = field(default_factory=dict)


class TrialLogger:
    """Log one sweep of one architecture: a parent run and one child run per trial.

    Trial events never raise on a store failure: writes are queued and retried with exponential
    back-off at each later call; :meth:`close` flushes with retries and raises :class:`TrackingError`
    (after saving what it could not write to ``pending_path``) only if the store stays down. The
    ``log_parent_*`` and ``set_parent_tags`` calls write at once, with a few retries.
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
        """Describe the sweep; nothing is written before :meth:`start` or the first event."""
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
        self._restored_tag: dict[str, int] = {}  # run id -> the restored_at_epoch tag last set
        self._fact_tags: dict[str, dict[str, str]] = {}  # run id -> the RUN_FACTS tags last set
        self._pending: list[_Op] = []
        self._failures = 0
        self._next_try = 0.0

    def __getstate__(self) -> dict[str, Any]:
        """Keep only the settings: a live client or a queue must not travel with a pickled callback."""
        keep = ("uri", "experiment", "sweep_id", "arch", "parent_tags", "pending_path", "final_flush_seconds")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the settings; the runs are found again by their tags on the next write."""
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self) -> MlflowClient:
        """The MLflow client, created on first use."""
        if self._client is None:
            self._client = client_for(self.uri)
        return self._client

    # -- the parent run -------------------------------------------------------------------------
    def start(self) -> str:
        """Find or create the parent run and return its id (raises TrackingError if the store is unusable)."""
        try:
            self._experiment_id = get_or_create_experiment(self.client, self.experiment, self.uri)
            tags = {"role": ROLE_SWEEP, "sweep_id": self.sweep_id, "arch": self.arch}
            found = find_runs(self.client, self._experiment_id, tags)
            if found:
                self.parent_run_id = found[-1].info.run_id
                if found[-1].info.status != "RUNNING":
                    self.client.update_run(self.parent_run_id, status="RUNNING")
            else:
                # The architecture first: the runs table cuts long names from the right.
                run = self.client.create_run(
                    self._experiment_id,
                    run_name=f"{self.arch}/{self.sweep_id}",
                    tags=standard_tags({**tags, **self.parent_tags}),
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

    def _parent(self) -> str:
        if self.parent_run_id is None:
            raise TrackingError(f"tracking URI {self.uri}: sweep {self.sweep_id}/{self.arch} has no parent run yet")
        return self.parent_run_id

    # -- events from the sweep --------------------------------------------------------------------
    def trial_started(self, trial_id: str, config: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> None:
        """Record that a trial started (or restarted after a failure or a restore) with this config.

        ``tags``: more about the trial (its Optuna study and trial number); with ``optuna_trial_number``
        among them the run is named after it, as Optuna's dashboard names the trial ("Trial 0").
        """
        self._enqueue(_Op("start", trial_id, {"config": dict(config), "tags": dict(tags or {})}))

    def trial_result(self, trial_id: str, result: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> None:
        """Log one epoch's result at step = epoch, unless the store already has that step (``tags``: as above)."""
        epoch = int(result["epoch"])
        metrics = {}
        for k in EPOCH_METRICS:
            v = result.get(k)
            if isinstance(v, int | float) and not isinstance(v, bool):
                metrics[k] = float(v)
        payload = {"epoch": epoch, "metrics": metrics, "restored_at_epoch": result.get("restored_at_epoch")}
        # Where the epoch ran ("auto" resolved) and in which precision: tags, as they hold for the run.
        payload["facts"] = {k: result[k] for k in RUN_FACTS if isinstance(result.get(k), str)} | dict(tags or {})
        self._enqueue(_Op("metrics", trial_id, payload))

    def trial_finished(self, trial_id: str, stopped_by: str, error: str | None = None) -> None:
        """Record that the trial ended: completed | asha | diverged | error (with the message, where known)."""
        self._enqueue(_Op("end", trial_id, {"stopped_by": stopped_by, "error": error}))

    def trial_interrupted(self, trial_id: str) -> None:
        """Record that the sweep stopped while the trial was unfinished: KILLED, reopened by a resume."""
        self._enqueue(_Op("end", trial_id, {"stopped_by": "interrupted"}))

    def log_parent_artifacts(self, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
        """Attach files or folders (best config, checkpoint) to the parent run, with retries."""
        parent = self._parent()
        for p in paths:
            p = Path(p)
            fn = self.client.log_artifacts if p.is_dir() else self.client.log_artifact
            retry(lambda fn=fn, p=p: fn(parent, str(p), artifact_path), what=f"artifact {p}")

    def log_parent_dict(self, obj: dict, artifact_file: str) -> None:
        """Store ``obj`` as the JSON artifact ``artifact_file`` of the parent run, with retries."""
        parent = self._parent()
        json.dumps(obj)  # a value JSON cannot encode is the caller's bug: raise it now, not after retries
        retry(lambda: self.client.log_dict(parent, obj, artifact_file), what=f"artifact {artifact_file}")

    def log_parent_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log summary metrics (step 0) on the parent run, with retries; non-finite values are skipped.

        MLflow can store NaN, but a NaN sorts unpredictably in the UI and in ``order_by``, so a sweep
        summary leaves the metric out instead.
        """
        parent = self._parent()
        batch = _finite_metrics(metrics, int(time.time() * 1000), 0)
        if batch:
            retry(lambda: self.client.log_batch(parent, metrics=batch), what="parent metrics")

    def set_parent_tags(self, tags: Mapping[str, str]) -> None:
        """Set tags on the parent run (e.g. the best trial), with retries."""
        parent = self._parent()
        for k, v in tags.items():
            retry(lambda k=k, v=v: self.client.set_tag(parent, k, str(v)), what=f"tag {k}")

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
            retry(lambda r=run_id: self.client.set_tag(r, "retired", "trial lost with a killed driver"), what="tag")
            retry(lambda r=run_id: self.client.delete_run(r), what=f"delete run of lost trial {trial_id}")
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
            retry(lambda: self.client.set_terminated(self.parent_run_id, status), what="end parent run")

    @property
    def pending(self) -> int:
        """How many writes wait for the store."""
        return len(self._pending)

    def run_id(self, trial_id: str) -> str | None:
        """Return the child run id of a trial, or None if its run has not been created yet."""
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
            tags = op.payload.get("tags", {})
            run_id = self._ensure_child(op.trial_id, op.payload["config"], tags.get(OPTUNA_NUMBER_TAG))
            self._set_facts(run_id, tags)
        elif op.kind == "metrics":
            run_id = self._ensure_child(op.trial_id, None)
            step = op.payload["epoch"]
            restored = op.payload.get("restored_at_epoch")
            if restored and self._restored_tag.get(run_id) != restored:
                # Where this run of the trial resumed from: a fact about the run, not a per-epoch series.
                self.client.set_tag(run_id, "restored_at_epoch", str(restored))
                self._restored_tag[run_id] = restored
            self._set_facts(run_id, op.payload.get("facts", {}))
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
            if op.payload.get("error"):
                self.client.set_tag(run_id, "error", _error_tag(op.payload["error"]))
            ended = {"error": RunStatus.FAILED, "interrupted": RunStatus.KILLED}.get(stopped, RunStatus.FINISHED)
            status = RunStatus.to_string(ended)
            self.client.set_terminated(run_id, status)

    def _set_facts(self, run_id: str, facts: Mapping[str, str]) -> None:
        """Set tags that hold for the whole run, each once (a change is written again)."""
        for key, value in facts.items():
            if self._fact_tags.setdefault(run_id, {}).get(key) != value:
                self.client.set_tag(run_id, key, value)
                self._fact_tags[run_id][key] = value

    def _ensure_child(self, trial_id: str, config: Mapping[str, Any] | None, optuna_number: str | None = None) -> str:
        run_id = self._run_ids.get(trial_id)
        if run_id is None:
            tags = {"role": ROLE_TRIAL, PARENT_TAG: self.parent_run_id, "trial_id": trial_id}
            found = find_runs(self.client, self._experiment_id, tags)
            if found:
                run_id = found[0].info.run_id
            else:
                # Named as Optuna names the trial where its number is known, else by its rank in this sweep.
                number = f"trial{optuna_number}" if optuna_number is not None else f"t{len(self._run_ids) + 1:02d}"
                run = self.client.create_run(
                    self._experiment_id,
                    run_name=f"{self.arch}/{number}-{trial_id}",
                    tags=standard_tags({**tags, "arch": self.arch, "sweep_id": self.sweep_id}),
                )
                run_id = run.info.run_id
            self._run_ids[trial_id] = run_id
        if run_id not in self._max_step:
            history = self.client.get_metric_history(run_id, "val_iou")
            self._max_step[run_id] = max((m.step for m in history), default=0)
        if config is not None:
            run = self.client.get_run(run_id)
            if not run.data.params:
                self._log_config(run_id, config)
            if run.info.status != "RUNNING":  # a retried or restored trial runs again
                self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "stopped_by", "running")
        return run_id

    def _log_config(self, run_id: str, config: Mapping[str, Any]) -> None:
        # The params go last: a run that has params has its config.json too, so a start that failed
        # half-way (run created, store gone) is completed by the retried op instead of left without.
        self.client.log_dict(run_id, _jsonable(config), CONFIG_ARTIFACT)
        params = [Param(k, _param_value(v)) for k, v in sorted(config.items())]
        if params:
            self.client.log_batch(run_id, params=params)

    def _save_pending(self) -> None:
        if not self.pending_path:
            return
        path = Path(self.pending_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            for op in self._pending:
                fh.write(json.dumps({"kind": op.kind, "trial_id": op.trial_id, **op.payload}, default=str) + "\n")


__all__ = ["TrialLogger"]
