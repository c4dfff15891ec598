"""`python -m kdcli`, and the `kdcli` command's entry point."""

import os
import signal
import sys


def _terminated(signum, frame):
    """SIGTERM where a command has no safe point to stop at (importing torch, loading data): end now, as its
    default would, but with a line that says why and with `finally` blocks run (no temporary file is left)."""
    os.write(2, b"\nterminated (SIGTERM)\n")
    raise SystemExit(128 + signum)


def main():
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _terminated)  # training and dump-logits replace it while they can stop cleanly
    try:
        try:
            from kdcli.cli import main as run  # imports torch: a second or two in which Ctrl-C is likely
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)  # one line, as everywhere else, not a traceback of the import
            sys.exit(130)
        run()
    finally:
        # Only exiting is left: a further Ctrl-C (users press it twice) ends the process at once, instead of
        # raising a KeyboardInterrupt inside Python's shutdown, which prints "Exception ignored in ... threading".
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)


if __name__ == "__main__":
    main()
