"""Shared fixtures: a tiny CIFAR-10-format data folder made on the spot (tests never download)."""

import functools
import hashlib
import io
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdcli import data as data_module

ROOT = Path(__file__).resolve().parents[1]


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


TRAIN_PER_BATCH = 40  # 5 batches -> 200 training images
TEST_IMAGES = 60


def dead_pid() -> int:
    """The PID of a process that has ended: what the temporary file of a killed kdcli's write is named after."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()  # reaped: its PID names no process now
    return child.pid


def run_python(code: str, *args) -> subprocess.CompletedProcess:
    """Python `code` in a fresh interpreter that imports this checkout's kdcli. Not a fork: forking a process whose
    torch has started threads can deadlock the child."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=_child_env(), capture_output=True, text=True, timeout=120)


def _child_env() -> dict:
    """A child interpreter's environment: this checkout's kdcli first on its path, one OpenMP thread."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}


def run_kdcli_bound_by_permissions(*args) -> subprocess.CompletedProcess:
    """`python -m kdcli ARGS` in a fresh interpreter, for which a file chmod 000 is unreadable: as root too, whose
    power to read and search any file setpriv drops. Skips the test where neither this user nor setpriv can."""
    command = [sys.executable, "-m", "kdcli", *map(str, args)]
    if os.geteuid() == 0:
        if not _setpriv_drops_root_powers():
            pytest.skip("run as root, without a setpriv that can drop root's power over file permissions")
        command = [*SETPRIV, *command]
    return subprocess.run(command, env=_child_env(), capture_output=True, text=True, timeout=120)


SETPRIV = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


@functools.cache
def _setpriv_drops_root_powers() -> bool:
    return shutil.which("setpriv") is not None and subprocess.run([*SETPRIV, "true"]).returncode == 0


def on_a_full_disk(code: str, room: int, *args) -> subprocess.CompletedProcess:
    """run_python, with files that cannot grow past `room` bytes once `code` calls `disk_full_past_here()`: its
    writes then fail inside torch and HDF5 as on a full disk, with EFBIG ("File too large") for ENOSPC."""
    limit = f"""
import resource, signal
def disk_full_past_here():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else a write past the limit kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, ({room}, {room}))
"""
    return run_python(limit + code, *args)


def write_cifar_folder(root, seed=0, str_keys=False, train_per_batch=TRAIN_PER_BATCH):
    """Write random images in the official cifar-10-batches-py layout under `root`; return `root`."""
    rng = np.random.default_rng(seed)
    folder = root / data_module.BATCH_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = data_module.TRAIN_FILES + [data_module.TEST_FILE]
    for name in names:
        n = TEST_IMAGES if name == data_module.TEST_FILE else train_per_batch
        batch = {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, size=n).tolist(),
            "batch_label": name,
            "filenames": [f"{name}_{i}.png" for i in range(n)],
        }
        if not str_keys:  # the official files are pickled with bytes keys
            batch = {k.encode(): v for k, v in batch.items()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in data_module.CLASSES]}, f)
    return root


def write_lenet_teacher(folder):
    """A LeNet-5 teacher checkpoint in `folder`; its last layer is scaled up so logits have a trained net's size (~5)."""
    import torch

    from kdcli.models import create_model

    torch.manual_seed(0)
    model = create_model("lenet5")
    with torch.no_grad():
        model.fc3.weight.mul_(50)
    state = {"model": model.state_dict(), "model_name": "lenet5", "num_classes": 10, "config": {}, "test_accuracy": None, "epoch": 1}
    torch.save(state, folder / "checkpoint.pt")
    return folder


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A tiny CIFAR-10 folder shared by the whole session: never modify it."""
    return write_cifar_folder(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(autouse=True)
def ctrl_c_as_in_a_terminal():
    """Tests press Ctrl-C (os.kill SIGINT) and expect kdcli to stop: also when pytest itself was started with
    SIGINT ignored (a background job of a script), which kdcli, as Python, leaves ignored. SIGTERM as the OS
    starts it, and put back after each test, whatever the test left."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGINT, previous[0])
    signal.signal(signal.SIGTERM, previous[1])


def record_progress_bars(monkeypatch, module) -> list:
    """Make module.tqdm a bar that writes nowhere and records what each update counted (bar.counts); return the
    list the bars made from now on are appended to."""
    bars = []

    class Recorded(module.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "file": io.StringIO()})
            self.counts = []
            bars.append(self)

        def update(self, n=1):
            self.counts.append(n)
            return super().update(n)

    monkeypatch.setattr(module, "tqdm", Recorded)
    return bars
