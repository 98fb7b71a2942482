"""harness.sweep.searcher: Ray's Searcher interface on Optuna ask/tell, against a real SQLite Optuna storage."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.trial import TrialState

from harness.config.search_spaces import load_search_space
from harness.sweep import searcher as searcher_module
from harness.sweep.sampling import to_optuna
from harness.sweep.searcher import RAY_TRIAL_ID, TRIAL_LINKS, OptunaStudySearcher, RestoredTrial
from harness.sweep.storage import StudyFile, SweepStorage

SPACE = to_optuna(
    load_search_space(
        {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}, "depth": {"type": "int", "low": 1, "high": 3}}
    )
)


def make(storage: str, name: str = "s") -> OptunaStudySearcher:
    return OptunaStudySearcher(SPACE, study_name=name, storage=storage, metric="val_iou", mode="max", budget=8)


def epoch(e: int, iou: float, status: str = "running") -> dict:
    return {"training_iteration": e, "epoch": e, "val_iou": iou, "status": status}


def study(storage: str, name: str = "s") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture
def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_suggest_asks_the_study_and_keeps_the_ray_trial_id(storage):
    s = make(storage)
    config = s.suggest("ray-a")
    assert set(config) == {"lr", "depth"} and isinstance(config["depth"], int)
    (trial,) = study(storage).trials
    assert trial.state == TrialState.RUNNING and trial.user_attrs[RAY_TRIAL_ID] == "ray-a"
    assert trial.params == config
    assert study(storage).metric_names == ["val_iou"]


def test_completed_trial_is_told_complete_with_its_per_epoch_values(storage):
    s = make(storage)
    s.suggest("a")
    for e in (1, 2):
        s.on_trial_result("a", epoch(e, 0.1 * e))
    s.on_trial_result("a", epoch(3, 0.3, "completed"))
    s.on_trial_complete("a", epoch(3, 0.3, "completed"))
    (trial,) = study(storage).trials
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(0.3)
    assert trial.intermediate_values == pytest.approx({1: 0.1, 2: 0.2, 3: 0.3})


def test_asha_stopped_trial_is_pruned_with_the_value_at_the_stopping_epoch(storage):
    """Tune passes the result ASHA stops on only to on_trial_complete: it must still reach Optuna."""
    s = make(storage)
    s.suggest("a")
    s.on_trial_result("a", epoch(1, 0.4))
    s.on_trial_complete("a", epoch(2, 0.5))
    (trial,) = study(storage).trials
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == pytest.approx({1: 0.4, 2: 0.5})
    assert trial.value == pytest.approx(0.5)  # Optuna ranks a pruned trial by its last value


def test_diverged_and_errored_trials_fail(storage):
    s = make(storage)
    s.suggest("div")
    s.suggest("err")
    s.on_trial_complete("div", epoch(2, float("nan"), "diverged"))
    s.on_trial_complete("err", None, error=True)
    assert [t.state for t in study(storage).trials] == [TrialState.FAIL, TrialState.FAIL]
    assert study(storage).trials[0].intermediate_values == {}  # a NaN is never reported


def test_results_of_a_trial_the_study_shows_finished_are_ignored(storage):
    """The failure a restored driver used to hit: UpdateFinishedTrialError from on_trial_result."""
    s = make(storage)
    s.suggest("a")
    s.on_trial_complete("a", epoch(2, 0.5, "completed"))
    s.on_trial_result("a", epoch(3, 0.6))  # a replayed epoch after a restore: no error
    s.on_trial_complete("a", epoch(3, 0.6, "completed"))  # told once only
    (trial,) = study(storage).trials
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(0.5)


def test_restore_fails_the_trials_asked_after_the_saved_state(storage, tmp_path):
    """A trial suggested after the last saved searcher state is lost with the driver: FAIL, not RUNNING."""
    first = make(storage)
    first.suggest("a")
    first.on_trial_result("a", epoch(1, 0.2))
    first.save(str(tmp_path / "searcher.json"))
    first.suggest("lost")
    # The restored driver unpickles the searcher Tune stored at the start, then restores its state.
    restored = pickle.loads(pickle.dumps(make(storage)))
    restored.restore(str(tmp_path / "searcher.json"))
    states = {t.user_attrs[RAY_TRIAL_ID]: t.state for t in study(storage).trials}
    assert states == {"a": TrialState.RUNNING, "lost": TrialState.FAIL}
    restored.on_trial_result("a", epoch(1, 0.9))  # replayed epoch: the first value stays
    restored.on_trial_result("a", epoch(2, 0.3))
    restored.on_trial_complete("a", epoch(3, 0.4, "completed"))
    trial = study(storage).trials[0]
    assert trial.state == TrialState.COMPLETE and trial.intermediate_values == pytest.approx({1: 0.2, 2: 0.3, 3: 0.4})
    assert restored.suggest("c") and len(study(storage).trials) == 3


def test_restore_adds_trials_the_experiment_knows_and_the_study_lacks(storage, tmp_path, monkeypatch):
    """Tune uploads its experiment state after the study; a SIGKILL can leave the experiment the newer one.

    The restored experiment knows trial "late" (asked after the study was last pushed) and shows "a" finished
    while the study still shows it RUNNING: the study gets "late" with its config, and "a" is told PRUNED.
    """
    first = make(storage)
    first.suggest("a")
    first.on_trial_result("a", epoch(1, 0.2))
    first.save(str(tmp_path / "searcher.json"))
    restored_experiment = {
        "a": RestoredTrial({"lr": 1e-3, "depth": 2, "epochs": 3}, "TERMINATED", epoch(2, 0.25)),
        "late": RestoredTrial({"lr": 5e-3, "depth": 3, "epochs": 3}, "PENDING", {}),
    }
    monkeypatch.setattr(searcher_module, "restored_trials", lambda _dir: restored_experiment)
    restored = pickle.loads(pickle.dumps(make(storage)))
    restored.restore(str(tmp_path / "searcher.json"))
    trials = {t.user_attrs[RAY_TRIAL_ID]: t for t in study(storage).trials}
    assert trials["a"].state == TrialState.PRUNED and trials["a"].intermediate_values == {1: 0.2, 2: 0.25}
    assert trials["late"].state == TrialState.RUNNING and trials["late"].params == {"lr": 5e-3, "depth": 3}
    restored.on_trial_result("late", epoch(1, 0.5))
    restored.on_trial_complete("late", epoch(2, 0.6, "completed"))
    late = study(storage).trials[trials["late"].number]
    assert late.state == TrialState.COMPLETE and late.value == pytest.approx(0.6)
    # Both count towards the budget of 8: six more, then FINISHED.
    assert all(restored.suggest(f"n{i}") for i in range(6)) and restored.suggest("x") == OptunaStudySearcher.FINISHED


def test_a_fresh_experiment_fails_running_trials_left_in_its_study(storage):
    """A study that outlived its Tune experiment (killed before Tune saved anything): nothing stays RUNNING."""
    make(storage).suggest("orphan")
    again = make(storage)
    again.suggest("new")
    states = {t.user_attrs[RAY_TRIAL_ID]: t.state for t in study(storage).trials}
    assert states == {"orphan": TrialState.FAIL, "new": TrialState.RUNNING}


def test_pickle_carries_which_study_not_the_study(storage):
    s = make(storage)
    s.suggest("a")
    blob = pickle.dumps(s)
    assert b"sqlalchemy" not in blob.lower() and len(blob) < 4000
    assert pickle.loads(blob).study.trials[0].user_attrs[RAY_TRIAL_ID] == "a"


def test_study_file_round_trips_through_a_storage(tmp_path):
    storage = SweepStorage.parse(str(tmp_path / "store"))
    first = StudyFile(storage.child("optuna.db"))
    url = first.pull()  # nothing stored yet: an empty local copy
    optuna.create_study(study_name="x", storage=url).ask()
    first.push()
    second = StudyFile(storage.child("optuna.db"))
    assert second.local != first.local
    assert len(study(second.pull(), "x").trials) == 1


def test_the_budget_counts_the_trials_of_this_experiment(storage, tmp_path):
    """FINISHED after `budget` trials; a restored searcher counts the trials the experiment holds."""
    s = OptunaStudySearcher(SPACE, study_name="b", storage=storage, metric="val_iou", mode="max", budget=2)
    assert s.suggest("a") and s.suggest("b")
    assert s.suggest("c") == OptunaStudySearcher.FINISHED
    s.save(str(tmp_path / "state.json"))
    restored = pickle.loads(pickle.dumps(s))
    restored.restore(str(tmp_path / "state.json"))  # no experiment state beside it: its saved ids
    assert restored.suggest("d") == OptunaStudySearcher.FINISHED
    # A fresh experiment on a study left by an earlier attempt has its own whole budget.
    again = OptunaStudySearcher(SPACE, study_name="b", storage=storage, metric="val_iou", mode="max", budget=2)
    assert again.suggest("e") and again.suggest("f") and again.suggest("g") == OptunaStudySearcher.FINISHED


def test_the_sweep_driver_links_each_optuna_trial_to_its_mlflow_run(storage, monkeypatch):
    """Set while the trial runs (a finished Optuna trial cannot change), once the run exists."""
    runs = {}
    monkeypatch.setitem(TRIAL_LINKS, "s", lambda ray_id: {"mlflow_run_id": runs[ray_id]} if ray_id in runs else {})
    s = make(storage)
    s.suggest("a")
    s.on_trial_result("a", epoch(1, 0.2))  # the run is not created yet: no link, no error
    runs["a"] = "0123abcd"
    s.on_trial_complete("a", epoch(2, 0.3, "completed"))
    (trial,) = study(storage).trials
    assert trial.user_attrs == {RAY_TRIAL_ID: "a", "mlflow_run_id": "0123abcd"}
    assert trial.intermediate_values == {1: 0.2, 2: 0.3}  # the last epoch too


def test_a_device_hours_budget_stops_new_trials_and_survives_a_restore(storage, tmp_path):
    """search.device_hours: 1 GPU-hour with 0.5 GPU per trial = 2 trial-hours; trials count as far as they got."""
    s = OptunaStudySearcher(
        SPACE,
        study_name="d",
        storage=storage,
        metric="val_iou",
        mode="max",
        budget=8,
        device_hours=1.0,
        device_units=0.5,
    )
    assert s.suggest("a") and s.suggest("b")
    s.on_trial_result("a", {**epoch(1, 0.2), "time_total_s": 3000.0})
    s.on_trial_complete("b", {**epoch(2, 0.3, "completed"), "time_total_s": 3600.0})
    assert s.spent_device_hours() == pytest.approx((3000 + 3600) * 0.5 / 3600)
    assert s.suggest("c")  # 0.92 device-hours used: one more may start
    s.on_trial_result("a", {**epoch(2, 0.25), "time_total_s": 3600.0})
    assert s.spent_device_hours() == pytest.approx(1.0)
    assert s.suggest("d") == OptunaStudySearcher.FINISHED
    s.save(str(tmp_path / "state.json"))
    restored = pickle.loads(pickle.dumps(s))
    restored.restore(str(tmp_path / "state.json"))
    assert restored.spent_device_hours() == pytest.approx(1.0)
    assert restored.suggest("e") == OptunaStudySearcher.FINISHED


@pytest.mark.parametrize(
    ("metric", "mode", "message"),
    [
        (["val_iou", "val_loss"], ["max", "min"], "metric must be one name"),  # Ray's OptunaSearch would take it
        ("val_iou", ["max"], "mode must be one name"),
        ("val_iou", "maximise", "mode must be 'max' or 'min'"),
    ],
)
def test_a_multi_objective_or_unknown_mode_is_refused_at_once(storage, metric, mode, message):
    with pytest.raises(ValueError, match=message):  # was: a single-objective study, then a TypeError mid-sweep
        OptunaStudySearcher(SPACE, study_name="multi", storage=storage, metric=metric, mode=mode, budget=4)
