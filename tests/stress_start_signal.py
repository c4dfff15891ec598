"""Stress check of Ctrl-C and SIGTERM while kdcli starts (not part of the suite: about a second per start).

    .venv/bin/python tests/stress_start_signal.py --starts 40 --signal SIGTERM
    .venv/bin/python tests/stress_start_signal.py --starts 40 --signal SIGINT --after 0 0.3

Starts `kdcli train-teacher` (LeNet-5, tiny data) and sends the signal at a random moment in the first
--after seconds, mostly while torch imports; counts how each start ended. Every one must end with the
shell's status (130, 143) and one line; one ended by the signal itself (-2, -15) came before Python could
handle it. Before the import held signals back, 6 to 8 of 40 ran on to the end or crashed.
"""

import argparse
import collections
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import write_cifar_folder  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--starts", type=int, default=40)
    p.add_argument("--signal", choices=["SIGINT", "SIGTERM"], default="SIGTERM")
    p.add_argument("--after", type=float, nargs=2, default=[0.25, 0.6], metavar=("LOW", "HIGH"), help="seconds after the start")
    args = p.parse_args()
    random.seed(0)
    endings = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_cifar_folder(Path(tmp) / "data")
        for start in range(args.starts):
            out = Path(tmp) / f"run{start}"
            command = [sys.executable, "-m", "kdcli", "train-teacher", "--model", "lenet5", "--epochs", "2", "--device", "cpu",
                       "--data-dir", str(data), "--no-download", "--out", str(out), "--quiet"]  # fmt: skip
            job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                job.wait(random.uniform(*args.after))
            except subprocess.TimeoutExpired:
                job.send_signal(getattr(signal, args.signal))
            stderr = job.communicate()[1].strip()
            endings[job.returncode, "Traceback" in stderr, (stderr.splitlines() or [""])[-1][:70]] += 1
    for (status, traceback, last_line), n in endings.most_common():
        print(f"{n:4d}  exit {status:4d}  {'traceback  ' if traceback else ''}{last_line}")


if __name__ == "__main__":
    main()
