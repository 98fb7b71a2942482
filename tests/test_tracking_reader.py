"""harness.tracking.reader against a real SQLite store: selecting sweeps, trials, JSON artifacts."""

import math
import time

import pytest
from mlflow.tracking import MlflowClient

from harness.tracking import (
    PARENT_TAG,
    ROLE_TRIAL,
    TrackingError,
    TrialLogger,
    check_tracking_uri,
    find_final_runs,
    latest_sweep,
    load_dict,
    log_run,
    read_sweep,
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
    with pytest.raises(TrackingError, match="no finished sweep of benchmark 'b'"):
        read_sweep(uri, "exp", benchmark="b")
    with pytest.raises(TrackingError, match="no sweep with sweep_id 's1'"):
        read_sweep(uri, "exp", "s1", benchmark="b")


def test_read_sweep_returns_trials_with_typed_config_or_none(uri):
    """Trials come back with their metrics and typed config; a run without config.json has config None."""
    parents = _sweep(uri, "s1", "a", finish=False)
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name("exp").experiment_id
    # A child run logged before config.json existed: params only.
    legacy = client.create_run(
        exp_id, tags={"role": ROLE_TRIAL, PARENT_TAG: parents["unet"], "trial_id": "old", "stopped_by": "asha"}
    ).info.run_id
    client.log_param(legacy, "lr", "0.1")

    (record,) = read_sweep(uri, "exp", "s1")
    assert record.sweep_id == "s1" and record.arch == "unet" and record.parent_run_id == parents["unet"]
    assert record.tags["benchmark"] == "a"
    trials = {t.trial_id: t for t in record.trials}
    new = trials["s1-unet-t1"]
    assert new.config == {"lr": 1e-05, "augment": True} and type(new.config["lr"]) is float
    assert new.params == {"lr": "1e-05", "augment": "True"}
    assert (new.epochs, new.val_iou, new.seconds, new.stopped_by) == (1, 0.5, 2.0, "completed")
    old = trials["old"]
    assert old.config is None and old.params == {"lr": "0.1"}
    assert old.epochs == 0 and math.isnan(old.val_iou) and old.stopped_by == "asha"


def test_load_dict_on_a_missing_artifact_names_the_run_and_file(uri):
    """load_dict raises TrackingError naming the run and the absent file."""
    parents = _sweep(uri, "s1", "a")
    run_id = parents["unet"]
    with pytest.raises(TrackingError, match=rf"run {run_id} has no artifact 'best/best_trial\.json'"):
        load_dict(uri, run_id, "best/best_trial.json")
    with pytest.raises(TrackingError, match="config.json"):
        load_dict(uri, run_id, "config.json")  # the parent run has none; its trials do


def test_latest_sweep_and_final_runs(uri, tmp_path):
    """latest_sweep finds the last finished sweep; find_final_runs lists finished runs with given tags."""
    _sweep(uri, "s1", "a")
    s2 = _sweep(uri, "s2", "a")
    _sweep(uri, "s3", "a", finish=False)
    assert latest_sweep(uri) == ("exp", "s2", s2["unet"])

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("# report\n")
    tags = {"role": "final_retrain", "sweep_id": "s2", "arch": "unet"}
    rid = log_run(
        uri,
        "exp",
        run_name="s2/unet/retrain",
        tags=tags,
        params={"epochs": 3},
        metrics={"test_iou": 0.6, "broken": math.nan},
        artifacts_dir=tmp_path / "out",
    )
    assert [r.info.run_id for r in find_final_runs(uri, "exp", tags)] == [rid]
    assert find_final_runs(uri, "exp", {**tags, "arch": "fcn"}) == []
    assert find_final_runs(uri, "absent", tags) == []
    run = MlflowClient(uri).get_run(rid)
    assert run.data.metrics == {"test_iou": 0.6} and run.data.params == {"epochs": "3"}
