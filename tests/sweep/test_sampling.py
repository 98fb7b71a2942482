"""Search spaces -> Optuna distributions, and what a finished trial is told to Optuna."""

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from harness.config.search_spaces import load_search_space
from harness.errors import SearchSpaceError
from harness.sweep.sampling import (
    make_sampler,
    stopped_by,
    to_optuna,
    tpe_startup_trials,
    trial_outcome,
)


def test_space_converts_to_optuna_distributions():
    space = load_search_space(
        {
            "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
            "depth": {"type": "int", "low": 2, "high": 4},
            "loss": {"type": "categorical", "choices": ["ce", "dice"]},
            "weight_decay": {"type": "uniform", "low": 0.0, "high": 0.1, "step": 0.05},
            "norm": "batch",
        }
    )
    d = to_optuna(space)
    assert d["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["depth"] == IntDistribution(2, 4)
    assert d["loss"] == CategoricalDistribution(["ce", "dice"])
    assert d["weight_decay"] == FloatDistribution(0.0, 0.1, step=0.05)
    assert d["norm"] == CategoricalDistribution(["batch"])


def test_scientific_notation_strings_are_numbers():
    space = load_search_space({"lr": {"type": "loguniform", "low": "1e-4", "high": "1e-2"}})
    assert space["lr"]["low"] == pytest.approx(1e-4)


def test_shipped_space_files_load():
    for arch in ("unet", "unetpp"):
        space = load_search_space(f"search_spaces/{arch}.yaml")
        assert {"lr", "depth"} <= set(space)
        assert space["lr"]["log"] is True


def test_allowed_keys_and_patch_size_are_enforced():
    with pytest.raises(SearchSpaceError, match="colour"):
        load_search_space({"colour": {"type": "categorical", "choices": [1]}}, allowed_keys=["lr"])
    with pytest.raises(SearchSpaceError, match="2\\*\\*3"):
        load_search_space({"depth": {"type": "int", "low": 1, "high": 3}}, patch_size=36)


@pytest.mark.parametrize(
    ("result", "error", "state", "value", "tag"),
    [
        ({"status": "completed", "val_iou": 0.8}, False, TrialState.COMPLETE, 0.8, "completed"),
        ({"status": "running", "val_iou": 0.3}, False, TrialState.PRUNED, None, "asha"),
        ({"status": "diverged", "val_iou": float("nan")}, False, TrialState.FAIL, None, "diverged"),
        ({"status": "running", "val_iou": 0.3}, True, TrialState.FAIL, None, "error"),
        ({"status": "error", "val_iou": float("nan"), "error": "ValueError: …"}, False, TrialState.FAIL, None, "error"),
        (None, False, TrialState.PRUNED, None, "asha"),
    ],
)
def test_trial_outcome(result, error, state, value, tag):
    assert trial_outcome(result, metric="val_iou", error=error) == (state, value)
    assert stopped_by(result, error=error) == tag


def test_pruned_trial_keeps_intermediate_values_in_optuna():
    """Telling a study PRUNED (as the sweep's searcher does) keeps the per-epoch values TPE uses."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    trial = study.ask({"lr": FloatDistribution(1e-4, 1e-2, log=True)})
    trial.report(0.2, 1)
    state, value = trial_outcome({"status": "running", "val_iou": 0.2}, metric="val_iou", error=False)
    study.tell(trial, value, state=state)
    frozen = study.trials[0]
    assert frozen.state == TrialState.PRUNED and frozen.intermediate_values == {1: 0.2}


def test_tpe_leaves_random_start_up_within_a_small_budget():
    assert tpe_startup_trials(8) == 4 and tpe_startup_trials(32) == 8 and tpe_startup_trials(400) == 10
    sampler = make_sampler("tpe", 0, budget=8)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert isinstance(make_sampler("random", 0), optuna.samplers.RandomSampler)


@pytest.mark.parametrize(
    ("ray_domain", "entry"),
    [
        (lambda tune: tune.randint(1, 4), {"type": "randint", "lower": 1, "upper": 4}),
        (lambda tune: tune.qrandint(2, 8, 2), {"type": "qrandint", "lower": 2, "upper": 8, "q": 2}),
        (lambda tune: tune.lograndint(1, 64), {"type": "lograndint", "lower": 1, "upper": 64}),
        (
            lambda tune: tune.quniform(0.0, 0.001, 0.00025),
            {"type": "quniform", "lower": 0.0, "upper": 0.001, "q": 0.00025},
        ),
        (lambda tune: tune.choice([4, 8, 16]), {"type": "choice", "categories": [4, 8, 16]}),
    ],
)
def test_a_ray_word_becomes_the_optuna_distribution_with_the_support_ray_samples(ray_domain, entry):
    from ray import tune

    from harness.config.search_spaces import load_search_space

    drawn = ray_domain(tune).sample(size=4000, random_state=0)  # Ray's own sampler
    dist = to_optuna(load_search_space({"key": entry}))["key"]
    if isinstance(dist, CategoricalDistribution):
        assert set(dist.choices) == set(drawn)
        return
    # Optuna's support: low + k * step up to high (every int for step 1); Ray's draws must fill it exactly.
    step = dist.step or 1
    support = {round(dist.low + k * step, 10) for k in range(round((dist.high - dist.low) / step) + 1)}
    if isinstance(dist, IntDistribution) and dist.log:
        assert dist.log and (dist.low, dist.high) == (min(drawn), max(drawn)) == (1, 63)
        return
    assert {round(float(x), 10) for x in drawn} == support
