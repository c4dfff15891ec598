"""kdcli: knowledge distillation on CIFAR-10 with a cached teacher.

Three stages joined by files: train-teacher -> dump-logits -> train-student.
Library errors a user can cause are raised as KdcliError; the CLI prints them
as one line and exits 1.
"""

__version__ = "0.1.0"


class KdcliError(Exception):
    """An error the user can fix; its message says how."""


class Interrupted(KdcliError):
    """Ctrl-C: the command stopped at a safe point and kept what it can resume from; its message says what."""
