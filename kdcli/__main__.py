"""`python -m kdcli`, and the `kdcli` command's entry point."""

import signal
import sys

from kdcli import quit_at_once


def main():
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        # SIGTERM where a command has no safe point to stop at (importing torch, loading data): end now, with a line
        # that says why. Training and dump-logits replace it while they can stop cleanly.
        signal.signal(signal.SIGTERM, quit_at_once)
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
