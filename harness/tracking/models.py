"""Logged models read back: the network of an MLflow model URI and the metadata logged with it.

``runs:/<run id>/<name>`` and ``models:/<registered name>/<version>`` resolve against ``uri`` (the tracking
store); the retrains of ``cloudmask compare`` log their preprocessing and training config as the model's
metadata (``mlflow.pytorch.log_model(metadata=...)``), which ``cloudmask predict`` needs.
"""

from __future__ import annotations

from typing import Any

from harness.errors import InputError
from harness.tracking.store import resolve_uri

#: Model URI schemes MLflow resolves through a tracking store.
MODEL_URI_SCHEMES = ("runs:/", "models:/")


def is_model_uri(text: str) -> bool:
    """True for an MLflow model URI (``runs:/…``, ``models:/…``)."""
    return text.startswith(MODEL_URI_SCHEMES)


def load_logged_model(model_uri: str, tracking_uri: str, map_location: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(the torch module, its logged metadata) of ``model_uri``; InputError naming it when MLflow cannot load it."""
    import mlflow
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(resolve_uri(tracking_uri))
    try:
        info = mlflow.models.get_model_info(model_uri)
        model = mlflow.pytorch.load_model(model_uri, map_location=map_location)
    except (MlflowException, OSError) as exc:
        raise InputError(f"--model {model_uri}: MLflow cannot load it from {tracking_uri}: {exc}") from None
    return model, dict(info.metadata or {})


__all__ = ["MODEL_URI_SCHEMES", "is_model_uri", "load_logged_model"]
