"""A Ray Tune searcher on Optuna's ask/tell, with the study's storage as the single source of truth.

:class:`OptunaStudySearcher` implements Ray's public :class:`ray.tune.search.Searcher` interface and uses
only Optuna's public API:

- ``suggest``: ``study.ask(distributions)``; the Ray trial id is kept as the trial's user attribute
  ``ray_trial_id``, so the study itself says which Optuna trial is which Ray trial;
- ``on_trial_result``: ``trial.report(value, epoch)``, unless the study already shows the trial finished
  (a restored driver may replay results of a trial an earlier driver had already told);
- ``on_trial_complete``: :func:`harness.sweep.sampling.trial_outcome` decides, ``study.tell`` records; an
  ASHA-stopped trial stays PRUNED with its per-epoch values, the stopping epoch's included;
- ``save``/``restore``: *which* study (name and storage) and the Ray trial ids asked so far, never a
  pickle of the study. On restore the study is reconciled with the experiment Tune restores (the two are
  uploaded one after the other, so after a SIGKILL either may be the newer): Optuna trials still RUNNING
  whose Ray trial id the restored experiment does not know (asked just before a driver died) are told
  FAIL; Ray trials the study does not hold are added to it with their configs; trials the restored
  experiment shows finished but the study shows RUNNING are told how they ended;
- links: where the sweep driver registered a function in :data:`TRIAL_LINKS` for the study, what it
  returns for a Ray trial id (its MLflow run id) becomes user attributes of the Optuna trial, set while
  the trial runs (Optuna refuses changes to a finished trial);
- the budget: ``suggest`` returns ``FINISHED`` once the experiment holds ``budget`` trials, counted from the
  trials the restored experiment holds plus those asked since. Tune's own sample counter is saved in a
  file of its own, which after a SIGKILL can be newer than the experiment state it restores (it would
  then stop short of the budget) or older (it would overrun it); the sweep runs Tune with unlimited
  samples and lets this count decide.

An SQLite study file in an object store (``s3://…/optuna.db``) is worked on as a local copy and uploaded
by every ``save``, which Tune calls right before it uploads its own experiment state.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState
from ray.tune import ExperimentAnalysis
from ray.tune.search import Searcher

from harness.sweep.sampling import make_sampler, trial_outcome
from harness.sweep.storage import StudyFile, is_object_store_file

log = logging.getLogger("harness.sweep.searcher")
RAY_TRIAL_ID = "ray_trial_id"
#: Study name -> a function from a Ray trial id to more ids of that trial (e.g. ``{"mlflow_run_id": …}``),
#: registered by the sweep driver in its own process: a function does not pickle with the searcher, and a
#: searcher Tune restores from its experiment is another object than the one the driver built.
TRIAL_LINKS: dict[str, Callable[[str], Mapping[str, str]]] = {}
#: Study name -> {Ray trial id: Optuna trial number} of the searcher working on that study in this
#: process (the driver's MLflow callback tags each trial's run with it); kept up to date by the searcher.
TRIAL_NUMBERS: dict[str, dict[str, int]] = {}


@dataclass(frozen=True)
class RestoredTrial:
    """What the experiment Tune restores says about one of its trials."""

    config: Mapping[str, Any]
    status: str  # Ray's Trial status: PENDING, RUNNING, PAUSED, TERMINATED or ERROR
    last_result: Mapping[str, Any]


class OptunaStudySearcher(Searcher):
    """Ray Tune searcher that asks a persistent Optuna study for configs and tells it how trials ended."""

    def __init__(
        self,
        space: Mapping[str, BaseDistribution],
        *,
        study_name: str,
        storage: str,
        metric: str,
        mode: str = "max",
        sampler: str = "tpe",
        seed: int = 0,
        budget: int = 40,
        device_hours: float | None = None,
        device_units: float = 1.0,
    ) -> None:
        for name, value in (("metric", metric), ("mode", mode)):
            if not isinstance(value, str):
                # Ray's OptunaSearch takes lists for a multi-objective study; this searcher's study has one
                # objective (the architecture's validation IoU), and a list would fail later, mid-sweep.
                raise ValueError(
                    f"OptunaStudySearcher: {name} must be one name (a single-objective study), got {value!r}"
                )
        if mode not in ("max", "min"):
            raise ValueError(f"OptunaStudySearcher: mode must be 'max' or 'min', got {mode!r}")
        super().__init__(metric=metric, mode=mode)
        self.space = dict(space)
        self.study_name = study_name
        #: An RDB URL (``sqlite:///…``, ``postgresql://…``) or an SQLite file in an object store (``s3://…``).
        self.storage = storage
        self.sampler_name, self.seed, self.budget = sampler, seed, budget
        #: A compute budget (None: off): no trial starts once the trials used this many device-hours, each
        #: trial's seconds (Tune's time_total_s) times ``device_units`` (its GPUs, or CPUs on a CPU cluster).
        self.device_hours, self.device_units = device_hours, device_units
        self._seconds: dict[str, float] = {}  # Ray trial id -> the most seconds it reported
        self._suggested: list[str] = []  # Ray trial ids, in the order they were asked for
        self._known: set[str] | None = None  # set by restore(): the ids the restored experiment knows
        self._restored: dict[str, RestoredTrial] = {}  # set by restore(): its trials, where readable
        self._live: set[str] = set()  # the trials of this experiment: restored ones and those asked since
        self._reset()

    def _reset(self) -> None:
        self._study: optuna.Study | None = None
        self._rdb: optuna.storages.BaseStorage | None = None
        self._file: StudyFile | None = None
        self._trials: dict[str, optuna.Trial] = {}
        self._numbers: dict[str, int] = {}
        TRIAL_NUMBERS[self.study_name] = self._numbers
        self._linked: set[str] = set()  # Ray trial ids whose links are set

    # Tune pickles the searcher into its experiment (tuner.pkl) before the first trial: only the
    # settings travel, the connection to the study is made again wherever the driver runs.
    def __getstate__(self) -> dict[str, Any]:
        keep = ("space", "study_name", "storage", "sampler_name", "seed", "budget", "device_hours", "device_units")
        keep += ("_metric", "_mode")
        fresh = {"_suggested": [], "_known": None, "_restored": {}, "_live": set(), "_seconds": {}}
        return {k: self.__dict__[k] for k in keep} | fresh

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- the study ------------------------------------------------------------------------------
    @property
    def study(self) -> optuna.Study:
        """The study, connected on first use (a fresh sweep) or by :meth:`restore`."""
        if self._study is None:
            self._connect()
        assert self._study is not None
        return self._study

    def _connect(self) -> None:
        url = self.storage
        if is_object_store_file(url):
            self._file = StudyFile(url)
            url = self._file.pull()
        self._rdb = optuna.storages.get_storage(url)
        probe = optuna.create_study(
            study_name=self.study_name, storage=self._rdb, direction=self._direction(), load_if_exists=True
        )
        # Reseeded by how many trials the study holds, so a resumed sweep does not draw the same
        # random start-up configurations again, yet two runs of the same history agree.
        sampler = make_sampler(self.sampler_name, self.seed + len(probe.trials), budget=self.budget)
        self._study = optuna.load_study(study_name=self.study_name, storage=self._rdb, sampler=sampler)
        if self._study.metric_names != [self.metric]:
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what the dashboard shows
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._study.set_metric_names([self.metric])
        for frozen in self._study.get_trials(deepcopy=False):
            ray_id = frozen.user_attrs.get(RAY_TRIAL_ID)
            if ray_id is not None:
                self._numbers[ray_id] = frozen.number
        self._fail_orphans()
        self._reconcile_restored()

    def _direction(self) -> str:
        return "maximize" if self._mode == "max" else "minimize"

    def _fail_orphans(self) -> None:
        """Tell FAIL to RUNNING trials no live Tune experiment will ever finish.

        On a restore those are the trials whose Ray id the restored experiment does not know; on a fresh
        experiment (``_known`` is None, so it knows none) every RUNNING trial of the study is one.
        """
        known = self._known or set()
        assert self._study is not None
        for frozen in self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.user_attrs.get(RAY_TRIAL_ID) not in known:
                log.info(
                    "Optuna trial %d (Ray trial %s) was lost with a driver: FAIL",
                    frozen.number,
                    frozen.user_attrs.get(RAY_TRIAL_ID),
                )
                self._study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)

    def _reconcile_restored(self) -> None:
        """Bring the study up to the restored experiment where the experiment is the newer of the two.

        Tune uploads its experiment state in the background after the searcher has pushed the study, and
        may upload a state written after a later push began: a driver killed then leaves an experiment
        that knows a trial the stored study lacks, or shows finished a trial the study shows RUNNING.
        """
        assert self._study is not None
        for ray_id, restored in self._restored.items():
            if ray_id not in self._numbers:
                params = {key: restored.config[key] for key in self.space if key in restored.config}
                if len(params) != len(self.space):
                    log.warning("Ray trial %s lacks searched keys in its config; not added to the study", ray_id)
                    continue
                log.info("Ray trial %s is missing from study %s: added with its config", ray_id, self.study_name)
                self._study.enqueue_trial(params, user_attrs={RAY_TRIAL_ID: ray_id})
                trial = self._study.ask(self.space)
                self._trials[ray_id], self._numbers[ray_id] = trial, trial.number
                self._suggested.append(ray_id)
            if restored.status == "TERMINATED":  # Tune will not report this trial again
                self.on_trial_complete(ray_id, dict(restored.last_result))

    def _trial(self, ray_id: str) -> tuple[optuna.Trial, dict[int, float]] | None:
        """The live Optuna trial of a Ray trial and its reported values; None once the study shows it finished."""
        study = self.study
        number = self._numbers.get(ray_id)
        if number is None:
            log.warning("Ray trial %s is not in study %s; ignored", ray_id, self.study_name)
            return None
        assert self._rdb is not None
        trial_id = self._rdb.get_trial_id_from_study_id_trial_number(
            self._rdb.get_study_id_from_name(self.study_name), number
        )
        frozen = self._rdb.get_trial(trial_id)
        if frozen.state.is_finished():
            return None
        if ray_id not in self._trials:  # a trial asked by an earlier driver
            self._trials[ray_id] = optuna.trial.Trial(study, trial_id)
        return self._trials[ray_id], frozen.intermediate_values

    # -- Ray's Searcher interface ---------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        """Accept Tune's metric/mode only where they agree with ours (the space is given at construction)."""
        return (metric in (None, self._metric)) and (mode in (None, self._mode))

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """Ask the study for a configuration and record the Ray trial id on the new Optuna trial.

        Returns ``Searcher.FINISHED`` once the experiment holds ``budget`` trials.
        """
        if len(self._live) >= self.budget:
            return Searcher.FINISHED
        if self.device_hours is not None and self.spent_device_hours() >= self.device_hours:
            log.info(
                "%s: %.3f of %g device-hours used: no more trials",
                self.study_name,
                self.spent_device_hours(),
                self.device_hours,
            )
            return Searcher.FINISHED
        trial = self.study.ask(self.space)
        trial.set_user_attr(RAY_TRIAL_ID, trial_id)
        self._trials[trial_id] = trial
        self._numbers[trial_id] = trial.number
        self._suggested.append(trial_id)
        self._live.add(trial_id)
        return dict(trial.params)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Report one epoch's metric as an intermediate value (step = epoch)."""
        self._report(trial_id, result)

    def spent_device_hours(self) -> float:
        """Device-hours the experiment's trials have used so far (the ones still running count as far as they got)."""
        return sum(self._seconds.values()) * self.device_units / 3600.0

    def _count_seconds(self, trial_id: str, result: Mapping[str, Any] | None) -> None:
        seconds = (result or {}).get("time_total_s")
        if seconds is not None and math.isfinite(float(seconds)):
            self._seconds[trial_id] = max(self._seconds.get(trial_id, 0.0), float(seconds))

    def _report(self, trial_id: str, result: Mapping[str, Any] | None) -> None:
        self._count_seconds(trial_id, result)
        value = (result or {}).get(self.metric)
        step = (result or {}).get("training_iteration")
        if value is None or step is None or not math.isfinite(float(value)):
            return  # a diverged epoch's NaN would become a pruned trial's value for TPE
        live = self._trial(trial_id)
        if live is None:
            return
        self._link(trial_id, live[0])
        # A resumed trial repeats the epochs after its checkpoint: keep the first value of each.
        if int(step) not in live[1]:
            live[0].report(float(value), int(step))

    def _link(self, trial_id: str, trial: optuna.Trial) -> None:
        """Set the trial's links (:data:`TRIAL_LINKS`) as user attributes, once they are known."""
        links = TRIAL_LINKS.get(self.study_name)
        if trial_id in self._linked or links is None:
            return
        found = links(trial_id)
        for key, value in found.items():
            trial.set_user_attr(key, value)
        if found:
            self._linked.add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell the study how the trial ended (:func:`harness.sweep.sampling.trial_outcome`), once."""
        # Tune hands the result on which ASHA stopped a trial only to this method, not to
        # on_trial_result: report it first, so a pruned trial keeps its value at the stopping epoch.
        if not error:
            self._report(trial_id, result)
        live = self._trial(trial_id)
        if live is None:
            return
        self._link(trial_id, live[0])
        state, value = trial_outcome(result, metric=self.metric, error=error)
        self.study.tell(self._numbers[trial_id], value, state=state, skip_if_finished=True)

    def save(self, checkpoint_path: str) -> None:
        """Record which study this is and the Ray trials asked so far; upload an object-store study file."""
        if self._file is not None:
            self._file.push()
        state = {"study_name": self.study_name, "storage": self.storage, "ray_trial_ids": list(self._suggested)}
        state["trial_seconds"] = dict(self._seconds)
        with open(checkpoint_path, "w") as f:
            json.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        """Reconnect to the saved study and fail the RUNNING trials the restored experiment does not know."""
        with open(checkpoint_path, "rb") as f:
            state = load_state(f.read())
        self.study_name, self.storage = state["study_name"], state["storage"]
        self._suggested = list(state["ray_trial_ids"])
        self._seconds = {k: float(v) for k, v in state.get("trial_seconds", {}).items()}
        self._restored = restored_trials(os.path.dirname(checkpoint_path)) or {}
        self._known = set(self._restored) or set(self._suggested)
        self._live = set(self._known)
        for ray_id, restored in self._restored.items():  # the experiment may be newer than the saved seconds
            self._count_seconds(ray_id, restored.last_result)
        self._seconds = {k: v for k, v in self._seconds.items() if k in self._live}
        self._reset()
        self._connect()


def load_state(data: bytes) -> dict[str, Any]:
    """A saved searcher state (what :meth:`OptunaStudySearcher.save` writes); ValueError when it is not one."""
    state = json.loads(data.decode())
    missing = sorted({"study_name", "storage", "ray_trial_ids"} - set(state if isinstance(state, dict) else {}))
    if missing:
        raise ValueError(f"not a searcher state: no {', '.join(missing)}")
    return state


def restored_trials(experiment_dir: str) -> dict[str, RestoredTrial] | None:
    """The trials of the experiment state Tune restores from ``experiment_dir``, by Ray id (None if unreadable).

    Tune saves its experiment state and this searcher's state side by side, but copies them to the storage
    one after the other: after a SIGKILL either may be the newer one. What Tune resumes is its experiment
    state, so that (read with Ray's public :class:`~ray.tune.ExperimentAnalysis`) says which trials exist.
    """
    try:
        return {
            trial.trial_id: RestoredTrial(dict(trial.config), str(trial.status), dict(trial.last_result or {}))
            for trial in ExperimentAnalysis(experiment_dir).trials
        }
    except Exception as exc:  # no state there: fall back to the ids this searcher saved
        log.warning(
            "could not read the restored experiment in %s (%s); using the searcher's saved ids", experiment_dir, exc
        )
        return None
