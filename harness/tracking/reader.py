"""The read path: sweeps, trials, final runs and artifacts, read back from the tracking store.

Used by the final comparison and the benchmarks. A sweep is selected by ``sweep_id`` or, when none is
given, as the latest finished one (optionally of one benchmark); a trial's config comes back typed
from its ``config.json`` artifact when the run has one (runs logged before that artifact existed have
only their string params).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from mlflow.tracking import MlflowClient

from harness.errors import TrackingError
from harness.tracking.store import PARENT_TAG, ROLE_SWEEP, ROLE_TRIAL, client_for, find_runs, resolve_uri


def _client(uri: str) -> MlflowClient:
    return client_for(resolve_uri(uri))


def _sweep_parents(
    client: MlflowClient, uri: str, experiment: str, sweep_id: str | None, benchmark: str | None
) -> tuple[str, str, list]:
    """Return (experiment id, sweep id, the sweep's parent runs oldest first) of the selected sweep."""
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
    return exp.experiment_id, sweep_id, parents


def sweep_parent_runs(
    uri: str, experiment: str, sweep_id: str | None = None, *, benchmark: str | None = None
) -> tuple[str, dict[str, str]]:
    """Return ``(sweep_id, {arch: parent run id})`` of a sweep (the latest finished one when ``sweep_id`` is None).

    Without ``sweep_id`` the latest FINISHED sweep (of ``benchmark`` when given) is chosen; no trial is read.
    """
    _, sweep_id, parents = _sweep_parents(_client(uri), uri, experiment, sweep_id, benchmark)
    # Oldest first, so an architecture logged twice maps to its latest parent (the one TrialLogger reuses).
    return sweep_id, {p.data.tags["arch"]: p.info.run_id for p in parents}


def _load_dict_or_none(client: MlflowClient, uri: str, run_id: str, artifact_file: str) -> dict | None:
    """Return the JSON artifact of the run as a dict, or None when the run has no such file."""
    folder = str(PurePosixPath(artifact_file).parent)
    try:
        listed = client.list_artifacts(run_id, None if folder == "." else folder)
    except Exception as exc:
        raise TrackingError(f"tracking URI {uri}: cannot list the artifacts of run {run_id}: {exc}") from exc
    if not any(f.path == artifact_file and not f.is_dir for f in listed):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, artifact_file, tmp)
            obj = json.loads(Path(local).read_text())
        except Exception as exc:
            raise TrackingError(f"tracking URI {uri}: cannot read {artifact_file!r} of run {run_id}: {exc}") from exc
    if not isinstance(obj, dict):
        raise TrackingError(f"tracking URI {uri}: {artifact_file!r} of run {run_id} is not a JSON object")
    return obj


def load_dict(uri: str, run_id: str, artifact_file: str) -> dict:
    """Return a run's JSON artifact (e.g. a trial's ``config.json``) as a dict.

    Raises :class:`TrackingError` naming the run and the file when the run has no such artifact.
    """
    obj = _load_dict_or_none(_client(uri), uri, run_id, artifact_file)
    if obj is None:
        raise TrackingError(f"tracking URI {uri}: run {run_id} has no artifact {artifact_file!r}")
    return obj


def latest_sweep(uri: str) -> tuple[str, str, str]:
    """Return (experiment name, sweep id, a parent run id) of the most recently finished sweep in the store."""
    client = _client(uri)
    exps = {e.experiment_id: e.name for e in client.search_experiments()}
    runs = (
        client.search_runs(
            list(exps),
            filter_string=f"tags.role = '{ROLE_SWEEP}' and attributes.status = 'FINISHED'",
            order_by=["attributes.end_time DESC"],
            max_results=200,
        )
        if exps
        else []
    )
    # A sweep is finished when its driver recorded the result (n_trials is the last tag it sets, after
    # sweep_result.json and benchmark.yaml): a parent run an interrupted driver left FINISHED has neither.
    done = [run for run in runs if "n_trials" in run.data.tags]
    if not done:
        raise TrackingError(
            f"tracking URI {uri}: no finished sweep found (an interrupted one is finished with "
            "`cloudmask sweep --resume`); run `cloudmask sweep` first"
        )
    run = done[0]
    return exps[run.info.experiment_id], run.data.tags["sweep_id"], run.info.run_id


def download_artifacts(uri: str, run_id: str, path: str, dst: str | Path) -> str:
    """Download a run's artifact (file or folder) into ``dst``; returns the local path."""
    return _client(uri).download_artifacts(run_id, path, str(dst))


def trial_curves(uri: str, run_ids: Iterable[str], metric: str = "val_iou") -> dict[str, list[tuple[int, float]]]:
    """Each run's per-epoch history of ``metric`` as ``[(step, value), ...]`` sorted by step (step = epoch).

    A run that logged no such metric maps to an empty list; a step logged twice keeps its first value. The
    protocol audit and the replay read the sweep's trial curves through this.
    """
    client = _client(uri)
    out = {}
    for run_id in run_ids:
        try:
            history = client.get_metric_history(run_id, metric)
        except Exception as exc:
            raise TrackingError(f"tracking URI {uri}: cannot read {metric!r} of run {run_id}: {exc}") from exc
        first: dict[int, float] = {}
        for m in sorted(history, key=lambda m: (m.step, m.timestamp)):
            first.setdefault(int(m.step), float(m.value))  # a step logged twice keeps its first value
        out[run_id] = sorted(first.items())
    return out


def runs_view(uri: str, experiment: str, host: str = "http://127.0.0.1:5000") -> str:
    """How to open the experiment's runs table: the ``mlflow ui`` command (local stores) and the page's URL."""
    exp = _client(uri).get_experiment_by_name(experiment)
    # The runs table in "Model training" mode (MLflow 3 may otherwise open its GenAI overview).
    page = f"/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning" if exp is not None else ""
    if urlparse(uri).scheme in ("http", "https"):
        return f"open {uri.rstrip('/')}{page}"
    return f"mlflow ui --backend-store-uri {uri}  then open {host}{page}"


class TrialRunFinder:
    """Finds a sweep trial's child run by its tags, for a process that did not create it.

    The sweep's :class:`~harness.tracking.writer.TrialLogger` runs in Tune's copy of the MLflow callback;
    the searcher, which links each Optuna trial to its run, asks this instead. A found run id is cached;
    None while the run does not exist yet or the store cannot be read: a link is a convenience, never
    a reason to fail a trial.
    """

    def __init__(self, uri: str, experiment: str, *, sweep_id: str, arch: str) -> None:
        """Describe the sweep (one architecture of it); nothing is read before the first call."""
        self.uri, self.experiment, self.sweep_id, self.arch = uri, experiment, sweep_id, arch
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._parent_run_id: str | None = None
        self._run_ids: dict[str, str] = {}

    def __call__(self, trial_id: str) -> str | None:
        """Return the child run id of ``trial_id``, or None if there is none (yet)."""
        if trial_id not in self._run_ids:
            try:
                if self._parent_run_id is None:
                    self._client = self._client or _client(self.uri)
                    exp = self._client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        return None
                    self._experiment_id = exp.experiment_id
                    tags = {"role": ROLE_SWEEP, "sweep_id": self.sweep_id, "arch": self.arch}
                    parents = find_runs(self._client, self._experiment_id, tags)
                    if not parents:
                        return None
                    self._parent_run_id = parents[-1].info.run_id
                tags = {"role": ROLE_TRIAL, PARENT_TAG: self._parent_run_id, "trial_id": trial_id}
                runs = find_runs(self._client, self._experiment_id, tags)  # this trial only: asked per result
            except Exception:
                return None
            if runs:
                self._run_ids[trial_id] = runs[0].info.run_id
        return self._run_ids.get(trial_id)


__all__ = [
    "TrialRunFinder",
    "download_artifacts",
    "latest_sweep",
    "load_dict",
    "runs_view",
    "sweep_parent_runs",
    "trial_curves",
]
