"""`python -m kdcli`, and the `kdcli` command's entry point."""

import sys


def main():
    try:
        from kdcli.cli import main as run  # imports torch: a second or two in which Ctrl-C is likely
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)  # one line, as everywhere else, not a traceback of the import
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
