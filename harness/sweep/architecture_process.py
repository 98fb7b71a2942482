"""One architecture's sweep in a driver process of its own (see :mod:`harness.sweep.parallel`).

``python -m harness.sweep.architecture_process PAYLOAD``: PAYLOAD is the pickle
:func:`harness.sweep.parallel.run_side_by_side` wrote (the benchmark, the architecture, the prepared data,
the sweep state, the Ray address); the outcome goes beside it as ``<arch>.outcome``.
"""

from __future__ import annotations

import logging
import pickle
import sys
import traceback
from pathlib import Path

from harness.cluster import ray_session
from harness.console import set_verbosity
from harness.sweep.driver import run_architecture
from harness.sweep.parallel import write_outcome
from harness.sweep.signals import graceful_stop
from harness.sweep.storage import SweepStorage


def main(argv: list[str] | None = None) -> int:
    """Run the payload's architecture; 0 when it chose its result, 1 otherwise (the outcome says why)."""
    path = Path((sys.argv[1:] if argv is None else argv)[0])
    payload = pickle.loads(path.read_bytes())
    set_verbosity(payload["verbosity"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    bench = payload["bench"]
    outcome = path.with_suffix(".outcome")
    try:
        with ray_session(bench.ray, payload["address"]), graceful_stop() as stop_signals:
            result = run_architecture(
                bench,
                payload["arch"],
                payload["data"],
                payload["state"],
                SweepStorage.parse(bench.storage),
                payload["workdir"],
                payload["resume"],
                stop_signals,
            )
    except BaseException as exc:  # every ending is reported to the parent, which decides what it means
        if not isinstance(exc, Exception) or type(exc).__module__ != "harness.errors":
            traceback.print_exc()
        write_outcome(outcome, error=exc)
        return 1
    write_outcome(outcome, result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
