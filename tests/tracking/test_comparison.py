"""The final comparison's MLflow record on a real SQLite store: nesting, curves, test metrics, the model."""

import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from harness.config import TrainConfig
from harness.tracking import PARENT_TAG, ROLE_RETRAIN, ComparisonRecorder, check_tracking_uri
from harness.training.loop import model_from_config

HISTORY = [
    {"epoch": 1, "train_loss": 0.9, "val_loss": 0.8, "val_iou": 0.4, "status": "running"},
    {"epoch": 2, "train_loss": 0.5, "val_loss": 0.6, "val_iou": float("nan"), "status": "completed"},
]


@pytest.fixture
def recorder(tmp_path):
    """A comparison recorder on a fresh store, started."""
    uri = check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    recorder = ComparisonRecorder(uri, "exp", sweep_id="s1", tags={"benchmark": "smoke"})
    recorder.start({"seeds": [1, 2]})
    return recorder


def test_retrains_nest_under_the_comparison_with_curves_metrics_and_a_loadable_model(recorder, tmp_path):
    out = tmp_path / "out"  # not tmp_path itself: the store's artifacts live there
    (out / "retrain").mkdir(parents=True)
    (out / "retrain" / "retrain.json").write_text("{}")
    model = model_from_config(TrainConfig(depth=1, base_channels=4))
    tags = {"sweep_id": "s1", "arch": "unet", "seed": "1"}
    run_id = recorder.log_retrain(
        run_name="unet/seed1",
        tags=tags,
        params={"lr": 0.001},
        history=HISTORY,
        test_metrics={"test_pooled_iou": 0.7, "test_per_image_iou_mean": float("nan")},
        artifacts_dir=out,
        model=model,
        input_example=np.zeros((2, 4, 32, 32), dtype=np.float32),
    )
    client = MlflowClient(recorder.uri)
    run = client.get_run(run_id)
    assert run.data.tags[PARENT_TAG] == recorder.run_id and run.data.tags["role"] == ROLE_RETRAIN
    assert "mlflow.user" in run.data.tags and "mlflow.source.name" in run.data.tags
    assert run.info.status == "FINISHED" and run.info.run_name == "unet/seed1"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train_loss")] == [(1, 0.9), (2, 0.5)]
    # A NaN is left out rather than logged as a number nobody can sort by.
    assert [m.step for m in client.get_metric_history(run_id, "val_iou")] == [1]
    assert run.data.metrics["test_pooled_iou"] == 0.7 and "test_per_image_iou_mean" not in run.data.metrics
    assert recorder.finished_retrain({**tags, "role": ROLE_RETRAIN}) == run_id
    assert recorder.finished_retrain({**tags, "role": ROLE_RETRAIN, "seed": "2"}) is None
    # The logged model is named after its run (the Models tab lists names) and tagged with arch and seed.
    (logged,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert logged.name == "unet-seed1" and logged.tags["arch"] == "unet" and logged.tags["seed"] == "1"
    loaded = mlflow.pytorch.load_model(f"runs:/{run_id}/unet-seed1")
    with torch.inference_mode():
        expected = model.eval()(torch.ones(3, 4, 32, 32))
        assert torch.allclose(loaded(torch.ones(3, 4, 32, 32)), expected, atol=1e-5)
    # Fully convolutional, and the signature says so: other patch sizes pass MLflow's schema check.
    predicted = mlflow.pyfunc.load_model(f"runs:/{run_id}/unet-seed1").predict(np.ones((1, 4, 64, 64), np.float32))
    assert np.asarray(predicted).shape == (1, 2, 64, 64)


def test_finish_and_fail_end_the_comparison_run(recorder, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("# report\n")
    recorder.finish(metrics={"unet_pooled_iou_mean": 0.8}, artifacts_dir=tmp_path / "out")
    client = MlflowClient(recorder.uri)
    run = client.get_run(recorder.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"unet_pooled_iou_mean": 0.8}
    assert {a.path for a in client.list_artifacts(recorder.run_id)} == {"report.md"}
    other = ComparisonRecorder(recorder.uri, "exp", sweep_id="s2", tags={})
    other.start({})
    other.fail()
    assert client.get_run(other.run_id).info.status == "FAILED"


def test_a_retrain_run_opened_before_training_is_filled_in_or_failed(recorder, tmp_path):
    """open_retrain: RUNNING under the comparison while it trains; log_retrain ends that run, fail() ends the rest."""
    client = MlflowClient(recorder.uri)
    tags = {"arch": "unet", "seed": "1", "sweep_id": "s1"}
    opened = recorder.open_retrain(run_name="unet/seed1", tags=tags)
    run = client.get_run(opened)
    assert run.info.status == "RUNNING" and run.info.run_name == "unet/seed1"
    assert {**tags, "role": "final_retrain", "mlflow.parentRunId": recorder.run_id}.items() <= run.data.tags.items()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "retrain.json").write_text("{}")
    logged = recorder.log_retrain(
        run_id=opened,
        run_name="unet/seed1",
        tags=tags,
        params={"lr": 0.001},
        history=[{"epoch": 1, "val_iou": 0.5}],
        test_metrics={"test_pooled_iou": 0.6},
        artifacts_dir=tmp_path / "out",
    )
    assert logged == opened and client.get_run(opened).info.status == "FINISHED"
    still_open = recorder.open_retrain(run_name="unetpp/seed1", tags={**tags, "arch": "unetpp"})
    recorder.fail()
    assert client.get_run(still_open).info.status == "FAILED"
    assert client.get_run(opened).info.status == "FINISHED", "a finished retrain stays finished"
    assert client.get_run(recorder.run_id).info.status == "FAILED"
