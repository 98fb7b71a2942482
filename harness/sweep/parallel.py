"""Architectures' Tuners side by side: one driver process per architecture, all on the same Ray cluster.

One Tuner's trials are capped at ``search.max_concurrent``; on a cluster with more devices than that, a
sweep that runs its architectures one after another leaves the rest idle. With
``search.parallel_architectures`` > 1, :func:`run_side_by_side` starts that many architectures at once,
each as its own Ray driver (``python -m harness.sweep.architecture_process``), the way Ray runs several
jobs on one cluster: every Tune experiment keeps its own controller, searcher, ASHA scheduler, signal
handling and MLflow callback, exactly as in a sequential sweep, so the budget and the results do not
depend on the setting. Each process connects to this driver's Ray instance (its token travels in the
environment), writes its :class:`~harness.sweep.result.SweepResult` or its error to a file of its own,
and ends when its parent does (Linux: the kernel sends it SIGTERM, Tune's graceful stop).

A stop signal reaching this driver goes once to every running architecture (the processes run in
sessions of their own, so a terminal's Ctrl-C is not delivered twice, which would skip the graceful
stop); no new architecture starts after it. ``benchmarks/perf/RESULTS.md`` measures when it pays.
"""

from __future__ import annotations

import ctypes
import logging
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import errors
from harness.console import verbosity
from harness.diskspace import write_atomically
from harness.errors import SweepError, SweepInterrupted
from harness.sweep.result import SweepResult

log = logging.getLogger("harness.sweep")

#: The module each architecture's driver process runs.
PROCESS_MODULE = "harness.sweep.architecture_process"
_POLL_S = 0.2


def _end_with_parent() -> None:
    """In the child, before exec: have the kernel send SIGTERM when the parent dies (Linux prctl)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the private Ray instance's watchdog still ends the process with it
        pass


def _launch(payload: dict[str, Any], folder: Path) -> tuple[subprocess.Popen, Path]:
    path = folder / f"{payload['arch']}.payload"
    write_atomically(path, pickle.dumps(payload))
    process = subprocess.Popen(
        [sys.executable, "-m", PROCESS_MODULE, str(path)],
        start_new_session=True,
        preexec_fn=_end_with_parent if sys.platform.startswith("linux") else None,
    )
    return process, path.with_suffix(".outcome")


def write_outcome(path: Path, *, result: SweepResult | None = None, error: BaseException | None = None) -> None:
    """What an architecture's process hands back: its result, or its error as (class name, message, signum)."""
    outcome: dict[str, Any] = {"result": result}
    if error is not None:
        outcome["error"] = (type(error).__name__, str(error), getattr(error, "signum", None))
    write_atomically(path, pickle.dumps(outcome))


def _read_outcome(arch: str, process: subprocess.Popen, path: Path) -> SweepResult | BaseException:
    if not path.is_file():
        return SweepError(
            f"{arch}: its driver process ended with exit code {process.returncode} and no result "
            "(its output above says why); the sweep's state is saved: continue it with --resume"
        )
    outcome = pickle.loads(path.read_bytes())
    if "error" not in outcome:
        return outcome["result"]
    name, message, signum = outcome["error"]
    if name == "SweepInterrupted":
        return SweepInterrupted(message, signum)
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.HarnessError) and cls is not SweepInterrupted:
        return cls(message)
    return SweepError(f"{arch}: {name}: {message}")


def run_side_by_side(
    bench: Any,
    data: Any,
    state: dict,
    workdir: Path,
    resume: bool,
    address: str,
    stop_signals: list[int],
) -> list[SweepResult]:
    """Sweep every architecture of ``bench``, ``search.parallel_architectures`` of them at a time.

    Returns the results in the benchmark's order. Raises the first failed architecture's error (the
    others are stopped gracefully first), or :class:`SweepInterrupted` after a stop signal.
    """
    width = bench.search.parallel_architectures
    pending = list(bench.architectures)
    running: dict[str, tuple[subprocess.Popen, Path]] = {}
    outcomes: dict[str, SweepResult | BaseException] = {}
    forwarded = False
    with tempfile.TemporaryDirectory(prefix="cloudmask-drivers-") as scratch:
        try:
            while pending or running:
                failed = any(isinstance(o, BaseException) for o in outcomes.values())
                while pending and len(running) < width and not stop_signals and not failed:
                    arch = pending.pop(0)
                    log.info("sweeping %s in a driver process of its own: %d trials", arch, bench.search.num_samples)
                    payload = {
                        "bench": bench,
                        "arch": arch,
                        "data": data,
                        "state": state,
                        "workdir": Path(workdir),
                        "resume": resume,
                        "address": address,
                        "verbosity": verbosity(),
                    }
                    running[arch] = _launch(payload, Path(scratch))
                if (stop_signals or failed) and not forwarded:
                    forwarded = True
                    for process, _ in running.values():
                        process.send_signal(stop_signals[0] if stop_signals else signal.SIGTERM)
                if (stop_signals or failed) and pending:
                    pending.clear()  # nothing new starts once the sweep is stopping
                for arch, (process, outcome_path) in list(running.items()):
                    if process.poll() is not None:
                        del running[arch]
                        outcomes[arch] = _read_outcome(arch, process, outcome_path)
                time.sleep(_POLL_S)
        finally:
            for process, _ in running.values():  # an exception here (KeyboardInterrupt): none left behind
                process.terminate()
                process.wait(timeout=60)
    errors_seen = [outcomes[a] for a in bench.architectures if isinstance(outcomes.get(a), BaseException)]
    interrupted = [e for e in errors_seen if isinstance(e, SweepInterrupted)]
    others = [e for e in errors_seen if not isinstance(e, SweepInterrupted)]
    if others:
        raise others[0]
    if interrupted or stop_signals:
        raise (
            interrupted[0]
            if interrupted
            else SweepInterrupted(
                f"sweep interrupted by {signal.Signals(stop_signals[0]).name} before its architectures started; "
                "continue it with --resume",
                stop_signals[0],
            )
        )
    return [outcomes[a] for a in bench.architectures]
