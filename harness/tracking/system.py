"""System metrics of a run, logged from the process that does the work (a trial on its Ray worker).

MLflow's :class:`~mlflow.system_metrics.system_metrics_monitor.SystemMetricsMonitor` samples CPU, memory,
disk and network (and GPU utilisation and memory when ``nvidia-ml-py`` is installed) every few seconds and
logs them as ``system/*`` metrics. The sweep creates a trial's run on the driver, so the trial finds it
by its tags, in a background thread that never delays training and gives up quietly: system metrics
are a convenience, never a reason to fail a trial.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping

from harness.tracking.store import client_for, find_runs

log = logging.getLogger("harness.tracking.system")


@contextlib.contextmanager
def system_metrics(
    uri: str, experiment: str, tags: Mapping[str, str], *, interval_s: float, wait_s: float = 120.0
) -> Iterator[None]:
    """Log this machine's system metrics to the run with ``tags`` while the block runs (``interval_s`` 0: off)."""
    if interval_s <= 0:
        yield
        return
    done = threading.Event()
    monitor: list = []

    def attach() -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # Its start/stop INFO lines would print twice per trial into the sweep's console.
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)

        try:
            client = client_for(uri)
            exp = client.get_experiment_by_name(experiment)
            waited = 0.0
            while exp is not None and not done.is_set() and waited < wait_s:
                runs = find_runs(client, exp.experiment_id, dict(tags))
                if runs:
                    found = SystemMetricsMonitor(
                        runs[-1].info.run_id, sampling_interval=interval_s, resume_logging=True, tracking_uri=uri
                    )
                    found.start()
                    monitor.append(found)
                    return
                done.wait(1.0)
                waited += 1.0
        except Exception as exc:
            log.info("no system metrics for run %s: %s", dict(tags), exc)

    thread = threading.Thread(target=attach, name="system-metrics", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=10)
        for found in monitor:
            with contextlib.suppress(Exception):
                found.finish()
