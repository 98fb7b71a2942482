"""harness.tracking.writer against real stores: a SQLite file, and a real `mlflow server` on 127.0.0.1."""

import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from harness.errors import TrackingError
from harness.tracking import PARENT_TAG, ROLE_TRIAL, TrialLogger, check_tracking_uri, load_dict


def _logger(uri, arch="unet", **kw):
    return TrialLogger(uri, "exp", sweep_id="s1", arch=arch, parent_tags={"benchmark": "t"}, **kw)


def _result(epoch, iou):
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.0, "val_accuracy": 0.9, "val_iou": iou}


def _children(client, parent_id):
    exp = client.get_experiment_by_name("exp")
    return client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def test_one_child_per_trial_survives_restore_and_rereports(tmp_path):
    """A restored logger reuses the parent and child runs and does not log a re-reported epoch twice."""
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
    assert tl2.run_id("t1") == run.info.run_id
    # Readable names: the architecture first, then the trial's rank and Ray's id; standard context tags.
    assert run.info.run_name == "unet/t01-t1" and "mlflow.user" in run.data.tags
    assert client.get_run(parent).info.run_name.startswith("unet/")


def test_child_config_json_round_trips_typed(tmp_path):
    """The child run's config.json gives back the config with its JSON types; params stay strings."""
    uri = check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    tl = _logger(uri)
    tl.start()
    config = {"lr": 1e-05, "augment": True, "dropout": False, "depth": 2, "loss": "dice", "warmup": None}
    tl.trial_started("t1", config)
    assert tl.run_id("t1") is not None and tl.run_id("absent") is None
    tl.trial_finished("t1", "completed")
    tl.close()

    got = load_dict(uri, tl.run_id("t1"), "config.json")
    assert got == config
    assert type(got["lr"]) is float and got["lr"] == 1e-05
    assert got["augment"] is True and got["dropout"] is False
    assert type(got["depth"]) is int and got["warmup"] is None
    params = MlflowClient(uri).get_run(tl.run_id("t1")).data.params
    assert params["lr"] == "1e-05" and params["augment"] == "True"


def test_trial_start_cut_short_after_creating_the_run_is_completed(tmp_path):
    """A child run created without its config (the store failed right after) gets params and config.json."""
    uri = check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    tl = _logger(uri)
    parent = tl.start()
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name("exp").experiment_id
    bare = client.create_run(exp_id, tags={"role": ROLE_TRIAL, PARENT_TAG: parent, "trial_id": "t1"}).info.run_id

    tl.trial_started("t1", {"lr": 0.5, "depth": 3})
    tl.close()
    assert tl.run_id("t1") == bare and len(_children(client, parent)) == 1
    assert client.get_run(bare).data.params == {"lr": "0.5", "depth": "3"}
    assert load_dict(uri, bare, "config.json") == {"lr": 0.5, "depth": 3}


def test_log_parent_metrics_logs_a_sortable_metric_and_skips_non_finite(tmp_path):
    """Parent metrics can order the sweeps' parent runs; NaN and inf are left out."""
    uri = check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    parents = {}
    for arch, best in (("unet", 0.61), ("fcn", 0.72), ("deeplab", 0.55)):
        tl = _logger(uri, arch=arch)
        parents[arch] = tl.start()
        tl.log_parent_metrics({"best_val_iou": best, "best_val_loss": math.nan, "best_seconds": math.inf})
        tl.close()

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("exp")
    ranked = client.search_runs(
        [exp.experiment_id], "tags.role = 'sweep'", order_by=["metrics.best_val_iou DESC"], max_results=10
    )
    assert [r.data.tags["arch"] for r in ranked] == ["fcn", "unet", "deeplab"]
    assert client.get_run(parents["fcn"]).data.metrics == {"best_val_iou": 0.72}


def test_log_parent_dict_stores_a_json_artifact_on_the_parent(tmp_path):
    """log_parent_dict writes a JSON artifact (in a sub-folder too) that load_dict reads back."""
    uri = check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    tl = _logger(uri)
    parent = tl.start()
    best = {"trial_id": "t3", "config": {"lr": 0.001, "augment": True}, "val_iou": 0.7}
    tl.log_parent_dict(best, "best/best_trial.json")
    tl.close()
    assert load_dict(uri, parent, "best/best_trial.json") == best


def test_parent_writes_before_start_raise_tracking_error(tmp_path):
    """Writing to the parent run before start() fails at once with a TrackingError, without retries."""
    tl = _logger(f"sqlite:///{tmp_path}/never.db")
    start = time.monotonic()
    with pytest.raises(TrackingError, match="no parent run"):
        tl.log_parent_metrics({"best_val_iou": 0.5})
    with pytest.raises(TrackingError, match="no parent run"):
        tl.log_parent_dict({"a": 1}, "a.json")
    assert time.monotonic() - start < 5


def test_runs_of_trials_the_restored_sweep_lost_are_retired(tmp_path):
    """Child runs of trials the restored sweep does not know are deleted."""
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
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_store_failing_mid_sweep_loses_nothing(tmp_path):
    """Writes made while the server is down are queued, and written by close() once it is back."""
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


def test_how_a_trial_ended_is_in_its_run_status_and_tags(tmp_path):
    """Interrupted: KILLED (a resume reopens it); a configuration that cannot run: FAILED with the message;
    where a retried trial resumed from is a tag, not a per-epoch metric."""
    uri = check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    tl = _logger(uri)
    parent = tl.start()
    for trial in ("paused", "broken", "resumed", "crashed"):
        tl.trial_started(trial, {"lr": 0.01})
    tl.trial_result("paused", _result(1, 0.1))
    tl.trial_interrupted("paused")
    tl.trial_finished("broken", "error", "ValueError: depth 6 needs patches divisible by 64")
    trace = (
        "Failure # 3 (occurred at ...)\n" + '  File "x.py", line 1, in f\n' * 400 + "RuntimeError: CUDA out of memory"
    )
    tl.trial_finished("crashed", "error", trace)
    tl.trial_result("resumed", {**_result(3, 0.3), "restored_at_epoch": 2, "device": "cuda:0", "precision": "fp16"})
    tl.trial_finished("resumed", "completed")
    tl.close("KILLED")
    client = MlflowClient(uri)
    runs = {r.data.tags["trial_id"]: r for r in _children(client, parent)}
    assert (runs["paused"].info.status, runs["paused"].data.tags["stopped_by"]) == ("KILLED", "interrupted")
    assert runs["broken"].info.status == "FAILED" and "divisible by 64" in runs["broken"].data.tags["error"]
    # A trace longer than a tag keeps both ends: which failure, and the exception that ended it.
    crashed = runs["crashed"].data.tags["error"]
    assert len(trace) > 5000 and len(crashed) == 5000
    assert crashed.startswith("Failure # 3") and crashed.endswith("RuntimeError: CUDA out of memory")
    assert runs["resumed"].data.tags["restored_at_epoch"] == "2"
    assert "restored_at_epoch" not in runs["resumed"].data.metrics
    tags = runs["resumed"].data.tags
    assert (tags["device"], tags["precision"]) == ("cuda:0", "fp16") and "precision" not in runs["paused"].data.tags
    assert client.get_run(parent).info.status == "KILLED"
