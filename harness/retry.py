"""One retry helper for the calls that talk to a service that may blip (the MLflow store, an object store)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def with_retries(
    fn: Callable[[], T],
    *,
    attempts: int,
    delay: float,
    give_up: Callable[[BaseException], BaseException],
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Call ``fn`` until it succeeds, at most ``attempts`` times, sleeping ``delay * 2**i`` after failure ``i``.

    An exception of ``retry_on`` is retried; after the last attempt ``give_up(last exception)`` is raised,
    chained to it (it names what failed: callers pass the harness error for their service). Any other
    exception propagates at once.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    for i in range(attempts):
        try:
            return fn()
        except retry_on as exc:
            if i == attempts - 1:
                raise give_up(exc) from exc
            time.sleep(delay * 2**i)
    raise AssertionError("unreachable: the loop returns or raises")
