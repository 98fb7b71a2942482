"""The sweep driver on a real local Ray cluster, a real SQLite MLflow store and a real Optuna RDB."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from harness.config import TrainConfig, load_benchmark
from harness.errors import ClusterError, SweepError
from harness.sweep.driver import run_sweep
from harness.sweep.result import SWEEP_RESULT_FILE, SweepResult
from harness.tracking import load_dict
from tests.conftest import SMOKE, smoke_overrides

RESUMABLE = {"architectures": "[unet]", "train.epochs": 4, "asha.grace_period": 2}


def trials_with_checkpoints(experiment_dir: Path) -> int:
    """How many trials of a Tune experiment have written at least one checkpoint.

    Polled while a sweep runs: a folder listed one moment may be gone the next (the driver renames its
    ``.last-good-state.tmp-*`` copy into place, Tune prunes old checkpoints), so a folder that vanishes
    mid-listing counts as not there rather than failing the poll.
    """
    try:
        trial_dirs = [d for d in experiment_dir.iterdir() if not d.name.startswith(".")]
    except FileNotFoundError:
        return 0
    with_checkpoint = 0
    for trial_dir in trial_dirs:
        try:
            if any((c / "checkpoint.pt").is_file() for c in trial_dir.glob("checkpoint_*")):
                with_checkpoint += 1
        except (FileNotFoundError, NotADirectoryError):
            continue
    return with_checkpoint


def mlflow_runs(uri: str, experiment: str):
    """(parents, children) of the experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("role") == "trial"]
    return client, parents, children


def assert_one_run_per_trial_with_contiguous_steps(client, children) -> None:
    trial_ids = [r.data.tags["trial_id"] for r in children]
    assert len(trial_ids) == len(set(trial_ids)), "a trial was logged twice"
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_iou")]
        assert sorted(steps) == list(range(1, len(steps) + 1)), f"{run.data.tags['trial_id']}: {steps}"
        assert len(steps) >= 1
        assert run.data.tags["stopped_by"] in {"completed", "asha", "diverged", "error"}
        assert {"arch", "lr", "depth"} <= set(run.data.params)


def test_smoke_sweep_logs_every_trial_once(smoke_sweep):
    bench, outcomes, _tmp = smoke_sweep
    client, parents, children = mlflow_runs(bench.tracking.uri, bench.tracking.experiment)
    assert sorted(p.data.tags["arch"] for p in parents) == ["unet", "unetpp"]
    assert all(p.info.status == "FINISHED" for p in parents)
    assert len({p.data.tags["split_hash"] for p in parents}) == 1
    assert {p.data.tags["data_hash"] for p in parents} == {o.data_hash for o in outcomes} != {None}
    assert len(children) == 8
    assert_one_run_per_trial_with_contiguous_steps(client, children)
    stopped = [r.data.tags["stopped_by"] for r in children]
    assert "asha" in stopped and "completed" in stopped
    by_arch = {p.data.tags["arch"]: p for p in parents}
    for result in outcomes:
        assert len(result.trials) == 4 and result.best is not None
        assert (
            result.best.trial_id
            == max((t for t in result.trials if t.stopped_by == "completed"), key=lambda t: t.val_iou).trial_id
        )
        parent = by_arch[result.arch]
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert {SWEEP_RESULT_FILE, "best_checkpoint", "benchmark.yaml"} <= artifacts
        # The one-way handoff: what final_compare reads back is exactly what the sweep decided.
        stored = SweepResult.from_dict(load_dict(bench.tracking.uri, parent.info.run_id, SWEEP_RESULT_FILE))
        assert json.dumps(stored.to_dict()) == json.dumps(result.to_dict())  # NaN-safe equality
        assert parent.data.metrics["best_val_iou"] == result.best.val_iou
        assert parent.data.tags["best_trial_id"] == result.best.trial_id
        # The parent run describes the sweep and where its Optuna study is.
        study_storage = parent.data.tags["optuna_storage"]
        assert parent.data.tags["optuna_study"] == f"{result.sweep_id}-{result.arch}"
        description = parent.data.tags["mlflow.note.content"]
        assert f"`optuna-dashboard {study_storage}`" in description
        assert f"Best trial: `{result.best.trial_id}`, val_iou {result.best.val_iou:.4f}" in description
        assert {t.run_id for t in result.trials} == {
            c.info.run_id for c in children if c.data.tags["arch"] == result.arch
        }


def test_each_trial_logs_its_typed_config(smoke_sweep):
    bench, outcomes, _tmp = smoke_sweep
    for trial in outcomes[0].trials:
        config = load_dict(bench.tracking.uri, trial.run_id, "config.json")
        assert TrainConfig(**config) == trial.config
        assert type(config["lr"]) is float and config["arch"] == outcomes[0].arch


def test_asha_stopped_trials_are_pruned_in_optuna(smoke_sweep):
    bench, _, tmp = smoke_sweep
    storage = f"sqlite:///{tmp / 'storage' / 'optuna.db'}"
    _client, _, children = mlflow_runs(bench.tracking.uri, bench.tracking.experiment)
    by_tag = {}
    for run in children:
        by_tag[(run.data.tags["arch"], run.data.tags["stopped_by"])] = (
            by_tag.get((run.data.tags["arch"], run.data.tags["stopped_by"]), 0) + 1
        )
    summaries = optuna.study.get_all_study_summaries(storage)
    assert len(summaries) == 2
    for summary in summaries:
        arch = summary.study_name.rsplit("-", 1)[1]
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        states = [t.state for t in study.trials]
        assert len(states) == 4
        assert states.count(TrialState.PRUNED) == by_tag.get((arch, "asha"), 0)
        assert states.count(TrialState.COMPLETE) == by_tag.get((arch, "completed"), 0)
        for t in study.trials:
            if t.state == TrialState.PRUNED:
                assert t.intermediate_values, "a pruned trial keeps its per-epoch values"
                assert max(t.intermediate_values) < bench.train.epochs
        # Each Optuna trial names its Ray trial and its MLflow run; a completed one has every epoch's value.
        run_of = {r.data.tags["trial_id"]: r.info.run_id for r in children}
        assert {t.user_attrs["ray_trial_id"]: t.user_attrs["mlflow_run_id"] for t in study.trials}.items() <= (
            run_of.items()
        )
        for t in study.trials:
            if t.state == TrialState.COMPLETE:
                assert sorted(t.intermediate_values) == list(range(1, bench.train.epochs + 1))
        # ... and each MLflow run names its study and its Optuna trial number, and is named after it.
        runs = {r.data.tags["trial_id"]: r for r in children if r.data.tags["arch"] == arch}
        for t in study.trials:
            run = runs[t.user_attrs["ray_trial_id"]]
            assert run.data.tags["optuna_study"] == summary.study_name
            assert run.data.tags["optuna_trial_number"] == str(t.number)
            assert run.info.run_name == f"{arch}/trial{t.number}-{t.user_attrs['ray_trial_id']}"
    # Each trial logged its machine's system metrics into its run from its Ray worker.
    completed = [r for r in children if r.data.tags["stopped_by"] == "completed"]
    assert any("system/cpu_utilization_percentage" in r.data.metrics for r in completed)


def test_gpu_request_on_cpu_cluster_fails_fast(ray_cluster, tmp_path, data_cache_dir):
    bench = load_benchmark(SMOKE, smoke_overrides(tmp_path, data_cache_dir, **{"resources.gpu": 1}))
    start = time.monotonic()
    with pytest.raises(ClusterError, match="gpu=1"):
        run_sweep(bench)
    assert time.monotonic() - start < 60
    assert not (tmp_path / "storage" / "unet").exists(), "no trial may have started"
    # No sweep state either: the corrected command is a fresh sweep, not "a sweep already exists".
    assert not (tmp_path / "storage" / "sweep.json").exists()
    bench = load_benchmark(SMOKE, smoke_overrides(tmp_path, data_cache_dir, **{"resources.gpu": 2}))
    with pytest.raises(ClusterError, match="gpu=2"):
        run_sweep(bench)


@pytest.mark.parametrize(
    ("override", "key"),
    [("train.epochs=0", "train.epochs"), ("search_spaces.unet.lr.type=gaussian", "lr.type")],
)
def test_bad_benchmark_fails_before_anything_starts(tmp_path, override, key):
    proc = subprocess.run(
        [sys.executable, "-m", "harness.sweep", str(SMOKE), "--storage", str(tmp_path / "s"), "--set", override],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 3, proc.stderr
    assert key in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists() and not (tmp_path / "mlflow.db").exists()


def test_unreachable_ray_address_is_a_clear_error(tmp_path, data_cache_dir):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.sweep",
            str(SMOKE),
            "--address",
            "127.0.0.1:1",
            "--storage",
            str(tmp_path / "s"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
            "--set",
            f"data.cache_dir={data_cache_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 4, proc.stderr
    assert "127.0.0.1:1" in proc.stderr
    assert not (tmp_path / "s").exists()  # a refused start leaves no empty storage folder behind


def test_worker_node_killed_mid_sweep(ray_cluster, tmp_path, data_cache_dir):
    """A node dies under a running trial: it is retried from its checkpoint, MLflow stays one run per trial."""
    # Trials take a whole 2-CPU node each, so with two at once one of them runs on the node we kill.
    node = ray_cluster.add_node(num_cpus=2)
    ray_cluster.wait_for_nodes()
    bench = load_benchmark(
        SMOKE,
        smoke_overrides(
            tmp_path,
            data_cache_dir,
            **{
                "architectures": "[unet]",
                "search.num_samples": 2,
                # Long enough (10 short epochs) that the kill lands while both trials still run.
                "asha.grace_period": 10,
                "train.epochs": 10,
                "resources.cpu": 2,
            },
        ),
    )
    killed = threading.Event()

    def kill_when_checkpointed() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if trials_with_checkpoints(tmp_path / "storage" / "unet") >= 2:
                ray_cluster.remove_node(node, allow_graceful=False)
                killed.set()
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_when_checkpointed, daemon=True)
    killer.start()
    (outcome,) = run_sweep(bench)
    killer.join(timeout=5)
    assert killed.is_set(), "the node was never killed"
    assert len(outcome.trials) == 2 and all(t.stopped_by == "completed" for t in outcome.trials)
    client, _, children = mlflow_runs(bench.tracking.uri, bench.tracking.experiment)
    assert len(children) == 2
    assert_one_run_per_trial_with_contiguous_steps(client, children)
    restored = [r for r in children if int(r.data.tags.get("restored_at_epoch", "0")) >= 1]
    assert restored, "the hit trial should have resumed from a checkpointed epoch, not from scratch"


@pytest.mark.parametrize("changed", ["split_hash", "data_hash"])
def test_resume_on_other_data_is_refused_before_ray(tmp_path, data_cache_dir, changed):
    """--resume of a sweep started on another split, or on the same split of other pixels: refused, nothing written."""
    from harness.data.prepare import prepare_data
    from harness.sweep.storage import SWEEP_FILE, SweepStorage

    bench = load_benchmark(SMOKE, smoke_overrides(tmp_path, data_cache_dir))
    data = prepare_data(**bench.prepare_args())
    state = {"sweep_id": "smoke-1", "split_hash": data.split_hash, "data_hash": data.data_hash}
    state = {**state, changed: "0" * 64, "config": bench.to_dict()}
    storage = SweepStorage.parse(bench.storage)
    storage.write_json(SWEEP_FILE, state)
    what = "split" if changed == "split_hash" else "data"
    with pytest.raises(SweepError, match=f"started on {what} 0{{12}}, this data gives {getattr(data, changed)[:12]}"):
        run_sweep(bench, resume=True)
    assert storage.read_json(SWEEP_FILE) == state


def test_driver_sigkill_then_resume(ray_cluster, tmp_path, data_cache_dir):
    """SIGKILL the sweep process mid-sweep; --resume finishes exactly the requested trials, no duplicates."""
    # grace_period 2 of 4 epochs: ASHA's one rung is epoch 2, and the first trial past it always runs every
    # epoch, so the sweep has a result to choose (a sweep without one exits non-zero).
    overrides = smoke_overrides(tmp_path, data_cache_dir, **RESUMABLE)
    cmd = [sys.executable, "-m", "harness.sweep", str(SMOKE), "--address", ray_cluster.address]
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if trials_with_checkpoints(tmp_path / "storage" / "unet") >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    if resumed.returncode != 0 and "cannot be read" in resumed.stderr:
        # The kill truncated Tune's experiment state mid-copy: --resume refuses, naming it; a user moves it aside
        # as the message says and resumes again, which starts the architecture again.
        assert str(tmp_path / "storage" / "unet") in resumed.stderr
        (tmp_path / "storage" / "unet").rename(tmp_path / "unet-truncated")
        resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    (tmp_path / "resumed.log").write_text(resumed.stdout + resumed.stderr)  # kept by pytest for a post-mortem
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The restored searcher read which trials the restored experiment holds from Tune's experiment state.
    assert "could not read the restored experiment" not in resumed.stderr
    client, parents, children = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "cloudmask-smoke")
    assert len(parents) == 1
    assert len(children) == 4
    assert_one_run_per_trial_with_contiguous_steps(client, children)
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'storage' / 'optuna.db'}")
    # Every trial of the sweep is finished in Optuna under its Ray trial id. (If the kill truncated Tune's
    # experiment state, the architecture started again: the study also keeps the first attempt's trials.)
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    finished = {t.user_attrs["ray_trial_id"] for t in study.trials if t.state in done}
    assert {r.data.tags["trial_id"] for r in children} <= finished
    # A trial asked for just before the kill, which the restored sweep replaced, is FAIL, not left RUNNING.
    assert all(t.state != TrialState.RUNNING for t in study.trials)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_ends_the_sweep_unfinished_and_resumable(ray_cluster, tmp_path, data_cache_dir, stop):
    """Ctrl-C or SIGTERM: exit 128+signal, nothing marked finished, nothing left RUNNING; --resume completes it."""
    # grace_period 2 of 4 epochs: ASHA's one rung is epoch 2, and the first trial past it always runs every
    # epoch, so the sweep has a result to choose (a sweep without one exits non-zero).
    overrides = smoke_overrides(tmp_path, data_cache_dir, **RESUMABLE)
    cmd = [sys.executable, "-m", "harness.sweep", str(SMOKE), "--address", ray_cluster.address]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and trials_with_checkpoints(tmp_path / "storage" / "unet") < 1:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep finished before it could be stopped"
    proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + stop, stderr[-3000:]
    assert "continue it with --resume" in stderr
    state = json.loads((tmp_path / "storage" / "sweep.json").read_text())
    assert "finished" not in state
    client, parents, children = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "cloudmask-smoke")
    assert [p.info.status for p in parents] == ["KILLED"] and "best_val_iou" not in parents[0].data.metrics
    assert children and all(r.info.status != "RUNNING" for r in children)
    assert any(r.data.tags.get("stopped_by") == "interrupted" and r.info.status == "KILLED" for r in children)
    if stop == signal.SIGTERM:
        return
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "finished" in json.loads((tmp_path / "storage" / "sweep.json").read_text())
    client, parents, children = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "cloudmask-smoke")
    assert [p.info.status for p in parents] == ["FINISHED"] and len(children) == 4
    assert all(r.info.status == "FINISHED" for r in children)
    assert_one_run_per_trial_with_contiguous_steps(client, children)


def test_more_loader_workers_than_cpus_is_refused_before_any_trial(ray_cluster, tmp_path, data_cache_dir):
    bench = load_benchmark(
        SMOKE,
        smoke_overrides(tmp_path, data_cache_dir, **{"train.num_workers": 2, "search.max_concurrent": 4}),
    )
    with pytest.raises(ClusterError, match="train.num_workers"):
        run_sweep(bench)
    assert not (tmp_path / "storage" / "sweep.json").exists(), "a refused sweep leaves no state to resume"


def test_a_device_hours_budget_ends_the_sweep_before_its_trial_cap(ray_cluster, tmp_path, data_cache_dir):
    """search.device_hours: once the trials used it, no more start (2 CPU-seconds here: the first two only)."""
    overrides = smoke_overrides(
        tmp_path, data_cache_dir, **RESUMABLE, **{"search.num_samples": 6, "search.device_hours": 2 / 3600}
    )
    (result,) = run_sweep(load_benchmark(SMOKE, overrides))
    assert 2 <= len(result.trials) < 6 and result.best is not None
    # Every trial but those already running when the budget ran out started within it.
    used = sum(t.seconds for t in result.trials) / 3600
    assert used >= 2 / 3600


def test_a_trial_that_failed_before_its_first_report_is_an_error_row(ray_cluster, tmp_path):
    """FAILED in MLflow with its error; its Result names no config (as for a trial whose node was lost as it
    started), and the sweep's table still has it as an error row."""
    from ray import tune

    from harness.config import to_flat
    from harness.sweep.driver import MlflowTrialCallback, trial_summaries
    from harness.tracking import TrialLogger

    def crash_before_reporting(config: dict) -> None:
        # Defined here, so Ray pickles it by value (workers cannot import test modules).
        if config["lr"] == 0.5:
            raise RuntimeError("out of memory before the first epoch")
        tune.report({"val_iou": 0.5, "epoch": 1, "status": "completed"})

    space = {**to_flat(TrainConfig(arch="unet")), "lr": tune.grid_search([0.001, 0.5])}
    failure = tune.FailureConfig(max_failures=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    callback = MlflowTrialCallback(TrialLogger(uri, "crash", sweep_id="s1", arch="unet"))
    run_config = tune.RunConfig(
        name="crash", storage_path=str(tmp_path / "tune"), failure_config=failure, callbacks=[callback]
    )
    tune.Tuner(crash_before_reporting, param_space=space, run_config=run_config).fit()
    # In MLflow: FAILED, with the last of its two failures (1 retry) as the error tag.
    _, _, children = mlflow_runs(uri, "crash")
    failed = {r.data.tags["trial_id"]: r for r in children if r.info.status == "FAILED"}
    assert len(children) == 2 and len(failed) == 1, [(r.info.status, r.data.tags) for r in children]
    (run,) = failed.values()
    assert run.data.tags["stopped_by"] == "error"
    assert (
        run.data.tags["error"].startswith("Failure # 2")
        and "out of memory before the first epoch" in run.data.tags["error"]
    )
    # Restored, the errored trial keeps only what it reported (nothing) and its id: the shape of a trial
    # whose worker never ran, which a live experiment cannot produce on demand.
    grid = tune.Tuner.restore(str(tmp_path / "tune" / "crash"), trainable=crash_before_reporting).fit()
    assert grid.num_errors == 1 and sum(r.config is None for r in grid) == 1, "Tune kept a config for it"

    rows = {row.config.lr: row for row in trial_summaries(grid, lambda trial_id: f"run-{trial_id}")}
    ok, crashed = rows[0.001], rows[0.5]
    assert (ok.stopped_by, ok.epochs, ok.val_iou) == ("completed", 1, 0.5)
    assert (crashed.stopped_by, crashed.epochs) == ("error", 0) and math.isnan(crashed.val_iou)
    assert crashed.config == TrainConfig(arch="unet", lr=0.5)
    errored = next(r for r in grid if r.error is not None)
    assert crashed.trial_id == errored.metrics["trial_id"] != ok.trial_id
    assert crashed.run_id == f"run-{crashed.trial_id}" and crashed.trial_id in failed
