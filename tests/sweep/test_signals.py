"""Stop signals: recorded and routed to Tune's graceful stop; an unfinished sweep is never taken for a finished one."""

import os
import signal

import pytest

from harness.errors import SweepError, SweepInterrupted
from harness.sweep.signals import check_not_interrupted, graceful_stop
from harness.sweep.storage import SweepStorage


def test_a_stop_signal_is_recorded_and_the_previous_handlers_come_back(tmp_path):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    tune_sigint = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    with graceful_stop() as received:
        assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"  # Tune would swallow Ctrl-C
        os.kill(os.getpid(), signal.SIGTERM)  # outside tune.run: recorded, nothing else happens
        assert received == [signal.SIGTERM]
        # The first signal restored the handlers: a second one acts as without graceful_stop.
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert os.environ.get("TUNE_DISABLE_SIGINT_HANDLER") == tune_sigint


@pytest.mark.parametrize(("signum", "name"), [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_a_signal_is_an_interruption_with_its_exit_code(tmp_path, signum, name):
    storage = SweepStorage.parse(str(tmp_path))
    with pytest.raises(SweepInterrupted, match=f"interrupted by {name} during unet; .*--resume") as err:
        check_not_interrupted([signum], storage, "unet", unfinished=2)
    assert err.value.signum == signum


def test_unfinished_trials_without_a_signal_are_an_error_not_an_interruption(tmp_path):
    storage = SweepStorage.parse(str(tmp_path))
    check_not_interrupted([], storage, "unet", unfinished=0)  # a finished experiment
    with pytest.raises(SweepError, match="2 trial\\(s\\) unfinished, without a stop signal.*--resume") as err:
        check_not_interrupted([], storage, "unetpp", unfinished=2)
    assert not isinstance(err.value, SweepInterrupted)
