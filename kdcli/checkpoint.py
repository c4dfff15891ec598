"""Checkpoints: atomic save, safe load.

    save_atomic(state, run_dir / "checkpoint.pt")
    save_all_atomic([(state, path), ...])   # several, renamed into place only once all are written
    finish_renames(folder)   # after a process killed among those renames: the rest of them
    write_atomic(path, lambda f: f.write(text.encode()))   # any file, the same way
    delete_stale_temporaries(folder)   # the temporary files a killed write left there
    state = load_checkpoint(path)   # weights_only: a checkpoint cannot run code
    state, sha256 = read_checkpoint(path)   # and the hash of the very bytes loaded
    state = peek_checkpoint(path)   # its options and progress, weights left on disk

A checkpoint is written to a temporary file in the same folder and renamed over
the old one, so a process killed mid-write leaves the previous checkpoint intact.
"""

import contextlib
import functools
import hashlib
import io
import json
import os
import pickle
import re
from pathlib import Path

import torch

from kdcli import KdcliError, is_count
from kdcli.models import MODELS, known_models

CHECKPOINT = "checkpoint.pt"
RENAMES = ".renames.tmp-"  # + pid: the renames a group's save has still to do (a .tmp-: prepare_run_dir deletes a stale one)
ZIP = b"PK\x03\x04"  # how torch.save's files begin


def save_atomic(state: dict, path) -> None:
    write_atomic(path, functools.partial(torch.save, state))


def save_all_atomic(states_and_paths) -> None:
    """The checkpoints of runs trained together, renamed into place only once every one is on disk: a process
    killed while writing them (most of the time a save takes) leaves every run at its previous checkpoint, so
    that they resume together. Apart, a sweep's student left alone would train unstacked, which rounds
    otherwise than its stack did (README: Reproducibility). A kill among the renames leaves their list beside
    the first checkpoint, which finish_renames completes."""
    with contextlib.ExitStack() as written:
        renames = [(written.enter_context(_written(path, functools.partial(torch.save, state))), Path(path)) for state, path in states_and_paths]
        with _listed(renames):
            for tmp, path in renames:
                _replace(tmp, path)


@contextlib.contextmanager
def _listed(renames):
    """Around a group's renames [(tmp, path), ...]: their list on disk beside the first path (one rename alone is atomic)."""
    if len(renames) < 2:
        yield
        return
    listed = renames[0][1].with_name(f"{RENAMES}{os.getpid()}")
    relative = [[os.path.relpath(p, listed.parent) for p in pair] for pair in renames]  # the sweep's folder may move
    write_atomic(listed, lambda f: f.write(json.dumps(relative).encode()))
    try:
        yield
    finally:  # also when a rename fails: temporary_file_for deletes the files still to rename
        listed.unlink()


def finish_renames(folder) -> None:
    """The renames of a save_all_atomic killed among them, completed from their list in `folder` (the group's first
    run's): its runs then resume together. A file renamed already, or deleted since, is left as it is."""
    for listed in Path(folder).glob(f"{RENAMES}*"):
        try:
            renames = [(str(tmp), str(path)) for tmp, path in json.loads(listed.read_bytes())]
        except (ValueError, TypeError) as e:  # written atomically by kdcli: edited or damaged since
            raise KdcliError(f"cannot read {listed}, the renames of a save that was killed ({e}): delete it; the runs it "
                             "names then resume from their own checkpoints, perhaps at different epochs") from None  # fmt: skip
        for tmp, path in renames:
            if (listed.parent / tmp).exists():
                _replace(listed.parent / tmp, listed.parent / path)
        listed.unlink()


def write_atomic(path, write) -> None:
    """`write(f)` fills a binary file that then replaces `path` whole (a checkpoint, config.json, summary.json)."""
    with _written(path, write) as tmp:
        _replace(tmp, Path(path))


@contextlib.contextmanager
def _written(path, write):
    """`write(f)` fills a temporary file beside `path`, on disk; yields its path, for _replace."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # hidden, and one per process: delete_stale_temporaries deletes a killed one's
    with temporary_file_for(path, tmp):
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # else a power cut soon after the rename can leave an empty file on ext4
        yield tmp


def delete_stale_temporaries(folder, names=("*",)) -> None:
    """Delete the temporary files of writes into `folder` (of files called `names`) left by a process killed before
    its rename: not those of a process alive now (two `kdcli report` into one folder must not delete each other's)."""
    found = [p for name in names for p in Path(folder).glob(f".{name}.tmp-*")]  # listed before any is deleted
    for p in found:
        if not _alive(p.name.rpartition(".tmp-")[2]):
            p.unlink(missing_ok=True)  # another kdcli may have deleted it since the glob


def _alive(pid: str) -> bool:
    """Whether the process `pid` (a temporary file's suffix) runs now, on this machine. Never this process: a
    container's kdcli often gets the PID of the one killed before it."""
    if not pid.isdecimal() or int(pid) in (0, os.getpid()):  # int refuses "²", which isdigit passes; kill(0) would signal our group
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):  # none such; none such can be
        return False
    except PermissionError:  # another user's, alive
        pass
    return True


def _replace(tmp: Path, path: Path):
    """os.replace, atomic on POSIX: readers see the old file or the new one. Its error names `path` itself: among
    a group's renames, temporary_file_for's would name the last file of the group."""
    try:
        os.replace(tmp, path)
    except OSError as e:
        raise KdcliError(f"cannot write {path}: {e.strerror or e}") from None


@contextlib.contextmanager
def temporary_file_for(path: Path, tmp: Path):
    """Around writing `tmp` and renaming it to `path`: whatever stops it (a full disk, Ctrl-C), leave
    no half-written temporary file; a failed write becomes one KdcliError line naming `path`."""
    try:
        with write_errors_as_one_line(path):
            yield
    except BaseException:
        with contextlib.suppress(OSError):  # e.g. NotADirectoryError when the folder is a file
            tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def write_errors_as_one_line(path):
    """A failed write into `path` (a full disk, mostly) as one KdcliError line, in the operating system's words."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        why = failed_write(e)
        if why is None:
            raise
        raise KdcliError(f"cannot write {path}: {why}") from None


def failed_write(e: Exception) -> str | None:
    """Why a write failed, or None where `e` is no failed write. Libraries wrap the OS's error: torch.save raises
    a RuntimeError from it ("unexpected pos 704 vs 598"), HDF5 quotes it inside a two-line report."""
    if isinstance(e, RuntimeError) and isinstance(e.__context__, OSError):
        e = e.__context__
    quoted = re.search(r"errno = \d+, error message = '([^']*)'", str(e))
    if quoted:
        return quoted[1]
    return (e.strerror or str(e)) if isinstance(e, OSError) else None


def checkpoint_file(path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() and path.name != CHECKPOINT else path  # a checkpoint.pt that is a folder is refused as one


def load_checkpoint(path) -> dict:
    """The checkpoint in a run folder or file, its tensors on the CPU."""
    return _load(path)[0]


def peek_checkpoint(path) -> dict:
    """The checkpoint with its tensors memory-mapped, not read: its model name, options and progress in
    milliseconds, where loading a ResNet18's (90 MB with its optimizer) takes a CPU 0.16 s."""
    return _load(path, mmap=True)[0]


def read_checkpoint(path) -> tuple[dict, str]:
    """(the checkpoint in a run folder or file, the sha256 of the bytes it was loaded from). The file is read
    once, so a run that saves its next checkpoint meanwhile cannot make the hash name other weights."""
    state, data = _load(path)
    return state, hashlib.sha256(data).hexdigest()


def _load(path, mmap=False) -> tuple[dict, bytes]:
    """(the checkpoint, the bytes read: the whole file, or only its first 4 where `mmap` maps the rest)."""
    given, path = Path(path), checkpoint_file(path)
    if path.is_dir():
        raise KdcliError(f"{path} is a folder, not a checkpoint: pass a run folder that holds checkpoint.pt, or the file itself")
    if not path.is_file():
        below = next(given.rglob(CHECKPOINT), None) if given.is_dir() else None  # a sweep folder holds runs
        remedy = f"{given} holds run folders; pass one, e.g. {below.parent}" if below else "pass a run folder that holds checkpoint.pt, or the file itself"
        raise KdcliError(f"no checkpoint at {path}: {remedy}")
    try:
        with open(path, "rb") as f:
            data = f.read(4)
            mmap = mmap and data == ZIP  # only torch.save's zip format can be mapped
            if not mmap:
                data += f.read()
    except OSError as e:
        raise KdcliError(f"cannot read {path}: {e.strerror or e}") from None
    if data[:4] != ZIP and data[:1] != b"\x80":  # neither torch.save's zip nor its older pickle format
        raise KdcliError(f"{path} is not a checkpoint (not a file torch.save writes): pass a run folder or its checkpoint.pt")
    state = _load_weights_only(path, data, mmap)
    if not isinstance(state, dict) or "model" not in state or "model_name" not in state:
        raise KdcliError(f"{path} is a torch file but not a kdcli checkpoint (no model weights and name in it)")
    if problem := _malformed(state):
        raise KdcliError(f"{path} is damaged: {problem}; copy or make it again")
    if state["model_name"] not in MODELS:  # a later kdcli's model, or an edited name: said as the file's, not a --model typed
        raise KdcliError(f"{path} holds a {state['model_name']!r}, a model this kdcli does not know (it knows {known_models()})")
    return state, data


def _malformed(state: dict) -> str | None:
    """What in a checkpoint is not of the kind kdcli saves (a file edited or damaged since), where it would otherwise
    surface as a traceback in the model, the optimizer or the epoch loop."""
    config = state.get("config") or {}
    if not isinstance(state["model_name"], str):
        return f"its model_name is {state['model_name']!r}, not a model's name"
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        return "its model is not a set of weights (names to tensors)"
    if not isinstance(config, dict):
        return "its config is not a record of options"
    for name in ("epoch", "step", "num_classes"):
        if state.get(name) is not None and not is_count(state[name]):  # None: a checkpoint that records no epoch
            return f"its {name} is {state[name]!r}, not a count"
    for name in ("epochs", "subset", "val_size"):  # the options evaluate and dump-logits read back
        if config.get(name) is not None and not is_count(config[name]):
            return f"its option {name} is {config[name]!r}, not a count"
    if is_count(config.get("epochs")) and is_count(state.get("epoch")) and state["epoch"] > config["epochs"]:
        return f"its epoch {state['epoch']} is past its run's {config['epochs']} epochs"
    if "optimizer" in state and not (isinstance(state["optimizer"], dict) and "param_groups" in state["optimizer"]):
        return "its optimizer state is not one"
    return None


def _load_weights_only(path, data: bytes, mmap: bool):
    """torch.load of `data` (mapped from `path` instead, with `mmap`) that runs no code; its refusal or failure is one line."""
    try:
        return torch.load(path if mmap else io.BytesIO(data), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False, exactly what must not be done with an untrusted file, and
        # its layout differs between releases. It wraps the unpickler's own error, whose first sentence is the reason.
        reason = " ".join(str(e.__context__ or "").split()).split(". ")[0]
        raise KdcliError(
            f"{path} was refused by safe loading (weights_only=True): it is not a kdcli checkpoint, or it holds "
            f"objects that would run code when unpickled" + (f" ({reason})" if reason else "")
        ) from None
    except Exception as e:
        cause = " ".join(str(e).split()).split(". ")[0] or "no reason given"  # torch's first sentence says what; the rest is advice
        raise KdcliError(f"{path} is not a readable checkpoint ({type(e).__name__}: {cause}); if it is damaged or cut short, copy or make it again") from None


def training_reached(state: dict) -> str:
    """How far a checkpoint's run trained, numbered as the Ctrl-C message numbers it: "epoch 6 of 30",
    or "stopped at epoch 2 of 30, step 3" (epoch 1 complete, then 3 steps)."""
    if state.get("epoch") is None:
        return "epoch not recorded"
    epochs = (state.get("config") or {}).get("epochs")
    of = f" of {epochs}" if epochs else ""
    if state.get("step"):
        return f"stopped at epoch {state['epoch'] + 1}{of}, step {state['step']}"
    return f"epoch {state['epoch']}{of}"
