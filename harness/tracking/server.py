"""Checks of a remote MLflow tracking server that a sweep makes before it starts any trial."""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlparse

from mlflow.tracking import MlflowClient

from harness.errors import TrackingError

#: Artifact locations every node can write to without a shared disk.
_REMOTE_ARTIFACT_SCHEMES = ("mlflow-artifacts", "s3", "gs", "wasbs", "abfss", "hdfs", "http", "https")


def _proxy_status(uri: str, timeout: float) -> tuple[int, str]:
    url = uri.rstrip("/") + "/api/2.0/mlflow-artifacts/artifacts?path="
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(300).decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(f"tracking URI {uri} is unreachable: {exc}") from None


def check_artifact_store(uri: str, experiment: str, *, timeout: float = 10.0) -> None:
    """Refuse, before any trial, a tracking server that would not take this sweep's artifacts.

    Local stores (``sqlite:///``, a folder) keep artifacts beside themselves: nothing to check. For an
    ``http(s)`` server the experiment's artifact location decides: ``mlflow-artifacts:`` (the server
    proxies artifacts, ``mlflow server --serve-artifacts``) needs the proxy to answer; a path on the
    server's own disk cannot be written from the driver or the nodes. Nothing is created here.
    """
    if urlparse(uri).scheme not in ("http", "https"):
        return
    exp = MlflowClient(uri).get_experiment_by_name(experiment)
    location = exp.artifact_location if exp is not None else None
    scheme = urlparse(location).scheme if location else None
    if scheme in _REMOTE_ARTIFACT_SCHEMES and scheme != "mlflow-artifacts":
        return  # e.g. s3://: written directly by the client with its own credentials
    status, body = _proxy_status(uri, timeout)
    if status == 200 and (location is None or scheme == "mlflow-artifacts"):
        return
    where = (
        f"experiment {experiment!r} stores artifacts at {location}"
        if location
        else (f"experiment {experiment!r} does not exist yet, so it would get the server's default artifact root")
    )
    if status != 200:
        reason = f"the server does not serve artifacts (HTTP {status} from its artifact proxy: {body.strip()[:160]})"
    else:
        reason = "that is a path on the server's own disk, which neither this driver nor the Ray nodes can write"
    raise TrackingError(
        f"tracking URI {uri}: {reason}; {where}. Run the server with `mlflow server --serve-artifacts "
        "--artifacts-destination s3://…|/path` (artifacts go through the server), or use an experiment whose "
        "artifact location is an object store"
    )


__all__ = ["check_artifact_store"]
