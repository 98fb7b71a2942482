"""MLflow tracking for the harness: the only package that imports ``mlflow``.

- :mod:`~harness.tracking.store`: reaching the store (:func:`check_tracking_uri`), experiments, finding
  runs by tag, :func:`retry`, the role and tag names every run carries;
- :mod:`~harness.tracking.writer`: :class:`TrialLogger` (one parent run per sweep and architecture, one
  child run per trial with its params and a typed ``config.json``; queued, retried writes);
- :mod:`~harness.tracking.comparison`: :class:`ComparisonRecorder` (the ``final_compare`` run with a nested
  run per retrain: curves, test metrics, the retrained model);
- :mod:`~harness.tracking.system`: :func:`system_metrics` (a trial's machine, sampled into its run);
- :mod:`~harness.tracking.reader`: finding sweeps (:func:`sweep_parent_runs`, :func:`latest_sweep`), JSON
  artifacts such as ``sweep_result.json`` (:func:`load_dict`) and other artifacts, a trial's run
  (:class:`TrialRunFinder`).

Everything public is re-exported here, so callers import from ``harness.tracking``.
"""

# store sets MLflow's HTTP defaults (fail fast, no built-in retry loop) before mlflow is imported.
from harness.tracking.store import (
    CONFIG_ARTIFACT,
    DESCRIPTION_TAG,
    EPOCH_METRICS,
    OPTUNA_NUMBER_TAG,
    OPTUNA_STORAGE_TAG,
    OPTUNA_STUDY_TAG,
    PARENT_TAG,
    ROLE_FINAL,
    ROLE_SWEEP,
    ROLE_TRIAL,
    TrackingError,
    check_tracking_uri,
    client_for,
    ensure_store,
    find_runs,
    get_or_create_experiment,
    git_commit,
    resolve_uri,
    retry,
)

# isort: split
from harness.tracking.comparison import ROLE_RETRAIN, ComparisonRecorder
from harness.tracking.reader import (
    TrialRunFinder,
    download_artifacts,
    latest_sweep,
    load_dict,
    runs_view,
    sweep_parent_runs,
)
from harness.tracking.system import system_metrics
from harness.tracking.writer import TrialLogger

__all__ = [
    "CONFIG_ARTIFACT",
    "DESCRIPTION_TAG",
    "EPOCH_METRICS",
    "OPTUNA_NUMBER_TAG",
    "OPTUNA_STORAGE_TAG",
    "OPTUNA_STUDY_TAG",
    "PARENT_TAG",
    "ROLE_FINAL",
    "ROLE_RETRAIN",
    "ROLE_SWEEP",
    "ROLE_TRIAL",
    "ComparisonRecorder",
    "TrackingError",
    "TrialLogger",
    "TrialRunFinder",
    "check_tracking_uri",
    "client_for",
    "download_artifacts",
    "ensure_store",
    "find_runs",
    "get_or_create_experiment",
    "git_commit",
    "latest_sweep",
    "load_dict",
    "resolve_uri",
    "retry",
    "runs_view",
    "sweep_parent_runs",
    "system_metrics",
]
