"""The sweep's closing summary: how each architecture's trials ended, its best trial, where to look next."""

from harness.config import load_benchmark
from harness.sweep.result import SweepResult, select_best
from harness.sweep.summary import sweep_rows, sweep_summary
from tests.config.test_benchmark import BASE, _write
from tests.sweep.test_result import TRIALS


def results():
    unet = SweepResult("s-1", "t", "unet", "abc", 4, select_best(TRIALS, 4), TRIALS)
    unetpp = SweepResult("s-1", "t", "unetpp", "abc", 4, None, TRIALS[:1])  # nothing ran every epoch
    return [unet, unetpp]


def test_each_architecture_counts_how_its_trials_ended_and_names_its_best():
    rows = sweep_rows(results(), {"unet": ["lr"], "unetpp": ["lr", "depth"]})
    assert rows[0] == {
        "architecture": "unet",
        "trials": 6,
        "completed": 3,
        "stopped (ASHA)": 1,
        "failed": 2,  # one diverged, one error
        "best trial": "c",
        "val_iou": 0.85,
        "lr": 1e-5,
    }
    assert rows[1]["best trial"] == "none" and rows[1]["val_iou"] is None and "lr" not in rows[1]


def test_the_summary_says_the_budget_and_the_commands_that_come_next(tmp_path):
    bench = load_benchmark(_write(tmp_path, BASE))
    text = sweep_summary(
        results(),
        bench,
        study_storage="sqlite:///runs/t/optuna.db",
        runs_view="open http://127.0.0.1:5000",
        benchmark_file="bench.yaml",
    )
    lines = text.splitlines()
    assert lines[0].startswith(f"Sweep s-1: the same budget for each architecture ({bench.search.num_samples} trials")
    header = lines[1].split("  ")
    assert [h.strip() for h in header if h.strip()][:7] == [
        "architecture",
        "trials",
        "completed",
        "stopped (ASHA)",
        "failed",
        "best trial",
        "val_iou",
    ]
    assert lines[2].split()[:8] == ["unet", "6", "3", "1", "2", "c", "0.8500", "1.00e-05"]
    assert lines[3].split()[:6] == ["unetpp", "1", "0", "1", "0", "none"]
    assert "  compare:  cloudmask compare bench.yaml" in text
    assert "  Optuna:   optuna-dashboard sqlite:///runs/t/optuna.db   (studies s-1-<architecture>)" in lines
    without = sweep_summary(results(), bench, study_storage="x", runs_view="y")
    assert "compare:" not in without  # the demo compares at once
