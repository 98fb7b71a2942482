"""Stopping a sweep by signal: Ctrl-C or SIGTERM become Tune's own graceful stop, and the sweep says so.

Tune stops an experiment cleanly on SIGINT or SIGUSR1 and then returns as if it had ended; it does not
catch SIGTERM at all. :func:`graceful_stop` routes both to Tune's stop and records them, and
:func:`check_not_interrupted` turns them into :class:`SweepInterrupted` (exit 128 + signal), so an
interrupted sweep is never taken for a finished one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from harness.errors import SweepError, SweepInterrupted
from harness.sweep.storage import SweepStorage

log = logging.getLogger("harness.sweep")


@contextlib.contextmanager
def graceful_stop() -> Iterator[list[int]]:
    """Turn the first SIGINT (Ctrl-C) or SIGTERM into Tune's graceful stop; yields the signals received.

    Tune stops an experiment cleanly (trials paused, its state saved) on SIGINT or SIGUSR1 and then simply
    returns, as if the experiment had ended; SIGTERM, what schedulers and ``kill`` send, it does not catch
    at all. Here both become SIGUSR1 for Tune, and the caller sees that a signal came. A second signal
    acts as it would without this handler (Ctrl-C raises KeyboardInterrupt, SIGTERM ends the process).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers can only be set from the main thread
        return
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in stop_signals}
    tune_sigint = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")

    def restore_handlers() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        restore_handlers()
        log.warning(
            "%s: stopping the sweep once Tune has saved its state (send it again to stop at once); "
            "continue later with --resume",
            signal.Signals(signum).name,
        )
        if callable(signal.getsignal(signal.SIGUSR1)):  # Tune's handler; outside tune.run, the check below
            os.kill(os.getpid(), signal.SIGUSR1)

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # SIGINT stays ours: Tune would swallow it
    for sig in stop_signals:
        signal.signal(sig, on_signal)
    try:
        yield received
    finally:
        restore_handlers()
        if tune_sigint is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_sigint


def check_not_interrupted(received: list[int], storage: SweepStorage, arch: str, unfinished: int = 0) -> None:
    """Refuse to go on after a stop signal (:class:`SweepInterrupted`) or with trials Tune left unfinished.

    Unfinished trials without a signal (Tune ended the experiment for a reason of its own) are a
    :class:`SweepError`, not an interruption: nobody asked for the stop, so it is not reported as one.
    Either way nothing is chosen and the sweep stays resumable.
    """
    resume = f"nothing is reported as a result. Its state is saved in {storage.uri}: continue it with --resume"
    if received:
        signum = received[0]
        raise SweepInterrupted(f"sweep interrupted by {signal.Signals(signum).name} during {arch}; {resume}", signum)
    if unfinished:
        raise SweepError(
            f"Tune ended {arch}'s experiment with {unfinished} trial(s) unfinished, without a stop signal "
            f"(see the driver's log above for why); {resume}"
        )
