"""The Tune trainable on a real local Ray: what a trial reports, and a configuration that cannot run."""

import math

from ray import tune

from harness.config import load_benchmark, to_flat
from harness.data.prepare import prepare_data
from harness.sweep.trainable import METRIC, train_trial
from tests.conftest import SMOKE, smoke_overrides


def _fit_one(bench, config: dict, tmp_path, name: str):
    """One trial of ``config`` through Tune (no searcher, no callbacks), up to 2 failures like a sweep."""
    data = prepare_data(**bench.prepare_args())
    trainable = tune.with_parameters(train_trial, data=data, prepare_args=bench.prepare_args())
    tuner = tune.Tuner(
        trainable,
        param_space=config,
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", num_samples=1),
        run_config=tune.RunConfig(
            name=name, storage_path=str(tmp_path / "tune"), failure_config=tune.FailureConfig(max_failures=2)
        ),
    )
    (result,) = tuner.fit()
    return result


def test_every_epoch_is_reported_with_a_checkpoint_and_counted_in_epochs(ray_cluster, tmp_path, data_cache_dir):
    bench = load_benchmark(SMOKE, smoke_overrides(tmp_path, data_cache_dir, **{"train.epochs": 2}))
    result = _fit_one(bench, to_flat(bench.trial_config("unet")), tmp_path, "ok")
    assert result.error is None
    history = result.metrics_dataframe
    assert history["epoch"].tolist() == [1, 2] == history["training_iteration"].tolist()
    assert (history["restored_at_epoch"] == 0).all(), "a fresh trial restored nothing"
    assert all(0 <= v <= 1 for v in history[METRIC])
    assert result.checkpoint is not None and (result.checkpoint.path.endswith("checkpoint_000001"))


def test_a_configuration_that_cannot_run_ends_once_as_an_error_result(ray_cluster, tmp_path, data_cache_dir):
    """A ValueError (here a depth the 32 px patches cannot halve) is a result, not an exception Tune retries."""
    bench = load_benchmark(SMOKE, smoke_overrides(tmp_path, data_cache_dir))
    config = {**to_flat(bench.trial_config("unet")), "depth": 6}
    result = _fit_one(bench, config, tmp_path, "bad")
    assert result.error is None, "ended as a result: Tune neither raised nor retried it"
    assert result.metrics["status"] == "error" and math.isnan(result.metrics[METRIC])
    assert "depth" in result.metrics["error"] and result.metrics["error"].startswith("ValueError")
    assert len(result.metrics_dataframe) == 1, "reported once: no retries"
