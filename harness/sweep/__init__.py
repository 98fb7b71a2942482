"""The sweep stage: one Ray Tune run per architecture, same budget, Optuna TPE + ASHA, every trial in MLflow.

Modules, from the command to the contract it hands the comparison:

* :mod:`~harness.sweep.driver`: :func:`run_sweep`, the checks before any compute, one Tuner per architecture;
* :mod:`~harness.sweep.trainable`: the Tune trainable around :func:`harness.training.loop.fit`;
* :mod:`~harness.sweep.searcher`: Ray's ``Searcher`` on an Optuna study (ask/tell), the study as the record;
* :mod:`~harness.sweep.sampling`: search spaces as Optuna distributions, samplers, trial outcomes;
* :mod:`~harness.sweep.checks`, :mod:`~harness.sweep.resume`, :mod:`~harness.sweep.signals`: what is
  refused before a sweep starts, what a ``--resume`` restores, how Ctrl-C / SIGTERM stop it;
* :mod:`~harness.sweep.storage`: the sweep storage (a folder, a shared path, ``s3://`` or ``gs://``);
* :mod:`~harness.sweep.result`: :class:`SweepResult`, the sweep -> compare contract.

Importing this package loads neither ray, nor optuna, nor mlflow: the names below are imported from
their modules on first use (as optuna's facades do), so ``from harness.sweep import SweepResult`` stays light.
``python -m harness.sweep`` is ``cloudmask sweep``.
"""

from __future__ import annotations

from harness import lazy_exports

_EXPORTS = {
    "run_sweep": "harness.sweep.driver",
    "run_architecture": "harness.sweep.driver",
    "SweepResult": "harness.sweep.result",
    "TrialSummary": "harness.sweep.result",
    "select_best": "harness.sweep.result",
    "SWEEP_RESULT_FILE": "harness.sweep.result",
    "SweepStorage": "harness.sweep.storage",
    "SweepError": "harness.errors",
    "StorageError": "harness.errors",
    "SweepInterrupted": "harness.errors",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("harness.sweep", _EXPORTS)
