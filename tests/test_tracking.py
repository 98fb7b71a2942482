"""MLflow tracking against real stores: a SQLite file, and a real `mlflow server` on 127.0.0.1."""

import pickle
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from harness.tracking import TrackingError, TrialLogger, check_tracking_uri, read_sweep


def _logger(uri, **kw):
    return TrialLogger(uri, "exp", sweep_id="s1", arch="unet", parent_tags={"benchmark": "t"}, **kw)


def _result(epoch, iou):
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.0, "val_accuracy": 0.9, "val_iou": iou}


def _children(client, parent_id):
    exp = client.get_experiment_by_name("exp")
    return client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def test_one_child_per_trial_survives_restore_and_rereports(tmp_path):
    uri = check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    tl = _logger(uri)
    parent = tl.start()
    tl.trial_started("t1", {"lr": 0.01, "depth": 2})
    for e in (1, 2):
        tl.trial_result("t1", _result(e, 0.1 * e))
    # The driver dies; a restored sweep (a pickled copy of the logger) continues the same trial from
    # an older checkpoint, re-reporting epoch 2.
    tl2 = pickle.loads(pickle.dumps(tl))
    assert tl2.start() == parent
    tl2.trial_started("t1", {"lr": 0.01, "depth": 2})
    for e in (2, 3):
        tl2.trial_result("t1", _result(e, 0.1 * e))
    tl2.trial_finished("t1", "completed")
    tl2.close()

    client = MlflowClient(uri)
    children = _children(client, parent)
    assert len(children) == 1
    run = children[0]
    assert run.data.tags["trial_id"] == "t1" and run.data.tags["stopped_by"] == "completed"
    assert run.data.params["lr"] == "0.01" and run.data.params["depth"] == "2"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_iou")]
    assert sorted(steps) == [1, 2, 3]
    sweep = read_sweep(uri, "exp")
    assert [t.trial_id for t in sweep[0].trials] == ["t1"] and sweep[0].trials[0].epochs == 3


def test_unreachable_tracking_uri_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(TrackingError, match=f"127.0.0.1:{port}"):
        check_tracking_uri(f"http://127.0.0.1:{port}", timeout=2)
    assert time.monotonic() - start < 10


def test_unwritable_sqlite_location_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TrackingError, match="file"):
        check_tracking_uri(f"sqlite:///{blocker}/sub/mlflow.db")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(tmp_path, port):
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/server.db",
        "--workers",
        "1",
        "--default-artifact-root",
        str(tmp_path / "art"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail("mlflow server did not start")


def _stop_server(proc):
    import os
    import signal

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_store_failing_mid_sweep_loses_nothing(tmp_path):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    try:
        tl = _logger(uri, final_flush_seconds=120)
        tl.start()
        tl.trial_started("t1", {"lr": 0.1})
        tl.trial_result("t1", _result(1, 0.5))
        assert tl.pending == 0
        _stop_server(server)
        for e in (2, 3):  # the store is down: queued, no exception reaches the sweep
            tl.trial_result("t1", _result(e, 0.5 + e / 10))
        tl.trial_finished("t1", "completed")
        assert tl.pending >= 1
        server = _start_server(tmp_path, port)
        tl.close()
        client = MlflowClient(uri)
        run = _children(client, tl.parent_run_id)[0]
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_iou")) == [1, 2, 3]
        assert run.data.tags["stopped_by"] == "completed"
    finally:
        _stop_server(server)


def test_reader_does_not_create_a_missing_store(tmp_path):
    with pytest.raises(TrackingError, match="no such store"):
        check_tracking_uri(f"sqlite:///{tmp_path}/absent.db", must_exist=True)
    assert not (tmp_path / "absent.db").exists()


def test_runs_of_trials_the_restored_sweep_lost_are_retired(tmp_path):
    uri = check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    tl = _logger(uri)
    parent = tl.start()
    for trial_id in ("kept", "lost"):
        tl.trial_started(trial_id, {"lr": 0.1})
        tl.trial_result(trial_id, _result(1, 0.5))
    assert tl.retire_unknown_trials(["kept"]) == ["lost"]
    tl.close()
    runs = _children(MlflowClient(uri), parent)
    assert [r.data.tags["trial_id"] for r in runs] == ["kept"]
