"""harness.tracking.reader against a real SQLite store: selecting sweeps, trials, JSON artifacts."""

import time

import pytest
from mlflow.tracking import MlflowClient

from harness.errors import TrackingError
from harness.tracking import (
    TrialLogger,
    TrialRunFinder,
    check_tracking_uri,
    latest_sweep,
    load_dict,
    runs_view,
    sweep_parent_runs,
)


def _sweep(uri, sweep_id, benchmark, archs=("unet",), *, finish=True):
    """Log a one-trial sweep per architecture; returns {arch: parent run id}."""
    time.sleep(0.01)  # distinct start times: the latest sweep is chosen by them
    parents = {}
    for arch in archs:
        tl = TrialLogger(uri, "exp", sweep_id=sweep_id, arch=arch, parent_tags={"benchmark": benchmark})
        parents[arch] = tl.start()
        tl.trial_started(f"{sweep_id}-{arch}-t1", {"lr": 1e-05, "augment": True})
        tl.trial_result(f"{sweep_id}-{arch}-t1", {"epoch": 1, "val_iou": 0.5, "epoch_seconds": 2.0})
        tl.trial_finished(f"{sweep_id}-{arch}-t1", "completed")
        if finish:  # else a sweep still running (or killed): its parent run stays RUNNING
            tl.set_parent_tags({"n_trials": "1", "n_completed": "1"})  # the driver's last record of a result
            tl.close()
    return parents


@pytest.fixture
def uri(tmp_path):
    """Return a fresh SQLite tracking store."""
    return check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")


def test_sweep_parent_runs_picks_the_latest_finished_sweep_and_honours_benchmark(uri):
    """Without sweep_id the latest FINISHED sweep is chosen, among those of ``benchmark`` when given."""
    s1 = _sweep(uri, "s1", "a", ("unet", "fcn"))
    s2 = _sweep(uri, "s2", "b")
    s3 = _sweep(uri, "s3", "a", finish=False)

    assert sweep_parent_runs(uri, "exp") == ("s2", s2)
    assert sweep_parent_runs(uri, "exp", benchmark="a") == ("s1", s1)
    assert sweep_parent_runs(uri, "exp", benchmark="b") == ("s2", s2)
    assert sweep_parent_runs(uri, "exp", "s3") == ("s3", s3)  # named explicitly: finished or not


def test_sweep_selection_errors_name_what_is_missing(uri):
    """A missing experiment, sweep id or finished sweep of a benchmark is a TrackingError saying so."""
    _sweep(uri, "s1", "a")
    _sweep(uri, "s2", "b", finish=False)
    with pytest.raises(TrackingError, match="no experiment named 'other'"):
        sweep_parent_runs(uri, "other")
    with pytest.raises(TrackingError, match="no sweep with sweep_id 'nope'"):
        sweep_parent_runs(uri, "exp", "nope")
    with pytest.raises(TrackingError, match="no finished sweep of benchmark 'b'"):
        sweep_parent_runs(uri, "exp", benchmark="b")
    with pytest.raises(TrackingError, match="no sweep with sweep_id 's1'"):
        sweep_parent_runs(uri, "exp", "s1", benchmark="b")


def test_load_dict_on_a_missing_artifact_names_the_run_and_file(uri):
    """load_dict raises TrackingError naming the run and the absent file."""
    parents = _sweep(uri, "s1", "a")
    run_id = parents["unet"]
    with pytest.raises(TrackingError, match=rf"run {run_id} has no artifact 'best/best_trial\.json'"):
        load_dict(uri, run_id, "best/best_trial.json")
    with pytest.raises(TrackingError, match="config.json"):
        load_dict(uri, run_id, "config.json")  # the parent run has none; its trials do


def test_latest_sweep_is_the_last_finished_one(uri):
    """latest_sweep finds the last finished sweep, whatever the experiment."""
    _sweep(uri, "s1", "a")
    s2 = _sweep(uri, "s2", "a")
    _sweep(uri, "s3", "a", finish=False)
    # A parent run closed FINISHED without its result recorded (an old driver interrupted early): not a sweep.
    early = TrialLogger(uri, "exp", sweep_id="s4", arch="unet", parent_tags={"benchmark": "a"})
    early.start()
    early.close()
    assert latest_sweep(uri) == ("exp", "s2", s2["unet"])


def test_runs_view_names_the_command_and_the_experiment_page(uri):
    _sweep(uri, "s1", "a")
    exp_id = MlflowClient(uri).get_experiment_by_name("exp").experiment_id
    assert (
        runs_view(uri, "exp")
        == f"mlflow ui --backend-store-uri {uri}  then open http://127.0.0.1:5000/#/experiments/{exp_id}/runs"
        "?workflowType=machine_learning"
    )


def test_trial_run_finder_finds_a_trial_run_another_logger_created(uri):
    """The searcher's link: a run created by the sweep's logger is found by its tags; absent ones give None."""
    find = TrialRunFinder(uri, "exp", sweep_id="s1", arch="unet")
    assert find("s1-unet-t1") is None  # no experiment yet: no error, no link
    parents = _sweep(uri, "s1", "bench", archs=("unet", "unetpp"))
    client = MlflowClient(uri)
    run_id = find("s1-unet-t1")
    run = client.get_run(run_id)
    assert run.data.tags["trial_id"] == "s1-unet-t1"
    assert run.data.tags["mlflow.parentRunId"] == parents["unet"]
    assert find("s1-unetpp-t1") is None  # another architecture's trial is not this sweep part's
    assert TrialRunFinder(uri, "exp", sweep_id="other", arch="unet")("s1-unet-t1") is None
    assert TrialRunFinder(f"sqlite:///{uri[10:]}-missing-dir/x.db", "exp", sweep_id="s1", arch="unet")("t") is None
