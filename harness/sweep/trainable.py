"""The Tune function trainable of a sweep: one configuration, fitted, reporting every epoch with a checkpoint.

It runs in a Ray worker. The configuration crosses the Tune boundary flat and is read back typed
(:func:`harness.config.from_flat`); :func:`harness.training.loop.fit` does the training and knows nothing of Ray,
so this module is the adapter between the two: epochs become Tune reports (with ``training_iteration =
epoch``), Tune's checkpoint becomes ``fit``'s resume folder, and a configuration that cannot run ends as
a result rather than an exception Tune would retry.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from ray import tune

from harness.cluster import assigned_device, cap_gpu_memory, data_on_node
from harness.config import from_flat
from harness.data.prepare import PreparedData
from harness.tracking import ROLE_TRIAL, system_metrics

METRIC = "val_iou"  # what each epoch reports, what the searcher and ASHA maximise


def train_trial(
    config: dict[str, Any], data: PreparedData, prepare_args: dict[str, Any], run: dict[str, Any] | None = None
) -> None:
    """A Tune function trainable: fit one configuration, reporting every epoch with a checkpoint.

    ``run`` (tracking URI, experiment, sweep id, architecture, sampling interval) lets the trial log its
    machine's system metrics to its MLflow run, which the driver creates.
    """
    if not (run or {}).get("verbose"):
        # Ray Train logs "Checkpoint successfully created at: <path>" at every epoch of every trial.
        logging.getLogger("ray.train").setLevel(logging.WARNING)
    if run is None:
        _train_trial(config, data, prepare_args)
        return
    tags = {"role": ROLE_TRIAL, "sweep_id": run["sweep_id"], "arch": run["arch"]}
    tags["trial_id"] = tune.get_context().get_trial_id()
    with system_metrics(run["uri"], run["experiment"], tags, interval_s=run["interval_s"]):
        _train_trial(config, data, prepare_args)


def _train_trial(config: dict[str, Any], data: PreparedData, prepare_args: dict[str, Any]) -> None:
    from harness.training import loop as train  # imported in the worker; the loop knows nothing of Ray

    data = data_on_node(data, prepare_args)
    train_config = from_flat(config)
    # "auto" in a trial given no GPU is the CPU, also on a GPU node (see harness.cluster.device_for_task).
    train_config = dataclasses.replace(train_config, device=assigned_device(train_config.device))
    cap_gpu_memory()  # a fraction of a GPU is a fraction of its memory too
    first_epoch: list[int] = []

    def report(metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        # restored_at_epoch: the checkpointed epoch this run of the trial resumed from (0 = fresh),
        # so a retried trial shows it did not start again from scratch.
        if not first_epoch:
            first_epoch.append(int(metrics["epoch"]))
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        # training_iteration = epoch, also after a restore from a checkpoint newer than the one Tune's state
        # names (see harness.sweep.resume.recover_lost_checkpoints): the scheduler and Optuna count epochs,
        # not reports.
        extra = {"restored_at_epoch": first_epoch[0] - 1, "training_iteration": int(metrics["epoch"])}
        tune.report({**metrics, **extra}, checkpoint=checkpoint)

    checkpoint = tune.get_checkpoint()
    try:
        if checkpoint is None:
            train.fit(train_config, data, report)
        else:
            with checkpoint.as_directory() as resume_dir:
                train.fit(train_config, data, report, checkpoint_dir=resume_dir)
    except ValueError as exc:  # ConfigError, DatasetError, a model that cannot take the patches: it would recur
        # Ended as a result, not raised: Tune retries every raised error max_failures times, and a retry
        # of the same configuration on the same data fails the same way. The trial is FAIL in Optuna and
        # FAILED in MLflow with the message (stopped_by "error").
        tune.report({"epoch": 0, METRIC: math.nan, "status": "error", "error": f"{type(exc).__name__}: {exc}"})
