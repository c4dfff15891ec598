"""kdcli: knowledge distillation on CIFAR-10 with a cached teacher.

Three stages joined by files: train-teacher -> dump-logits -> train-student.
Library errors a user can cause are raised as KdcliError; the CLI prints them
as one line and exits 1.
"""

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


def utf8_refusal(name: str) -> str | None:
    """Why `name` is refused, naming it as a shell shows it (runs/caf\\xe9), where its bytes are not UTF-8; else None.
    Python hands such bytes over as lone surrogates, by which torch cannot open a file, nor a record or report be written."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return f"{os.fsencode(name).decode(errors='backslashreplace')} is not valid UTF-8: kdcli needs UTF-8 names"
    return None


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
