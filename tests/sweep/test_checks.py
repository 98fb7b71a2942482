"""The sweep's checks: configurations every trial would fail on (before Ray), an architecture left without a result."""

import pytest

from harness.config import TrainConfig, load_benchmark
from harness.sweep.driver import run_sweep
from harness.sweep.result import SweepResult
from tests.conftest import SMOKE, smoke_overrides


def test_configurations_no_trial_can_run_are_refused_before_ray(tmp_path, data_cache_dir):
    """Depth too deep for the patches, CUDA without GPUs: a ConfigError naming the key, no sweep state."""
    from harness.errors import ConfigError
    from harness.sweep.checks import check_trials_can_run

    # The smoke search spaces reach depth 3: real patches of 36 px (known only once the data is read) do not halve
    # three times.
    smoke = load_benchmark(SMOKE, smoke_overrides(tmp_path, data_cache_dir))
    check_trials_can_run(smoke, 32)
    with pytest.raises(ConfigError, match=r"search_spaces.unet.depth: depth 3 needs patches divisible by 2\*\*3"):
        check_trials_can_run(smoke, 36)
    cuda = load_benchmark(SMOKE, smoke_overrides(tmp_path, data_cache_dir, **{"train.device": "cuda"}))
    with pytest.raises(ConfigError, match="train.device=cuda but resources.gpu is 0"):
        run_sweep(cuda)
    assert not (tmp_path / "storage" / "sweep.json").exists()


def test_a_sweep_with_an_architecture_that_chose_nothing_is_an_error():
    from harness.errors import SweepError
    from harness.sweep.checks import check_every_architecture_chose
    from harness.sweep.result import TrialSummary

    broken = tuple(TrialSummary(f"t{i}", None, TrainConfig(), "error", 0, float("nan"), 0.1) for i in range(3))
    fine = (TrialSummary("ok", None, TrainConfig(), "completed", 4, 0.5, 1.0),)
    results = [
        SweepResult("s-1", "smoke", "unet", "abc", 4, fine[0], fine),
        SweepResult("s-1", "smoke", "unetpp", "abc", 4, None, broken),
    ]
    check_every_architecture_chose(results[:1])
    with pytest.raises(SweepError, match=r"unetpp: none of its 3 trials ran all 4 epochs \({'error': 3}\)"):
        check_every_architecture_chose(results)
