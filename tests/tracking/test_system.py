"""harness.tracking.system: a trial's machine sampled into its MLflow run (real psutil, real SQLite store)."""

import time

from mlflow.tracking import MlflowClient

from harness.tracking import check_tracking_uri, system_metrics


def test_system_metrics_reach_the_run_found_by_its_tags(tmp_path):
    uri = check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient(uri)
    exp = client.create_experiment("exp")
    tags = {"role": "trial", "sweep_id": "s1", "arch": "unet", "trial_id": "abc"}
    with system_metrics(uri, "exp", tags, interval_s=0.5):
        time.sleep(1.5)  # the trial starts before the driver has created its run
        run = client.create_run(exp, tags=tags)
        time.sleep(3)
    logged = client.get_run(run.info.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in logged and "system/system_memory_usage_megabytes" in logged
    assert 0 <= logged["system/cpu_utilization_percentage"] <= 100


def test_no_run_and_off_are_quiet(tmp_path):
    uri = check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    MlflowClient(uri).create_experiment("exp")
    started = time.monotonic()
    with system_metrics(uri, "exp", {"trial_id": "never-created"}, interval_s=0.5, wait_s=1):
        pass
    with system_metrics(uri, "exp", {"trial_id": "x"}, interval_s=0):
        pass
    assert time.monotonic() - started < 15
