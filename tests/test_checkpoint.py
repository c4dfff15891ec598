"""kdcli.checkpoint: atomic save, and a load that refuses anything but plain weights."""

import errno
import hashlib
import os
import pickle
import re
import signal

import pytest
import torch
from conftest import dead_pid, on_a_full_disk, run_python

from kdcli import KdcliError
from kdcli import checkpoint as checkpoint_module
from kdcli.checkpoint import CHECKPOINT, checkpoint_file, delete_stale_temporaries, finish_renames, load_checkpoint, peek_checkpoint, read_checkpoint, save_all_atomic, save_atomic
from kdcli.models import create_model


def kdcli_state(seed=0, epoch=1):
    torch.manual_seed(seed)
    model = create_model("lenet5")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()  # so the optimizer state holds momentum buffers
    return {"model": model.state_dict(), "model_name": "lenet5", "optimizer": optimizer.state_dict(), "epoch": epoch,
            "config": {"lr": 0.1, "lr_milestones": [150, 225]}, "partial": None}


def assert_same_weights(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def folder_listing(path):
    return sorted(p.name for p in path.iterdir())


class Exploit:
    """Unpickling this runs a shell command (the classic __reduce__ attack)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Custom:
    """Any class outside torch's allow-list needs its code to unpickle."""


def test_roundtrip(tmp_path):
    state = kdcli_state()
    save_atomic(state, tmp_path / CHECKPOINT)
    for where in (tmp_path / CHECKPOINT, tmp_path):  # a file or its run folder
        loaded = load_checkpoint(where)
        assert_same_weights(loaded["model"], state["model"])
        assert loaded["epoch"] == 1 and loaded["model_name"] == "lenet5" and loaded["config"] == state["config"]
        momentum = loaded["optimizer"]["state"][0]["momentum_buffer"]
        assert torch.equal(momentum, state["optimizer"]["state"][0]["momentum_buffer"])
    assert folder_listing(tmp_path) == [CHECKPOINT]  # no temporary file left behind
    assert checkpoint_file(tmp_path) == tmp_path / CHECKPOINT


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_peek_gives_what_a_load_gives_in_either_format(tmp_path, zipped):
    """peek maps torch.save's zip format without reading its tensors; the legacy format cannot be mapped and is read."""
    state = kdcli_state()
    torch.save(state, tmp_path / CHECKPOINT, _use_new_zipfile_serialization=zipped)
    peeked = peek_checkpoint(tmp_path)
    assert peeked["config"] == state["config"] and peeked["model_name"] == "lenet5" and peeked["epoch"] == 1
    assert_same_weights(peeked["model"], state["model"])


def test_save_replaces_the_previous_checkpoint(tmp_path):
    save_atomic(kdcli_state(seed=0, epoch=1), tmp_path / CHECKPOINT)
    newer = kdcli_state(seed=1, epoch=2)
    save_atomic(newer, tmp_path / CHECKPOINT)
    assert load_checkpoint(tmp_path)["epoch"] == 2
    assert_same_weights(load_checkpoint(tmp_path)["model"], newer["model"])
    assert folder_listing(tmp_path) == [CHECKPOINT]


def write_exploit_pickle(path, marker):
    path.write_bytes(pickle.dumps({"model": Exploit(marker), "model_name": "lenet5"}, protocol=2))


def write_exploit_in_torch_file(path, marker):
    torch.save({"model": Exploit(marker), "model_name": "lenet5"}, path)


def write_custom_class(path, marker):
    torch.save({"model": {"w": torch.zeros(2)}, "model_name": "lenet5", "extra": Custom()}, path)


@pytest.mark.parametrize("write", [write_exploit_pickle, write_exploit_in_torch_file, write_custom_class])
def test_files_that_need_code_to_unpickle_are_refused(tmp_path, write):
    marker = tmp_path / "pwned"
    write(tmp_path / CHECKPOINT, marker)
    with pytest.raises(KdcliError, match="weights_only"):
        load_checkpoint(tmp_path / CHECKPOINT)
    assert not marker.exists(), "loading the checkpoint ran code"


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n", os.urandom(4096)], ids=["empty", "text", "random"])
def test_non_torch_files_are_refused(tmp_path, content):
    path = tmp_path / "file.pt"
    path.write_bytes(content)
    with pytest.raises(KdcliError) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("state", [{"weights": torch.zeros(3)}, {"model": {"w": torch.zeros(3)}}], ids=["no model", "no model name"])
def test_torch_file_without_weights_and_their_model_is_refused(tmp_path, state):
    """Someone's state dict: without the model's name, no kdcli command could rebuild the network."""
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(KdcliError, match="not a kdcli checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / CHECKPOINT
    save_atomic(kdcli_state(), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(KdcliError, match=r"is not a readable checkpoint \(\w+Error: [^.]*\); if it is damaged or cut short, copy or make it again$"):
        load_checkpoint(path)  # torch's first sentence, not its paragraph of advice


@pytest.mark.parametrize("where", ["missing.pt", "empty-run-folder"])
def test_missing_checkpoint_is_refused(tmp_path, where):
    (tmp_path / "empty-run-folder").mkdir()
    with pytest.raises(KdcliError, match="no checkpoint at .*: pass a run folder that holds checkpoint.pt, or the file itself$"):
        load_checkpoint(tmp_path / where)


def crash_after_writing(error):
    """A torch.save that dies half-way through writing, as a full disk or a bug would make it."""

    def save(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise error

    return save


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    good = kdcli_state(seed=0, epoch=1)
    save_atomic(good, tmp_path / CHECKPOINT)
    monkeypatch.setattr(checkpoint_module.torch, "save", crash_after_writing(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(KdcliError, match="No space left on device"):
        save_atomic(kdcli_state(seed=1, epoch=2), tmp_path / CHECKPOINT)
    assert_same_weights(load_checkpoint(tmp_path)["model"], good["model"])
    assert folder_listing(tmp_path) == [CHECKPOINT]


# save_atomic into a disk with room for 100 kB: torch.save's own writer meets the full disk.
SAVED_ON_A_FULL_DISK = """
import sys
import torch
from kdcli import KdcliError
from kdcli.checkpoint import save_atomic
state = {"weights": torch.zeros(250_000)}  # 1 MB
disk_full_past_here()
try:
    save_atomic(state, sys.argv[1])
except KdcliError as e:
    print(e)
"""


def test_a_checkpoint_the_disk_cannot_hold_is_one_line_and_keeps_the_previous_one(tmp_path):
    """torch.save reports a full disk as a RuntimeError ("unexpected pos 704 vs 598"), not the OSError behind it."""
    good = kdcli_state(seed=0, epoch=1)
    save_atomic(good, tmp_path / CHECKPOINT)
    child = on_a_full_disk(SAVED_ON_A_FULL_DISK, 100_000, tmp_path / CHECKPOINT)
    assert (child.returncode, child.stdout, child.stderr) == (0, f"cannot write {tmp_path / CHECKPOINT}: File too large\n", "")
    assert_same_weights(load_checkpoint(tmp_path)["model"], good["model"])
    assert folder_listing(tmp_path) == [CHECKPOINT]


def test_crash_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    good = kdcli_state(seed=0, epoch=1)
    save_atomic(good, tmp_path / CHECKPOINT)
    monkeypatch.setattr(checkpoint_module.torch, "save", crash_after_writing(RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):
        save_atomic(kdcli_state(seed=1, epoch=2), tmp_path / CHECKPOINT)
    loaded = load_checkpoint(tmp_path)
    assert loaded["epoch"] == 1
    assert_same_weights(loaded["model"], good["model"])


def test_crash_mid_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    save_atomic(kdcli_state(), tmp_path / CHECKPOINT)
    monkeypatch.setattr(checkpoint_module.torch, "save", crash_after_writing(RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):
        save_atomic(kdcli_state(seed=1), tmp_path / CHECKPOINT)
    assert folder_listing(tmp_path) == [CHECKPOINT]


def two_runs_at_epoch_1(tmp_path) -> list:
    """Two run folders, each with its own epoch-1 checkpoint: runs trained together, as a sweep's stack."""
    folders = [tmp_path / "a", tmp_path / "b"]
    for seed, folder in enumerate(folders):
        folder.mkdir()
        save_atomic(kdcli_state(seed=seed, epoch=1), folder / CHECKPOINT)
    return folders


def at_epoch_2(folders) -> list:
    """Their next checkpoints, as save_all_atomic takes them: [(state, path), ...]."""
    return [(kdcli_state(seed=seed, epoch=2), folder / CHECKPOINT) for seed, folder in enumerate(folders)]


def test_runs_saved_together_keep_their_previous_checkpoints_when_the_last_write_fails(tmp_path, monkeypatch):
    """Runs trained together (a sweep's stack) must resume from one epoch: a failure, or a kill, while their
    checkpoints are written leaves every one at its previous checkpoint, and no temporary file."""
    folders = two_runs_at_epoch_1(tmp_path)
    save, calls = torch.save, []

    def second_fails(obj, f):
        calls.append(f)
        return save(obj, f) if len(calls) == 1 else crash_after_writing(OSError(errno.ENOSPC, "No space left on device"))(obj, f)

    monkeypatch.setattr(checkpoint_module.torch, "save", second_fails)
    with pytest.raises(KdcliError, match="No space left on device"):
        save_all_atomic(at_epoch_2(folders))
    assert [load_checkpoint(folder)["epoch"] for folder in folders] == [1, 1]
    assert [folder_listing(folder) for folder in folders] == [[CHECKPOINT], [CHECKPOINT]]


def test_a_failing_rename_among_runs_saved_together_names_its_own_file(tmp_path):
    folders = two_runs_at_epoch_1(tmp_path)
    (folders[0] / CHECKPOINT).unlink()
    (folders[0] / CHECKPOINT / "x").mkdir(parents=True)  # a folder where a's checkpoint goes: no file replaces it
    with pytest.raises(KdcliError, match=f"cannot write {re.escape(str(folders[0] / CHECKPOINT))}: Is a directory"):
        save_all_atomic(at_epoch_2(folders))
    assert load_checkpoint(folders[1])["epoch"] == 1  # renamed after a's: not reached
    assert [folder_listing(folder) for folder in folders] == [[CHECKPOINT], [CHECKPOINT]]


# Run by run_python: in a fresh interpreter.
KILLED_BEFORE_THE_SECOND_RENAME = """
import os, signal, sys
from pathlib import Path
import torch
from kdcli.checkpoint import CHECKPOINT, save_all_atomic
replace, renames = os.replace, []
def killed_before_the_second(src, dst):
    if Path(dst).name == CHECKPOINT:
        renames.append(dst)
        if len(renames) == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # no handler, no `finally`: what save_all_atomic left is what a kill leaves
    replace(src, dst)
os.replace = killed_before_the_second
save_all_atomic(torch.load(sys.argv[1], weights_only=False))
"""


def test_a_kill_among_the_renames_of_runs_saved_together_is_completed_by_finish_renames(tmp_path):
    """Killed after the first of its renames: the second is done by finish_renames from their list, which the
    sweep calls before it reads a checkpoint."""
    folders = two_runs_at_epoch_1(tmp_path)
    torch.save(at_epoch_2(folders), tmp_path / "states.pt")
    child = run_python(KILLED_BEFORE_THE_SECOND_RENAME, tmp_path / "states.pt")
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert [load_checkpoint(folder)["epoch"] for folder in folders] == [2, 1]
    finish_renames(folders[0])
    assert [load_checkpoint(folder)["epoch"] for folder in folders] == [2, 2]
    assert [folder_listing(folder) for folder in folders] == [[CHECKPOINT], [CHECKPOINT]]
    finish_renames(folders[0])  # nothing left to do
    assert [load_checkpoint(folder)["epoch"] for folder in folders] == [2, 2]


@pytest.mark.parametrize("text", [b"garbage", b'[["a"]]', b'{"a": 1}', b"5", b"\xff\xfe"])
def test_a_list_of_renames_that_was_edited_or_damaged_is_one_line(tmp_path, text):
    """kdcli writes it atomically, so it can only have been damaged since: that was a traceback in every sweep of the folder."""
    (tmp_path / ".renames.tmp-99999").write_bytes(text)
    with pytest.raises(KdcliError, match=r"cannot read .*\.renames\.tmp-99999, the renames of a save that was killed .*: delete it"):
        finish_renames(tmp_path)


@pytest.mark.parametrize("edit, said", [
    ({"model_name": ["lenet5"]}, r"its model_name is \['lenet5'\], not a model's name"),
    ({"model": [torch.zeros(2)]}, "its model is not a set of weights"),
    ({"model": {"w": "zeros"}}, "its model is not a set of weights"),
    ({"config": ["epochs", 3]}, "its config is not a record of options"),
    ({"epoch": "3"}, "its epoch is '3', not a count"),
    ({"step": -1}, "its step is -1, not a count"),
    ({"epoch": 10**6}, "its epoch 1000000 is past its run's 3 epochs"),
    ({"optimizer": {}}, "its optimizer state is not one"),
    ({"config": {"epochs": 3, "subset": "all"}}, "its option subset is 'all', not a count"),
])  # fmt: skip
def test_a_checkpoint_edited_or_damaged_in_what_kdcli_reads_is_one_line(tmp_path, edit, said):
    """Each was a traceback in the model, the optimizer or the epoch loop (or a summary of a run "finished" at epoch 10**6)."""
    state = {"model": {"w": torch.zeros(2)}, "model_name": "lenet5", "config": {"epochs": 3}, "epoch": 1, "step": 0, "optimizer": {"state": {}, "param_groups": []}}
    torch.save({**state, **edit}, tmp_path / CHECKPOINT)
    for read in (load_checkpoint, peek_checkpoint):
        with pytest.raises(KdcliError, match=f"checkpoint.pt is damaged: {said}.*; copy or make it again"):
            read(tmp_path)


def test_a_checkpoint_that_is_a_folder_is_said_to_be_one(tmp_path):
    """Not "no checkpoint at run/checkpoint.pt/checkpoint.pt", nor the run folder named as a folder of runs."""
    (tmp_path / "run" / CHECKPOINT).mkdir(parents=True)
    for given in (tmp_path / "run", tmp_path / "run" / CHECKPOINT):
        with pytest.raises(KdcliError, match=f"{tmp_path / 'run' / CHECKPOINT} is a folder, not a checkpoint"):
            load_checkpoint(given)


def test_a_temporary_file_of_another_users_kdcli_writing_now_is_kept(tmp_path, monkeypatch):
    """A folder two users write into (a shared runs/): kill(pid, 0) on the other's live process answers EPERM, which
    means alive. Deleting its temporary file would fail that kdcli's rename; a dead process's is deleted still."""
    theirs, dead = dead_pid(), dead_pid()
    kill = os.kill

    def kill_as_another_user(pid, signum):
        if pid == theirs:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return kill(pid, signum)

    monkeypatch.setattr(os, "kill", kill_as_another_user)
    (tmp_path / f".{CHECKPOINT}.tmp-{theirs}").write_bytes(b"being written")
    (tmp_path / f".{CHECKPOINT}.tmp-{dead}").write_bytes(b"torn")
    delete_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f".{CHECKPOINT}.tmp-{theirs}"]


def test_unwritable_folder(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(KdcliError, match="cannot write"):
        save_atomic(kdcli_state(), tmp_path / "file" / CHECKPOINT)


@pytest.mark.parametrize("saved", ["before torch.load", "after torch.load"])
def test_read_checkpoint_gives_the_sha256_of_the_bytes_it_loaded(tmp_path, monkeypatch, saved):
    """A teacher still training saves its next checkpoint while a dump reads this one: the hash must name
    the weights loaded, not the file's new content (cache-info --verify would call the cache another teacher's).
    Saved before torch.load runs: the weights must be those of the bytes hashed, not the file read again."""
    save_atomic(kdcli_state(), tmp_path / CHECKPOINT)
    loaded_from = hashlib.sha256((tmp_path / CHECKPOINT).read_bytes()).hexdigest()
    load = torch.load

    def load_while_the_next_checkpoint_is_saved(*args, **kwargs):
        if saved == "before torch.load":
            save_atomic({**kdcli_state(), "epoch": 2}, tmp_path / CHECKPOINT)
        state = load(*args, **kwargs)
        if saved == "after torch.load":
            save_atomic({**kdcli_state(), "epoch": 2}, tmp_path / CHECKPOINT)
        return state

    monkeypatch.setattr(checkpoint_module.torch, "load", load_while_the_next_checkpoint_is_saved)
    state, sha256 = read_checkpoint(tmp_path)
    assert sha256 == loaded_from and state["epoch"] == 1


# ---------------------------------------------------------------- found by mutation testing of train, group and checkpoint (2026-11-27, second round)


def test_ctrl_c_mid_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    save_atomic(kdcli_state(), tmp_path / CHECKPOINT)
    monkeypatch.setattr(checkpoint_module.torch, "save", crash_after_writing(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_atomic(kdcli_state(seed=1, epoch=2), tmp_path / CHECKPOINT)
    assert folder_listing(tmp_path) == [CHECKPOINT] and load_checkpoint(tmp_path)["epoch"] == 1


def test_a_refusal_by_safe_loading_names_its_reason_not_torchs_advice_to_load_unsafely(tmp_path):
    write_exploit_in_torch_file(tmp_path / CHECKPOINT, tmp_path / "pwned")
    with pytest.raises(KdcliError) as error:
        load_checkpoint(tmp_path)
    assert "GLOBAL posix.system" in str(error.value) and "weights_only` set to `False`" not in str(error.value)


def test_a_refused_class_is_named_without_torchs_advice_to_allow_it(tmp_path):
    """torch's reason goes on to suggest add_safe_globals: that would let the file build objects of that class."""
    write_custom_class(tmp_path / CHECKPOINT, tmp_path / "pwned")
    with pytest.raises(KdcliError) as error:
        load_checkpoint(tmp_path)
    assert f"GLOBAL {Custom.__module__}.Custom" in str(error.value) and "safe_globals" not in str(error.value)
