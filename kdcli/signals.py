"""Ctrl-C and SIGTERM: a long command stops at its next safe point and keeps what it can resume from.

    stop = StopOnSignal()                # from here the first Ctrl-C or SIGTERM only sets stop.requested
    try:
        for step in steps:
            ...
            if stop.requested:           # a safe point: save, then raise Interrupted(message, stop.signum)
                ...
    finally:
        stop.restore()                   # the caller's handlers again
"""

import contextlib
import os
import signal


def quit_at_once(signum, frame=None):
    """End now, as the signal's default would, but with `finally` blocks run (no temporary file is left) and
    the shell's exit status (130, 143): Ctrl-C as a KeyboardInterrupt, SIGTERM with a line that says why."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    with contextlib.suppress(OSError):  # stderr may be a pipe whose reader the same SIGTERM ended
        os.write(2, b"\nterminated (SIGTERM)\n")
    raise SystemExit(128 + signum)


class StopOnSignal:
    """Ctrl-C (SIGINT) and SIGTERM (what a batch scheduler or `docker stop` sends before a kill) set a flag
    that a loop checks at its safe points (training: after each step, so weights are never half-updated;
    dump-logits: between batches), instead of ending the process wherever they land. A second one quits at once."""

    NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self, lost="what the last checkpoint does not hold"):  # what quitting at once would lose
        self.said = f"stopping at the next safe point (again: quit at once, losing {lost})"
        self.signum, self.previous = None, {}
        for signum in self.NAMES:
            if signal.getsignal(signum) is signal.SIG_IGN:  # a background job of a script: as Python, keep ignoring it
                continue
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave the signals alone
                return

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.requested:  # a second one: the user will not wait for an evaluation or a checkpoint to end
            quit_at_once(signum)  # the last checkpoint is intact: saves are atomic
        self.signum = signal.Signals(signum)  # first: the write below may fail
        # Said at once: an evaluation or a checkpoint may take a while to reach the safe point. A raw write: the
        # handler may interrupt a print.
        with contextlib.suppress(OSError):  # stderr may be a pipe whose reader the same SIGTERM ended
            os.write(2, f"\n{self.NAMES[signum]}: {self.said}\n".encode())

    def restore(self):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
