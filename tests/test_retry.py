"""harness.retry.with_retries: how many tries, what it raises after the last, what it never retries."""

import pytest

from harness.errors import TrackingError
from harness.retry import with_retries


def _flaky(failures: int, exc: type[BaseException] = OSError):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= failures:
            raise exc(f"blip {len(calls)}")
        return "ok"

    return fn, calls


def test_succeeds_after_transient_failures():
    fn, calls = _flaky(2)
    assert with_retries(fn, attempts=3, delay=0, give_up=RuntimeError) == "ok" and len(calls) == 3


def test_gives_up_with_the_callers_error_chained_to_the_last_failure():
    fn, calls = _flaky(5)
    with pytest.raises(TrackingError, match="store down: blip 3") as info:
        with_retries(fn, attempts=3, delay=0, give_up=lambda exc: TrackingError(f"store down: {exc}"))
    assert len(calls) == 3 and isinstance(info.value.__cause__, OSError)


def test_an_error_it_was_not_told_to_retry_propagates_at_once():
    fn, calls = _flaky(5, exc=KeyError)
    with pytest.raises(KeyError):
        with_retries(fn, attempts=3, delay=0, give_up=RuntimeError, retry_on=(OSError,))
    assert len(calls) == 1


def test_refuses_zero_attempts():
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        with_retries(lambda: 1, attempts=0, delay=0, give_up=RuntimeError)
