"""The sweep's one decision: select_best, and a SweepResult that round-trips typed."""

import json
import math

import pytest

from harness.config import TrainConfig
from harness.sweep.result import SweepResult, TrialSummary, select_best


def trial(trial_id: str, stopped_by: str, epochs: int, val_iou: float, lr: float = 1e-3) -> TrialSummary:
    return TrialSummary(trial_id, f"run-{trial_id}", TrainConfig(lr=lr), stopped_by, epochs, val_iou, 1.5)


TRIALS = (
    trial("a", "asha", 2, 0.95),  # stopped early: its score is of a shorter training
    trial("b", "completed", 4, 0.80),
    trial("c", "completed", 4, 0.85, lr=1e-5),
    trial("d", "diverged", 3, math.nan),
    trial("e", "completed", 4, math.nan),
    trial("f", "error", 1, 0.99),
)


def test_select_best_takes_the_best_trial_that_ran_every_epoch():
    assert select_best(TRIALS, 4).trial_id == "c"
    assert select_best(TRIALS[:1], 4) is None
    # A trial that completed a shorter schedule does not count for a longer one.
    assert select_best(TRIALS, 5) is None


def test_ties_do_not_depend_on_order():
    tied = (trial("z", "completed", 4, 0.9), trial("y", "completed", 4, 0.9))
    assert select_best(tied, 4).trial_id == select_best(tied[::-1], 4).trial_id == "y"


def test_sweep_result_round_trips_through_json():
    result = SweepResult("s-1", "smoke", "unet", "abc", 4, select_best(TRIALS, 4), TRIALS, "d" * 64)
    back = SweepResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.best_config == TrainConfig(lr=1e-5) and type(back.best_config.lr) is float
    assert back.best.trial_id == "c" and len(back.trials) == len(TRIALS)
    assert [t.stopped_by for t in back.trials] == [t.stopped_by for t in TRIALS]
    assert back.data_hash == "d" * 64
    # A result written before the data hash existed reads back without one (compared on its split alone).
    old = {k: v for k, v in result.to_dict().items() if k != "data_hash"}
    assert SweepResult.from_dict(old).data_hash is None


def test_a_sweep_without_a_full_trial_refuses_to_name_a_config():
    result = SweepResult("s-1", "smoke", "unet", "abc", 4, None, TRIALS[:1])
    back = SweepResult.from_dict(json.loads(json.dumps(result.to_dict())))
    with pytest.raises(ValueError, match="no trial ran all 4 epochs"):
        _ = back.best_config
    with pytest.raises(ValueError, match="format"):
        SweepResult.from_dict({**result.to_dict(), "format": 99})
