"""harness.audit: ASHA replayed over recorded curves, checked against Ray's own scheduler and real Tune runs.

* decision for decision against ``ray.tune.schedulers.ASHAScheduler`` driven directly (its public
  ``on_trial_add`` / ``on_trial_result`` / ``on_trial_complete``, which read only a trial's id);
* trial stop for trial stop against a real Tune experiment whose trainable replays fixed curves, and a
  real TPE + ASHA run with the sweep's own searcher (``harness.sweep.searcher.OptunaStudySearcher``);
* the ``cloudmask replay`` command on a sweep recorded in a real MLflow SQLite store.
"""

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from harness.audit.asha_replay import AshaReplay, best_final, replay_grid, replay_schedule, summarise
from harness.audit.search_replay import config_key, replay_search
from harness.cli import main
from harness.config.train import TrainConfig
from harness.sweep.result import SWEEP_RESULT_FILE, SweepResult, TrialSummary

SMOKE = Path(__file__).resolve().parents[2] / "benchmarks" / "smoke.yaml"
# Four trials, 4 epochs; t3 starts worst and ends best.
CURVES = [
    [0.5, 0.6, 0.7, 0.8],
    [0.4, 0.5, 0.6, 0.9],
    [0.6, 0.7, 0.8, 0.85],
    [0.3, 0.9, 0.9, 0.95],
]


def test_replay_by_hand():
    # Rungs at epochs 1, 2 (and 4 = max_t); cutoff = median of the scores recorded at the rung.
    # Order 0,1,2,3: t1 (0.4) < median{0.5} -> stop at 1; t2 passes (0.6 > 0.45, 0.7 >= 0.6);
    # t3 (0.3) < median{0.5, 0.4, 0.6} = 0.5 -> stop at 1: the best trial is lost.
    run = replay_schedule(CURVES, [0, 1, 2, 3], grace_period=1, reduction_factor=2, max_epochs=4)
    assert run.epochs == (4, 1, 4, 1) and run.stopped == {1, 3}
    assert best_final(CURVES, run.epochs, 4) == 0.85
    # Order 3,2,1,0: t3 runs first and sets the bar: t2 stops at 2 (0.7 < 0.9), t1 at 1 (0.4 < 0.45),
    # t0 at 2 (0.6 < median{0.9, 0.7} = 0.8).
    run = replay_schedule(CURVES, [3, 2, 1, 0], grace_period=1, reduction_factor=2, max_epochs=4)
    assert run.epochs == (2, 1, 2, 4) and run.stopped == {0, 1, 2}
    assert best_final(CURVES, run.epochs, 4) == 0.95
    assert run.events[:5] == ((3, 1), (3, 2), (3, 3), (3, 4), (2, 1))


def _ray_decisions(run, curves, grace, rf, max_t):
    """Feed the replayed arrival order to Ray's ASHAScheduler; return the trials it stopped early."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    sched = ASHAScheduler(
        time_attr="training_iteration", metric="val_iou", mode="max", max_t=max_t, grace_period=grace,
        reduction_factor=rf,
    )  # fmt: skip
    trials = {t: SimpleNamespace(trial_id=str(t)) for t in run.order}
    for t in run.order:
        sched.on_trial_add(None, trials[t])
    stopped = set()
    for t, e in run.events:
        result = {"training_iteration": e, "val_iou": float(curves[t][e - 1])}
        decision = sched.on_trial_result(None, trials[t], result)
        if decision == TrialScheduler.STOP and e < len(curves[t]):
            stopped.add(t)
        if decision == TrialScheduler.STOP or e == len(curves[t]):
            assert e == run.epochs[t], f"Ray ended trial {t} at {e}, the replay at {run.epochs[t]}"
            sched.on_trial_complete(None, trials[t], result)
    return stopped


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")  # Ray's cutoff over diverged trials' NaNs
@pytest.mark.parametrize(
    ("grace", "rf", "max_t", "concurrency"),
    [(1, 2, 8, 1), (1, 2, 8, 3), (2, 3, 9, 2), (1, 4, 16, 4), (3, 2, 12, 2), (1, 1.5, 6, 2)],
)
def test_replay_matches_rays_scheduler_decision_for_decision(grace, rf, max_t, concurrency):
    rng = np.random.default_rng(int(grace * 100 + rf * 10 + max_t))
    n = 14
    # Coarse values (ties), a slow starter or two, and a trial that diverges (NaN, then its curve ends).
    curves = [list(np.round(rng.uniform(0, 1, size=max_t).cumsum() / np.arange(1, max_t + 1), 1)) for _ in range(n)]
    curves[3] = [0.05] * (max_t // 2) + [0.99] * (max_t - max_t // 2)
    curves[5] = [*curves[5][:2], math.nan]
    durations = rng.uniform(0.5, 2.0, size=(n, max_t)).tolist()
    for k in range(25):
        order = [int(i) for i in rng.permutation(n)]
        run = replay_schedule(
            curves, order, grace_period=grace, reduction_factor=rf, max_epochs=max_t, concurrency=concurrency,
            durations=durations if k % 2 else None,
        )  # fmt: skip
        assert _ray_decisions(run, curves, grace, rf, max_t) == set(run.stopped)
        assert len(run.events) == sum(run.epochs)


@pytest.fixture
def tune_here(ray_cluster):
    """Ray workers cannot import this test module: ship its functions (the trainables) by value."""
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray_cluster
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _replaying_trainable(config, curves, max_t):
    from ray import tune

    curve = curves[config["key"]] if "key" in config else curves[config["i"]]
    for e, value in enumerate(curve, start=1):
        status = "diverged" if math.isnan(value) else "completed" if e == max_t else "running"
        tune.report({"val_iou": value, "status": status})


def test_replay_matches_a_real_tune_run(tune_here, tmp_path):
    """Tune runs the trials one at a time in order; ASHA stops the same trials after the same epochs."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    rng = np.random.default_rng(5)
    max_t, n = 6, 10
    curves = [list(np.round(rng.uniform(0.2, 0.9, size=max_t), 2)) for _ in range(n)]
    curves[2] = [0.1, 0.1, 0.95, 0.95, 0.95, 0.95]  # a slow starter
    curves[7] = [0.6, 0.7, math.nan]  # diverges at epoch 3
    tuner = tune.Tuner(
        tune.with_parameters(_replaying_trainable, curves=curves, max_t=max_t),
        param_space={"i": tune.grid_search(list(range(n)))},
        tune_config=tune.TuneConfig(
            metric="val_iou",
            mode="max",
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=1, reduction_factor=2),
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name="replay-asha", storage_path=str(tmp_path), verbose=0),
    )
    real = {r.config["i"]: int(r.metrics["training_iteration"]) for r in tuner.fit()}
    run = replay_schedule(curves, list(range(n)), grace_period=1, reduction_factor=2, max_epochs=max_t)
    assert [real[i] for i in range(n)] == list(run.epochs)
    assert run.stopped  # the test is about stops: some must happen


def _pool_curve(x: int, y: str) -> list[float]:
    # Final quality peaks at x = 3 with y = "b"; large x starts fast, small x starts slow.
    final = 0.9 - 0.08 * abs(x - 3) + (0.03 if y == "b" else 0.0)
    start = 0.2 + 0.1 * x
    return [round(start + (final - start) * e / 4, 4) for e in range(1, 5)]


def test_replay_search_matches_real_tpe_and_asha_with_the_sweeps_searcher(tune_here, tmp_path):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from harness.config.search_spaces import load_search_space
    from harness.sweep.sampling import to_optuna
    from harness.sweep.searcher import OptunaStudySearcher

    space = {"x": [0, 1, 2, 3, 4, 5], "y": ["a", "b"]}
    pool = {config_key({"x": x, "y": y}): _pool_curve(x, y) for x in space["x"] for y in space["y"]}
    pool[config_key({"x": 5, "y": "a"})] = [0.7, math.nan]  # one configuration diverges
    dists = to_optuna(load_search_space({k: {"type": "categorical", "choices": v} for k, v in space.items()}))
    trials, seed = 12, 7
    searcher = OptunaStudySearcher(
        dists, study_name="replay", storage=f"sqlite:///{tmp_path}/optuna.db", metric="val_iou", mode="max",
        sampler="tpe", seed=seed, budget=trials,
    )  # fmt: skip

    def trainable(config):
        _replaying_trainable({"key": config_key({k: config[k] for k in space})}, pool, 4)

    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric="val_iou",
            mode="max",
            num_samples=trials,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=1),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=4, grace_period=1, reduction_factor=2),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name="replay-tpe", storage_path=str(tmp_path), verbose=0),
    )
    grid = tuner.fit()
    # The order the searcher was asked in: the study numbers its trials and keeps each Ray trial id.
    study = optuna.load_study(study_name="replay", storage=f"sqlite:///{tmp_path}/optuna.db")
    asked = {t.user_attrs["ray_trial_id"]: t.number for t in study.trials}
    results = sorted(grid, key=lambda r: asked[r.metrics["trial_id"]])
    replay = replay_search(pool, space=space, sampler="tpe", seed=seed, trials=trials, asha=(1, 2), max_epochs=4)
    assert [config_key({k: r.config[k] for k in space}) for r in results] == list(replay.keys)
    assert [int(r.metrics["training_iteration"]) for r in results] == list(replay.epochs)
    assert len(set(replay.keys)) > 4 and min(replay.epochs) < 4  # TPE explored, ASHA stopped some
    finals = [r.metrics["val_iou"] for r in results if r.metrics["training_iteration"] == 4]
    assert replay.best == max(v for v in finals if not math.isnan(v))


def test_replay_search_without_asha_runs_every_trial_to_the_end():
    space = {"x": [0, 1, 2, 3, 4, 5], "y": ["a", "b"]}
    pool = {config_key({"x": x, "y": y}): _pool_curve(x, y) for x in space["x"] for y in space["y"]}
    run = replay_search(pool, space=space, sampler="random", seed=0, trials=8, asha=None, max_epochs=4)
    assert run.epochs == (4,) * 8 and run.trace[-1] == (32, run.best)
    assert run.best == max(pool[k][-1] for k in run.keys)
    assert run.best_within(12) == max(pool[k][-1] for k in run.keys[:3])
    assert math.isnan(run.best_within(3))


def test_summary_of_a_grid():
    runs = replay_grid(CURVES, max_epochs=4, grace_periods=[1, 2], reduction_factors=[2], orders=24, seed=0)
    assert len(runs) == 48 and runs.epochs_fraction.between(0, 1).all()
    summary = summarise("unet", runs, CURVES, 4).set_index(["asha", "grace_period"], drop=False)
    off = summary[summary.asha == "off"].iloc[0]
    assert (off.best_iou_mean, off.epochs_fraction_mean, off.p_found_best) == (0.95, 1.0, 1.0)
    g1 = summary[(summary.asha == "on") & (summary.grace_period == 1)].iloc[0]
    # The best trial survives grace 1 only when it is not judged at epoch 1 against a better start.
    g1_runs = runs[runs.grace_period == 1]
    assert g1.p_found_best == pytest.approx((g1_runs.best_iou == 0.95).mean())
    assert 0 < g1.p_found_best < 1 and g1.epochs_fraction_mean < 1


# -- the command, on a sweep recorded in MLflow ----------------------------------------------------
def _record_sweep(uri, curves, stopped_by, arch="unet", benchmark_yaml=None):
    """A finished sweep in a real MLflow store: per-epoch metrics through TrialLogger, then sweep_result.json."""
    from harness.tracking import TrialLogger

    tl = TrialLogger(uri, "exp", sweep_id="s1", arch=arch, parent_tags={"benchmark": "t"})
    tl.start()
    if benchmark_yaml is not None:
        tl.log_parent_artifacts([benchmark_yaml])
    summaries = []
    for i, (curve, ended) in enumerate(zip(curves, stopped_by, strict=True)):
        tid = f"t{i}"
        tl.trial_started(tid, {"lr": 0.001 * (i + 1)})
        for e, v in enumerate(curve, start=1):
            tl.trial_result(tid, {"epoch": e, "val_iou": v, "epoch_seconds": 1.0 + 0.1 * i})
        tl.trial_finished(tid, ended)
        config = TrainConfig(epochs=4, lr=0.001 * (i + 1))
        summaries.append(TrialSummary(tid, tl.run_id(tid), config, ended, len(curve), curve[-1], 1.0))
    full = [s for s in summaries if s.stopped_by == "completed"]
    best = max(full, key=lambda s: s.val_iou) if full else None
    tl.log_parent_dict(SweepResult("s1", "t", arch, "h", 4, best, tuple(summaries)).to_dict(), SWEEP_RESULT_FILE)
    # What the driver records last, as a sweep's result is complete (a finished sweep is one that has it).
    tl.set_parent_tags({"n_trials": str(len(summaries)), "n_completed": str(len(full))})
    tl.close()


def test_replay_command_on_a_recorded_sweep(tmp_path, capsys):
    from harness.audit.curves import load_sweep, sweep_curves

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _record_sweep(uri, CURVES, ["completed"] * 4)
    _, sweeps, _ = load_sweep(uri, "exp")
    curves, durations = sweep_curves(uri, sweeps["unet"])
    assert [list(c.values) for c in curves] == CURVES
    assert durations == [[1.0 + 0.1 * i] * 4 for i in range(4)]
    out = tmp_path / "replay.csv"
    argv = ["replay", "--tracking-uri", uri, "--orders", "30", "--out", str(out), "--reduction-factors", "2,3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "no ASHA" in printed and "grace 1, factor 2" in printed
    summary = pd.read_csv(out)
    assert len(summary) == 1 + 2 * 2  # no ASHA + grace {1, 2} x factor {2, 3}
    assert summary.loc[summary.asha == "off", "best_iou_mean"].item() == 0.95
    assert len(pd.read_csv(tmp_path / "replay-runs.csv")) == 4 * 30


def test_the_comparisons_audit_reads_the_sweeps_curves_and_its_own_asha_settings(tmp_path):
    import yaml

    from harness.audit.curves import load_sweep, protocol_audit
    from harness.config import load_benchmark

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # Six trials whose epoch-1 scores are reversed at the end, epoch 2 ranks them as the end does.
    curves = [[0.9 - 0.1 * i, 0.1 * i, 0.15 * i, 0.18 * i] for i in range(6)]
    swept_with = tmp_path / "benchmark.yaml"
    swept_with.write_text(yaml.safe_dump({"asha": {"grace_period": 2, "reduction_factor": 2, "enabled": True}}))
    _record_sweep(uri, curves, ["completed"] * 6, benchmark_yaml=swept_with)
    # The benchmark file says grace 1; the sweep ran with grace 2, and the audit follows the sweep.
    bench = load_benchmark(SMOKE, [f"tracking.uri={uri}", "tracking.experiment=exp", "train.epochs=4"])
    assert bench.asha.grace_period == 1
    audit = protocol_audit(bench, load_sweep(uri, "exp")[1])
    assert audit.summary["rungs"] == [2] and audit.summary["grace_period"] == 2
    assert audit.table.spearman.tolist() == [pytest.approx(1.0)]
    assert len(audit.curves) == 24
    # Every trial ran every epoch, so the schedule is replayed too: epoch 2 ranks like the end, and the
    # best trial (highest at epoch 2 as well) is never stopped.
    replayed = audit.summary["replay"]["unet"]
    assert replayed["full_best"] == pytest.approx(0.9) and replayed["best_iou_mean"] == pytest.approx(0.9)
    assert replayed["p_found_best"] == 1.0 and replayed["epochs_fraction_mean"] < 1


def test_replay_refuses_a_sweep_that_asha_cut_and_names_the_trials(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _record_sweep(uri, [CURVES[0], CURVES[1][:1], CURVES[2], CURVES[3][:2]], ["completed", "asha", "completed", "asha"])
    assert main(["replay", "--tracking-uri", uri, "--out", str(tmp_path / "r.csv")]) == 3
    err = capsys.readouterr().err
    assert "t1, t3" in err and "asha.enabled: false" in err
    assert not (tmp_path / "r.csv").exists()


def test_replay_usage_errors_exit_2(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["replay", "--grace-periods", "1,x"])
    assert exc.value.code == 2


def test_asha_replay_refuses_bad_settings():
    with pytest.raises(ValueError, match="invalid ASHA"):
        AshaReplay(5, 2, 4)


def test_the_module_form_runs_the_replay_subcommand():
    import subprocess
    import sys

    argv = [sys.executable, "-m", "harness.replay", "--help"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--grace-periods" in proc.stdout and "--orders" in proc.stdout
