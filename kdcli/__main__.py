"""`python -m kdcli`, and the `kdcli` command's entry point."""

import os
import signal
import sys

from kdcli.signals import quit_at_once

STOPS = (signal.SIGINT, signal.SIGTERM)


def main():
    run, caught = _import_cli()
    if caught is not None:
        _stop(caught)
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        # SIGTERM where a command has no safe point to stop at (loading data): end now, with a line that says why.
        # Training and dump-logits replace it while they can stop cleanly.
        signal.signal(signal.SIGTERM, quit_at_once)
    try:
        run()
    finally:
        # Only exiting is left: a further Ctrl-C (users press it twice) ends the process at once, instead of
        # raising a KeyboardInterrupt inside Python's shutdown, which prints "Exception ignored in ... threading".
        for signum in STOPS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)


def _import_cli():
    """(kdcli.cli's main, the first Ctrl-C or SIGTERM that came while it imported torch, or None). The signal waits
    for the import's end: raised inside it, the exit left numpy or torch half imported, and was then lost (the
    command ran on) or crashed the process, in 6 to 8 of 40 starts (tests/stress_start_signal.py). A second one
    ends the process at once."""
    caught = []

    def hold(signum, frame):
        caught.append(signum)
        if len(caught) > 1:  # pressed again: nothing is written yet, so nothing is lost by not cleaning up
            os.write(2, b"\ninterrupted\n" if signum == signal.SIGINT else b"\nterminated (SIGTERM)\n")
            os._exit(128 + signum)

    held = {signum: signal.signal(signum, hold) for signum in STOPS if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        from kdcli.cli import main as run  # imports torch: a second or two in which Ctrl-C is likely
    finally:
        for signum, previous in held.items():
            signal.signal(signum, previous)
    return run, (caught[0] if caught else None)


def _stop(signum):
    """End as the signal would have, had it come once the import was done."""
    if signum == signal.SIGINT:
        print("interrupted", file=sys.stderr)  # one line, as everywhere else
        sys.exit(130)
    quit_at_once(signum)


if __name__ == "__main__":
    main()
