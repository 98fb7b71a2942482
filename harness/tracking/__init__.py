"""MLflow tracking for the harness: the only package that imports ``mlflow``.

- :mod:`~harness.tracking.store`: reaching the store (:func:`check_tracking_uri`), experiments, finding
  runs by tag, :func:`retry`, the role and tag names every run carries;
- :mod:`~harness.tracking.writer`: :class:`TrialLogger` (one parent run per sweep and architecture, one
  child run per trial with its params and a typed ``config.json``; queued, retried writes) and
  :func:`log_run` for standalone runs such as the final comparison;
- :mod:`~harness.tracking.reader`: reading sweeps back (:func:`read_sweep`, :func:`sweep_parent_runs`,
  :func:`latest_sweep`), finished final runs, JSON artifacts (:func:`load_dict`) and other artifacts.

Everything public is re-exported here, so callers import from ``harness.tracking``.
"""

# store sets MLflow's HTTP defaults (fail fast, no built-in retry loop) before mlflow is imported.
from harness.tracking.store import (
    CONFIG_ARTIFACT,
    EPOCH_METRICS,
    PARENT_TAG,
    ROLE_FINAL,
    ROLE_SWEEP,
    ROLE_TRIAL,
    TrackingError,
    check_tracking_uri,
    find_runs,
    get_or_create_experiment,
    git_commit,
    resolve_uri,
    retry,
)

# isort: split
from harness.tracking.reader import (
    SweepRecord,
    TrialRecord,
    download_artifacts,
    find_final_runs,
    latest_sweep,
    load_dict,
    read_sweep,
    sweep_parent_runs,
)
from harness.tracking.writer import TrialLogger, log_run

__all__ = [
    "CONFIG_ARTIFACT",
    "EPOCH_METRICS",
    "PARENT_TAG",
    "ROLE_FINAL",
    "ROLE_SWEEP",
    "ROLE_TRIAL",
    "SweepRecord",
    "TrackingError",
    "TrialLogger",
    "TrialRecord",
    "check_tracking_uri",
    "download_artifacts",
    "find_final_runs",
    "find_runs",
    "get_or_create_experiment",
    "git_commit",
    "latest_sweep",
    "load_dict",
    "log_run",
    "read_sweep",
    "resolve_uri",
    "retry",
    "sweep_parent_runs",
]
