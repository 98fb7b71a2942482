"""A searcher replayed over a recorded pool: Optuna TPE or random search, with or without ASHA, no training.

When a search space is finite (every entry categorical) and every configuration in it has been trained
once with its per-epoch validation IoU kept, a sweep that runs one trial at a time
(``search.max_concurrent: 1``) is a deterministic function of the searcher's seed: the same questions to
Optuna, the same curves back, the same ASHA decisions. :func:`replay_search` replays it exactly, in the
order the sweep's searcher (:class:`harness.sweep.searcher.OptunaStudySearcher`) and Tune's ASHA do it;
``tests/audit/test_asha_replay.py`` checks it against a real Tune run, and ``benchmarks/perf/search_efficiency.py``
uses it to compare TPE + ASHA, TPE, ASHA and random search over many seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.audit.asha_replay import AshaReplay


def config_key(params: Mapping[str, object]) -> str:
    """The key of a configuration in a recorded pool: its sampled parameters as sorted JSON."""
    return json.dumps(dict(params), sort_keys=True)


@dataclass(frozen=True)
class SearchRun:
    """One replayed sweep: configurations in the order asked, epochs each ran, and what it found."""

    keys: tuple[str, ...]
    epochs: tuple[int, ...]
    #: Best last-epoch IoU among trials that ran every epoch (``select_best``'s rule); NaN if none.
    best: float
    #: (epochs spent when each trial ended, best so far): the sweep's progress, one trial at a time.
    trace: tuple[tuple[int, float], ...]

    def best_within(self, epoch_budget: int) -> float:
        """Best final IoU among trials that ended within ``epoch_budget`` epochs in all; NaN if none."""
        values = [best for spent, best in self.trace if spent <= epoch_budget and math.isfinite(best)]
        return values[-1] if values else math.nan


def replay_search(
    pool: Mapping[str, Sequence[float]],
    *,
    space: Mapping[str, Sequence[object]],
    sampler: str,
    seed: int,
    trials: int,
    asha: tuple[float, float] | None,
    max_epochs: int,
    budget: int | None = None,
    startup_trials: int | None = None,
) -> SearchRun:
    """Replay a seeded Optuna sampler (``tpe`` or ``random``), one trial at a time, over recorded curves.

    What the sweep's searcher does, in the same order: ask the study for a configuration from the
    categorical ``space``; report each epoch's finite IoU (step = epoch); stop where ASHA ``(grace period,
    reduction factor)`` says (None: run to the end); tell Optuna COMPLETE, PRUNED or FAIL by
    :func:`harness.sweep.sampling.trial_outcome`. The sampler is :func:`harness.sweep.sampling.make_sampler` with
    ``budget`` (default ``trials``), or TPE with ``startup_trials`` random start-up trials when given.
    ``pool`` maps :func:`config_key` of every configuration in ``space`` to its per-epoch IoU (a curve
    shorter than ``max_epochs`` diverged).
    """
    import optuna
    from optuna.distributions import CategoricalDistribution

    from harness.sweep.sampling import make_sampler, trial_outcome

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if startup_trials is not None and sampler == "tpe":
        chosen = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)
    else:
        chosen = make_sampler(sampler, seed, budget=budget or trials)
    study = optuna.create_study(direction="maximize", sampler=chosen)
    dists = {k: CategoricalDistribution(list(v)) for k, v in space.items()}
    scheduler = AshaReplay(asha[0], asha[1], max_epochs) if asha else None
    keys, epochs, trace, spent, best = [], [], [], 0, math.nan
    for number in range(trials):
        trial = study.ask(dists)
        key = config_key(trial.params)
        curve = pool[key]
        for e in range(1, len(curve) + 1):
            value = float(curve[e - 1])
            if math.isfinite(value):
                trial.report(value, e)
            stop = scheduler.on_result(str(number), e, value) if scheduler else e >= max_epochs
            if stop or e == len(curve):
                break
        if scheduler:
            scheduler.on_complete(str(number), e, value)
        completed = e >= max_epochs and math.isfinite(value)
        status = "completed" if completed else "diverged" if e == len(curve) else "running"
        state, told = trial_outcome({"status": status, "val_iou": value}, metric="val_iou", error=False)
        study.tell(trial, told, state=state)
        if completed and (math.isnan(best) or value > best):
            best = value
        keys.append(key)
        epochs.append(e)
        spent += e
        trace.append((spent, best))
    return SearchRun(tuple(keys), tuple(epochs), best, tuple(trace))
