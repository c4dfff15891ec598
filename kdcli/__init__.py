"""kdcli: knowledge distillation on CIFAR-10 with a cached teacher.

Three stages joined by files: train-teacher -> dump-logits -> train-student.
Library errors a user can cause are raised as KdcliError; the CLI prints them
as one line and exits 1.
"""

import contextlib
import math
import os
import signal
import sys
from typing import Literal

__version__ = "0.1.0"

Device = Literal["auto", "cuda", "mps", "cpu"]  # --device; auto: cuda, then mps, then cpu
Precision = Literal["bf16", "fp16", "off"]  # --amp: the autocast dtype on CUDA, or none
DATA_DIR = "data"  # --data-dir's default: relative, so each project has its own copy


def redraw_intervals() -> dict:
    """tqdm's least and most time between a progress bar's redraws: a terminal redraws its one line, but in a log
    file (nohup, a batch job) every redraw stays, ten a second for hours; there, a minute. maxinterval too: tqdm's
    monitor thread redraws a bar not redrawn for maxinterval (default 10 s), a second line a minute."""
    seconds = 0.1 if sys.stderr.isatty() else 60.0
    return {"mininterval": seconds, "maxinterval": max(seconds, 10.0)}


def count(n: int, noun: str) -> str:
    """"1 epoch", "3 epochs": for messages."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def short(value):
    """A sha256 (a fingerprint, a teacher's checkpoint) as its first 8 digits; anything else as it is."""
    return f"{value[:8]}…" if isinstance(value, str) and len(value) == 64 else value


# What a number read back from a file (JSON, a checkpoint) must be: JSON reads NaN, Infinity and true as numbers too.
def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class KdcliError(Exception):
    """An error the user can fix; its message says how."""


class Diverged(KdcliError):
    """A run's loss or weights became non-finite: it stopped, and its folder records it (runs.DIVERGED)."""


class Interrupted(KdcliError):
    """Ctrl-C or SIGTERM: the command stopped at a safe point and kept what it can resume from; its message
    says what. `signum`: the signal that stopped it (the CLI exits 128 + it, as a shell reports a kill)."""

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.signum = signum


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
