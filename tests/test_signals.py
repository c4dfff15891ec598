"""kdcli.signals: the first Ctrl-C or SIGTERM is taken as a request to stop at the next safe point."""

import os
import signal

import pytest

from kdcli.signals import StopOnSignal


def test_the_first_signal_is_taken_even_when_stderr_is_a_broken_pipe(monkeypatch):
    """`kdcli ... | tee log` under a scheduler: the SIGTERM that ends tee must still stop kdcli cleanly."""
    def broken_pipe(fd, data):
        raise BrokenPipeError(32, "Broken pipe")

    stop = StopOnSignal()
    try:
        monkeypatch.setattr(os, "write", broken_pipe)
        os.kill(os.getpid(), signal.SIGTERM)
        monkeypatch.undo()
    finally:
        stop.restore()
    assert stop.requested and stop.signum == signal.SIGTERM


@pytest.mark.parametrize("signum, ends", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, SystemExit)])
def test_a_second_signal_ends_at_once_with_the_shells_status(signum, ends):
    """The user will not wait for an evaluation or a checkpoint: the second one ends the command where it is."""
    stop = StopOnSignal()
    try:
        os.kill(os.getpid(), signum)
        assert stop.requested and stop.signum == signum
        with pytest.raises(ends) as ended:
            os.kill(os.getpid(), signum)
        if ends is SystemExit:
            assert ended.value.code == 128 + signal.SIGTERM  # 143, as a shell reports a kill by SIGTERM
    finally:
        stop.restore()


def test_restore_gives_back_the_callers_handlers_and_an_ignored_signal_stays_ignored():
    """A script that runs kdcli in the background (SIGINT ignored) or handles SIGTERM itself gets its own back."""
    def own(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, own), signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stop = StopOnSignal()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is not own
        stop.restore()
        assert signal.getsignal(signal.SIGTERM) is own and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
