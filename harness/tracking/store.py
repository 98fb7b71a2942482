"""The tracking store itself: reaching it, naming experiments, finding runs by tag, retrying writes.

Everything here is shared by the write path (:mod:`harness.tracking.writer`) and the read path
(:mod:`harness.tracking.reader`). This module sets MLflow's HTTP defaults, so the package imports it
before anything else that imports ``mlflow``.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

# A dead server must not stall the Ray driver inside MLflow's own (minutes-long) retry loop: fail fast
# and let TrialLogger's queue retry with back-off. Set before mlflow reads them.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
# read_sweep downloads one small config.json per trial: a progress bar for each would bury the log.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow.tracking import MlflowClient

from harness.errors import TrackingError
from harness.retry import with_retries

T = TypeVar("T")

ROLE_SWEEP = "sweep"
ROLE_TRIAL = "trial"
ROLE_FINAL = "final_compare"
PARENT_TAG = "mlflow.parentRunId"
#: The artifact of a trial's child run holding its config as JSON (params hold it as strings).
CONFIG_ARTIFACT = "config.json"
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
)
#: Per-epoch result keys recorded as tags of the run: the device "auto" resolved to, the precision trained in.
RUN_FACTS = ("device", "precision")
#: Tags naming a trial's Optuna study and its number in it (what optuna-dashboard calls "Trial <n>").
OPTUNA_STUDY_TAG, OPTUNA_NUMBER_TAG = "optuna_study", "optuna_trial_number"
#: Where the Optuna studies of a sweep live (a parent run's tag), and MLflow's run description tag.
OPTUNA_STORAGE_TAG, DESCRIPTION_TAG = "optuna_storage", "mlflow.note.content"


def resolve_uri(uri: str) -> str:
    """Make a relative ``sqlite:///path`` or a bare path absolute.

    Ray workers and the MLflow UI may run from another working directory.
    """
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
        if not db.exists():
            # Nothing is created before the first run is written (ensure_store): a sweep refused
            # later (bad data, no Ray) leaves no empty store behind. Can it be created there?
            folder = next(p for p in (db.parent, *db.parent.parents) if p.exists())
            if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
                raise TrackingError(f"tracking URI {uri}: cannot create the store under {folder}")
            return uri
    try:
        client_for(uri).search_experiments(max_results=1)
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(f"tracking URI {uri} cannot be used: {type(exc).__name__}: {exc}") from None
    return uri


_ENSURED: set[str] = set()


def ensure_store(uri: str) -> None:
    """Create a local SQLite store if it is not there yet, once, whatever the number of processes.

    MLflow builds (or upgrades) a SQLite schema in several steps whenever a client is made for it; two
    processes doing it at once fail (``CircularDependencyError``, alembic errors). An exclusive lock on
    the store's folder makes the first build it and the others find it built.
    """
    if not uri.startswith("sqlite:///") or uri in _ENSURED:
        return
    db = Path(uri[len("sqlite:///") :])
    # No shortcut on "the file exists": it exists as soon as another process starts building it.
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"tracking URI {uri}: cannot create {db.parent}: {exc}") from None
    folder = os.open(db.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        MlflowClient(uri).search_experiments(max_results=1)  # builds the schema when absent
        _ENSURED.add(uri)
    finally:
        fcntl.flock(folder, fcntl.LOCK_UN)
        os.close(folder)


def client_for(uri: str) -> MlflowClient:
    """An MLflow client for ``uri``; a local SQLite store is built first, under a lock (:func:`ensure_store`)."""
    ensure_store(uri)
    return MlflowClient(uri)


#: MLflow 3's kind for an experiment that trains models (not GenAI traces and evaluations). The 3.17 UI
#: still picks its mode from the URL (``?workflowType=machine_learning``, see ``runs_view``) or the browser.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def get_or_create_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """Return the experiment's id, creating it (and a local store) if needed.

    A new experiment keeps its artifacts beside a local SQLite store, so the store and its artifacts
    move together.
    """
    ensure_store(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
    except Exception:
        exp = client.get_experiment_by_name(name)  # another process created it first
        if exp is None:
            raise
        return exp.experiment_id


def _quote(value: str) -> str:
    # MLflow's filter parser has no escape inside a string literal: pick the quote the value lacks.
    value = str(value)
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise TrackingError(f"cannot search MLflow for a tag value holding both kinds of quote: {value!r}")


def find_runs(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> list:
    """Return the runs of the experiment whose tags equal ``tags`` (all of them), oldest first."""
    filt = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=filt, max_results=5000)
    return sorted(runs, key=lambda r: r.info.start_time or 0)


def git_commit(cwd: str | Path | None = None) -> str:
    """Return the current git commit of the harness checkout, or ``unknown``."""
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


def retry(fn: Callable[[], T], *, what: str, attempts: int = 6, delay: float = 0.5) -> T:
    """Call ``fn`` until it succeeds, sleeping ``delay * 2**i`` between tries.

    Raises :class:`TrackingError` naming ``what`` after ``attempts`` failures; with the defaults a
    store has about 15 s to come back.
    """
    return with_retries(
        fn,
        attempts=attempts,
        delay=delay,
        give_up=lambda exc: TrackingError(f"MLflow: {what} failed after {attempts} attempts: {exc}"),
    )


__all__ = [
    "CONFIG_ARTIFACT",
    "EPOCH_METRICS",
    "PARENT_TAG",
    "ROLE_FINAL",
    "ROLE_SWEEP",
    "ROLE_TRIAL",
    "TrackingError",
    "check_tracking_uri",
    "find_runs",
    "get_or_create_experiment",
    "git_commit",
    "resolve_uri",
    "retry",
]


def standard_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """``tags`` plus MLflow's standard context tags (``mlflow.user``, ``mlflow.source.*``, git commit).

    The low-level client does not add them by itself; the fluent API does through the same registry.
    """
    from mlflow.tracking.context.registry import resolve_tags

    return {k: str(v) for k, v in resolve_tags(dict(tags)).items()}
