"""harness.tracking.store: reaching the store, experiments, finding runs by tag, retries."""

import socket
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from harness.errors import TrackingError
from harness.tracking import check_tracking_uri, find_runs, get_or_create_experiment, resolve_uri, retry


def test_unreachable_tracking_uri_fails_fast():
    """An HTTP store nobody listens on fails within seconds, with the URI in the message."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(TrackingError, match=f"127.0.0.1:{port}"):
        check_tracking_uri(f"http://127.0.0.1:{port}", timeout=2)
    assert time.monotonic() - start < 10


def test_unwritable_sqlite_location_is_named(tmp_path):
    """A SQLite store whose folder cannot be created names that folder."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TrackingError, match="file"):
        check_tracking_uri(f"sqlite:///{blocker}/sub/mlflow.db")


def test_reader_does_not_create_a_missing_store(tmp_path):
    """With must_exist a missing SQLite store is an error, and is not created empty."""
    with pytest.raises(TrackingError, match="no such store"):
        check_tracking_uri(f"sqlite:///{tmp_path}/absent.db", must_exist=True)
    assert not (tmp_path / "absent.db").exists()


def test_relative_uris_are_made_absolute(tmp_path, monkeypatch):
    """Relative SQLite URIs and bare paths resolve against the working directory; others are kept."""
    monkeypatch.chdir(tmp_path)
    assert resolve_uri("sqlite:///runs/mlflow.db") == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    assert resolve_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert resolve_uri("mlruns") == (tmp_path.resolve() / "mlruns").as_uri()
    assert resolve_uri("http://host:5000") == "http://host:5000"


def test_retry_returns_after_failures_and_names_what_when_it_gives_up():
    """The first success is returned; after the last attempt a TrackingError names the write."""
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("down")
        return "ok"

    assert retry(flaky, what="flaky write", attempts=3, delay=0) == "ok"
    assert len(calls) == 3

    def down():
        raise OSError("still down")

    with pytest.raises(TrackingError, match="tag best_trial failed after 2 attempts: still down"):
        retry(down, what="tag best_trial", attempts=2, delay=0)


def test_experiment_keeps_artifacts_beside_sqlite_store_and_runs_are_found_by_all_tags(tmp_path):
    """A new experiment stores artifacts next to the database; find_runs matches every tag, oldest first."""
    uri = check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient(uri)
    exp_id = get_or_create_experiment(client, "exp", uri)
    assert get_or_create_experiment(client, "exp", uri) == exp_id
    location = client.get_experiment(exp_id).artifact_location
    assert Path(location.removeprefix("file://")) == tmp_path / "mlartifacts" / "exp"

    first = client.create_run(exp_id, tags={"role": "sweep", "arch": "unet"}).info.run_id
    time.sleep(0.01)  # distinct start times: find_runs orders by them
    second = client.create_run(exp_id, tags={"role": "sweep", "arch": "unet"}).info.run_id
    client.create_run(exp_id, tags={"role": "sweep", "arch": "fcn"})
    client.create_run(exp_id, tags={"role": "trial", "arch": "unet's"})
    found = find_runs(client, exp_id, {"role": "sweep", "arch": "unet"})
    assert [r.info.run_id for r in found] == [first, second]
    assert len(find_runs(client, exp_id, {"arch": "unet's"})) == 1  # a quote in a value is escaped


def test_checking_a_new_sqlite_store_creates_nothing(tmp_path):
    uri = check_tracking_uri(f"sqlite:///{tmp_path}/deep/er/mlflow.db")
    assert uri == f"sqlite:///{tmp_path}/deep/er/mlflow.db"
    assert not (tmp_path / "deep").exists(), "a run refused after the check must leave no empty store"


def test_an_unwritable_place_for_a_new_store_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrackingError, match="cannot create the store"):
        check_tracking_uri(f"sqlite:///{tmp_path}/file/mlflow.db")


def test_two_processes_creating_one_new_store_both_succeed(tmp_path):
    """Separate processes race to build a new SQLite store's schema and log an experiment."""
    import subprocess
    import sys

    code = (
        "import sys; from harness.tracking import client_for, get_or_create_experiment; "
        "uri = sys.argv[1]; print(get_or_create_experiment(client_for(uri), 'exp', uri))"
    )
    uri = f"sqlite:///{tmp_path}/race/mlflow.db"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-800:] for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1, "one experiment, found by every process"


def test_new_experiments_are_tagged_as_model_training(tmp_path):
    """MLflow 3's experiment kind: custom model development, not GenAI traces and evaluations."""
    from mlflow.tracking import MlflowClient

    from harness.tracking import check_tracking_uri, get_or_create_experiment

    uri = check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient(uri)
    exp_id = get_or_create_experiment(client, "exp", uri)
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
