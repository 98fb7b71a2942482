"""The sweep's trial table, on Ray Tune's own Trial objects."""

from __future__ import annotations

import pytest
from ray.tune.experiment import Trial

from harness import console
from harness.sweep.progress import TrialTable, tune_verbosity


@pytest.fixture(autouse=True)
def normal_afterwards():
    yield
    console.set_verbosity(console.NORMAL)


def trial(trial_id, status, epoch=None, val_iou=None, ended=None):
    t = Trial(
        "train_trial", config={"arch": "unet", "lr": 1.5e-3, "depth": 2, "epochs": 8}, trial_id=trial_id, stub=True
    )
    t.set_status(status)
    if epoch is not None:
        t.update_last_result({"training_iteration": epoch, "val_iou": val_iou, "status": ended or "running"})
    return t


def trials():
    return [
        trial("aaaa0001", Trial.TERMINATED, 8, 0.71, "completed"),
        trial("aaaa0002", Trial.TERMINATED, 4, 0.52, "running"),  # ASHA stopped it at its rung
        trial("aaaa0003", Trial.RUNNING, 3, 0.90),  # higher, but not a trial the sweep can choose yet
        trial("aaaa0004", Trial.PENDING),
    ]


def test_the_table_has_one_row_per_trial_with_only_the_searched_values(capsys):
    reporter = TrialTable("unet", 8, ["lr", "depth"], metric="val_iou", max_epochs=8)
    assert reporter.should_report(trials(), done=True)
    reporter.report(trials(), True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "unet: 4 of 8 trials: 1 completed, 1 pending, 1 running, 1 stopped (ASHA) · best completed: aaaa0001 "
        "val_iou 0.7100"
    )
    assert lines[1].split() == ["trial", "state", "lr", "depth", "epoch", "val_iou"]
    assert lines[2].split() == ["aaaa0001", "completed", "1.50e-03", "2", "8/8", "0.7100"]
    assert lines[3].split() == ["aaaa0002", "stopped", "(ASHA)", "1.50e-03", "2", "4/8", "0.5200"]
    assert lines[5].split() == ["aaaa0004", "pending", "1.50e-03", "2", "-", "-"]
    assert len(lines) == 6 and "arch" not in lines[1] and "epochs" not in lines[1]  # constants left out


def test_while_running_a_normal_console_prints_one_line_when_it_changed(capsys):
    reporter = TrialTable("unet", 8, ["lr"], metric="val_iou", max_epochs=8, interval_s=0)
    reporter.report(trials(), False)
    reporter.report(trials(), False)  # nothing changed: nothing printed
    assert len(capsys.readouterr().out.splitlines()) == 1
    console.set_verbosity(console.VERBOSE)
    reporter.report(trials(), False)
    assert len(capsys.readouterr().out.splitlines()) == 5  # verbose: the table at every report


def test_reports_come_at_most_every_interval_and_never_when_quiet():
    reporter = TrialTable("unet", 8, ["lr"], metric="val_iou", max_epochs=8, interval_s=3600)
    assert reporter.should_report(trials())  # the first one
    assert not reporter.should_report(trials())
    assert reporter.should_report(trials(), done=True)
    console.set_verbosity(console.QUIET)
    assert not reporter.should_report(trials(), done=True)
    assert tune_verbosity() == 0


def test_tunes_total_is_ignored_for_the_searchers_budget(capsys):
    reporter = TrialTable("unetpp", 5, ["lr"], metric="val_iou", max_epochs=8)
    reporter.setup(total_samples=2**63 - 1)  # what Tune passes for num_samples=-1
    reporter.report(trials()[:1], False)
    assert capsys.readouterr().out.startswith("unetpp: 1 of 5 trials: 1 completed")
