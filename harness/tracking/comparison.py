"""The final comparison's record: one ``final_compare`` run with a nested run per retrain.

Each retrain run holds its config as params, its per-epoch curves (step = epoch), its test metrics, its
``retrain/`` folder (what a re-run reuses) and the retrained network as an MLflow model
(``mlflow.pytorch.log_model``: signature, a 4-band input example, optionally registered). The parent
run holds the comparison's summary metrics, the results directory and the report.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param

from harness.tracking.store import (
    PARENT_TAG,
    ROLE_FINAL,
    client_for,
    find_runs,
    get_or_create_experiment,
    resolve_uri,
    retry,
    standard_tags,
)

ROLE_RETRAIN = "final_retrain"
#: Per-epoch keys of a retrain's history logged as curves.
CURVE_METRICS = ("train_loss", "val_loss", "val_accuracy", "val_iou", "epoch_seconds", "train_images_per_second")
#: The retrain tags a logged model carries (what identifies it outside its run).
MODEL_TAGS = ("arch", "seed", "sweep_id", "split_hash", "data_hash")


def _param_value(value: Any) -> str:
    return str(value)[:6000]  # MLflow's limit on a param value


def _metrics(values: Mapping[str, Any], step: int, ts: int) -> list[Metric]:
    out = []
    for key, value in values.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value)):
            out.append(Metric(key, float(value), ts, step))
    return out


class ComparisonRecorder:
    """Writes one final comparison to MLflow: the parent run first, then each retrain under it."""

    def __init__(self, uri: str, experiment: str, *, sweep_id: str, tags: Mapping[str, str]) -> None:
        """Describe the comparison; nothing is written before :meth:`start`."""
        self.uri = resolve_uri(uri)
        self.experiment = experiment
        self.sweep_id = sweep_id
        self.tags = {**tags, "role": ROLE_FINAL, "final_compare": "true", "sweep_id": sweep_id}
        self.client = client_for(self.uri)
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self._open_retrains: set[str] = set()  # retrain runs created and not ended yet

    def start(self, params: Mapping[str, Any]) -> str:
        """Create the ``final_compare`` run (RUNNING until :meth:`finish`); returns its id."""
        self.experiment_id = get_or_create_experiment(self.client, self.experiment, self.uri)
        run = self.client.create_run(
            self.experiment_id, run_name=f"final_compare/{self.sweep_id}", tags=standard_tags(self.tags)
        )
        self.run_id = run.info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, _param_value(v)) for k, v in params.items()])
        return self.run_id

    def finished_retrain(self, tags: Mapping[str, str]) -> str | None:
        """The run id of a finished retrain with exactly these tags (from any earlier comparison), or None."""
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return None
        runs = [r for r in find_runs(self.client, experiment.experiment_id, tags) if r.info.status == "FINISHED"]
        return runs[-1].info.run_id if runs else None

    def open_retrain(self, *, run_name: str, tags: Mapping[str, str]) -> str:
        """Create a retrain's run under the comparison (RUNNING) before it trains; returns its id.

        The run exists while the retrain runs, so the process doing it can log its machine's system
        metrics there (:func:`~harness.tracking.system.system_metrics`, finding it by :meth:`retrain_tags`).
        """
        tags = self.retrain_tags(tags)
        run = retry(
            lambda: self.client.create_run(self.experiment_id, run_name=run_name, tags=standard_tags(tags)),
            what="retrain run",
        )
        self._open_retrains.add(run.info.run_id)
        return run.info.run_id

    def retrain_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        """The tags a retrain's run carries: ``tags`` plus its role and this comparison as its parent."""
        return {**tags, "role": ROLE_RETRAIN, PARENT_TAG: self.run_id}

    def log_retrain(
        self,
        *,
        run_name: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
        history: list[Mapping[str, Any]],
        test_metrics: Mapping[str, float],
        artifacts_dir: str | Path,
        model: Any = None,
        input_example: Any = None,
        registered_model_name: str | None = None,
        run_id: str | None = None,
        model_metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """One retrain as a run nested under the comparison (``run_id``: the one :meth:`open_retrain` made)."""
        tags = self.retrain_tags(tags)
        run_id = run_id or self.open_retrain(run_name=run_name, tags=tags)
        ts = int(time.time() * 1000)
        metrics = [m for entry in history for m in _metrics(_curve(entry), int(entry["epoch"]), ts)]
        metrics += _metrics(test_metrics, 0, ts)
        params_list = [Param(k, _param_value(v)) for k, v in params.items()]
        retry(lambda: self.client.log_batch(run_id, metrics=metrics, params=params_list), what="retrain metrics")
        retry(lambda: self.client.log_artifacts(run_id, str(artifacts_dir)), what="retrain artifacts")
        if model is not None:
            name = run_name.replace("/", "-")  # "unet-seed1": the Models tab lists logged models by name
            self._log_model(run_id, name, model, input_example, registered_model_name, tags, model_metadata)
        self.client.set_terminated(run_id, "FINISHED")
        self._open_retrains.discard(run_id)
        return run_id

    def _log_model(
        self,
        run_id: str,
        name: str,
        model: Any,
        input_example: Any,
        registered_model_name: str | None,
        tags: Mapping[str, str],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        import mlflow
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        model = model.float().eval().to(memory_format=torch.contiguous_format)
        with torch.inference_mode():
            output = model(torch.from_numpy(input_example)).numpy()
        # Fully convolutional: any batch and any height and width (divisible by 2**depth), 4 bands in.
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, input_example.shape[1], -1, -1))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, output.shape[1], -1, -1))]),
        )
        mlflow.set_tracking_uri(self.uri)
        # The fluent API is how MLflow logs a model to a run; the run already exists and stays ours to end.
        with mlflow.start_run(run_id=run_id, nested=True):
            mlflow.pytorch.log_model(
                model,
                name=name,
                tags={k: str(v) for k, v in tags.items() if k in MODEL_TAGS},
                signature=signature,
                input_example=input_example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                registered_model_name=registered_model_name,
                metadata=dict(metadata or {}),
            )

    def register_model(self, run_id: str, model_name: str, registered_name: str, tags: Mapping[str, str]) -> str:
        """Register the model ``model_name`` logged in run ``run_id`` as a new version of ``registered_name``.

        Returns its ``models:/<registered_name>/<version>`` URI; ``tags`` become the version's tags.
        """
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        version = retry(
            lambda: mlflow.register_model(f"runs:/{run_id}/{model_name}", registered_name, tags=dict(tags)),
            what=f"registered model {registered_name}",
        )
        return f"models:/{registered_name}/{version.version}"

    def finish(
        self, *, metrics: Mapping[str, float], artifacts_dir: str | Path, tags: Mapping[str, str] | None = None
    ) -> None:
        """Attach the results directory, the summary metrics and ``tags`` (the verdict), and end the run FINISHED."""
        ts = int(time.time() * 1000)
        retry(lambda: self.client.log_batch(self.run_id, metrics=_metrics(metrics, 0, ts)), what="summary metrics")
        for key, value in (tags or {}).items():
            retry(lambda k=key, v=value: self.client.set_tag(self.run_id, k, str(v)), what=f"tag {key}")
        retry(lambda: self.client.log_artifacts(self.run_id, str(artifacts_dir)), what="results directory")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self) -> None:
        """End the run FAILED, and every retrain run still open (a failed comparison is never taken as a result)."""
        for run_id in sorted(self._open_retrains):
            with contextlib.suppress(Exception):  # the comparison's own status matters more
                self.client.set_terminated(run_id, "FAILED")
        self._open_retrains.clear()
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, "FAILED")


def _curve(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in CURVE_METRICS}
