"""`python -m kdcli`, and the `kdcli` command's entry point."""

import signal
import sys


def main():
    try:
        from kdcli.cli import main as run  # imports torch: a second or two in which Ctrl-C is likely
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)  # one line, as everywhere else, not a traceback of the import
        sys.exit(130)
    try:
        run()
    finally:
        # Only exiting is left: a further Ctrl-C (users press it twice) ends the process at once, instead of
        # raising a KeyboardInterrupt inside Python's shutdown, which prints "Exception ignored in ... threading".
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    main()
