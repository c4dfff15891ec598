"""The logit cache file on its own: layout, refusals, locking, and the crash-safety invariant
(after creation, writing an epoch changes raw data bytes only). Synthetic arrays, no teacher."""

import errno
import json
import os
import re
import shlex
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import on_a_full_disk

from kdcli import KdcliError, augment, cache
from kdcli.locks import is_locked

N, C, M, E = 20, 10, 8, 3
IDENTITY = {"teacher_sha256": "a" * 64, "train_fingerprint": "b" * 64, "seed": 0, "epochs": E, "dtype": "float16"}


def epoch_arrays(e, dtype=np.float16):
    """Made-up epoch e: its real augmentation parameters and logits that say which epoch they are."""
    logits = np.random.default_rng(e).normal(size=(N, C)).astype(dtype)
    return augment.params(0, e, N).numpy(), logits


def make_cache(path, complete=E, dtype=np.float16):
    attrs = {**IDENTITY, "dtype": np.dtype(dtype).name, "teacher_model": "lenet5", "teacher_test_accuracy": 12.5, "config": {"seed": 0}}
    labels = np.arange(N) % C
    clean, test = np.ones((N, C), dtype), np.zeros((M, C), dtype)
    cache.create(path, attrs, labels, clean, test, E)
    with cache.CacheWriter(path) as w:
        for e in range(complete):
            w.write_epoch(e, *epoch_arrays(e, dtype))
    return path


def set_attr(path, name, value):
    with h5py.File(path, "r+") as f:
        f.attrs[name] = value


def test_roundtrip_layout_and_metadata(tmp_path):
    path = make_cache(tmp_path / "c.h5")
    with cache.open_cache(path, "b" * 64, C) as c:
        assert (c.epochs, c.epochs_complete, c.num_images, c.num_classes) == (E, E, N, C)
        for e in range(E):
            aug, logits = c.epoch(e)
            assert aug.dtype == np.int8 or str(aug.dtype) == "torch.int8"
            np.testing.assert_array_equal(aug.numpy(), augment.params(0, e, N).numpy())
            np.testing.assert_array_equal(logits.numpy(), epoch_arrays(e)[1])
        assert c.labels.tolist() == (np.arange(N) % C).tolist()
        assert tuple(c.test_logits.shape) == (M, C) and tuple(c.clean_logits.shape) == (N, C)
        assert set(cache.REQUIRED_ATTRS) <= set(c.attrs)
        assert c.attrs["format_version"] == cache.FORMAT_VERSION and c.attrs["config"] == {"seed": 0}
        assert c.attrs["augment_pad"] == augment.PAD and c.attrs["augment_mean"] == list(augment.MEAN)
        with pytest.raises(IndexError):
            c.epoch(E)
    with h5py.File(path, "r") as f:  # one epoch per chunk: a student reads an epoch in one read
        assert f["logits"].chunks == (1, N, C) and f["aug"].chunks == (1, N, 3)


def test_writing_an_epoch_changes_raw_data_bytes_only(tmp_path):
    """The crash-safety invariant: a kill during an epoch can damage data of the epoch in flight, never metadata."""
    path = make_cache(tmp_path / "c.h5", complete=0)
    with h5py.File(path, "r") as f:  # byte ranges of the raw data HDF5 allocated at creation
        raw = [(f[n].id.get_chunk_info(i).byte_offset, f[n].id.get_chunk_info(i).size) for n in ("aug", "logits") for i in range(E)]
        raw.append((f["epochs_complete"].id.get_offset(), 8))
    data = np.zeros(path.stat().st_size, bool)
    for offset, size in raw:
        data[offset : offset + size] = True
    for e in range(E):
        before = np.fromfile(path, np.uint8)
        with cache.CacheWriter(path) as w:
            w.write_epoch(e, *epoch_arrays(e))
        after = np.fromfile(path, np.uint8)
        assert len(after) == len(before)
        changed = before != after
        assert changed.any() and not (changed & ~data).any()


def test_incomplete_refused_unless_allow_partial(tmp_path):
    path = make_cache(tmp_path / "c.h5", complete=2)
    with pytest.raises(KdcliError, match=rf"has 2 of 3 epochs: finish it with `kdcli dump-logits --epochs 3 --out {re.escape(shlex.quote(str(path)))}`, or pass --allow-partial"):
        cache.open_cache(path)
    with cache.open_cache(path, allow_partial=True) as c:
        assert c.epochs_complete == 2


def test_a_cache_a_dump_is_writing_is_said_to_be_so(tmp_path):
    """Not "run dump-logits" or "finish it with dump-logits": a second dump into it would be refused."""
    path = tmp_path / "c.h5"
    with cache.write_lock(path):  # what dump-logits holds from before the file exists to its end
        with pytest.raises(KdcliError, match=r"no cache at .*c.h5 yet: a dump-logits is making it \(it holds .*c.h5.lock\)"):
            cache.check_cache_is_there(path)
        make_cache(path, complete=0)
        with pytest.raises(KdcliError, match=r"has no complete epoch yet: a dump-logits is writing it now: wait for it"):
            cache.open_cache(path)
        make_cache(path, complete=2)
        with pytest.raises(KdcliError, match=r"has 2 of 3 epochs: a dump-logits is writing it now: wait for it, or pass --allow-partial"):
            cache.open_cache(path)
    with pytest.raises(KdcliError, match=r"no cache at .*x.h5: run `kdcli dump-logits` first"):
        cache.check_cache_is_there(tmp_path / "x.h5")
    with pytest.raises(KdcliError, match=r"has 2 of 3 epochs: finish it with `kdcli dump-logits --epochs 3 --out"):
        cache.open_cache(path)


def test_no_complete_epoch_refused_even_when_partial_allowed(tmp_path):
    path = make_cache(tmp_path / "c.h5", complete=0)
    with pytest.raises(KdcliError, match="no complete epoch"):
        cache.open_cache(path, allow_partial=True)
    assert cache.cache_info(path)["epochs_complete"] == 0  # but it can be inspected


def test_other_data_refused(tmp_path):
    path = make_cache(tmp_path / "c.h5")
    with pytest.raises(KdcliError, match=r"has 3 epochs for 20 images \(fingerprint bbbbbbbb…\); this data has 50,000 images \(cccccccc…\): run dump-logits"):
        cache.open_cache(path, fingerprint="c" * 64, num_images=50000)


def test_other_data_refused_counts_an_empty_cache_in_epochs(tmp_path):
    with pytest.raises(KdcliError, match=r"has 0 epochs for 20 images"):
        cache.open_cache(make_cache(tmp_path / "c.h5", complete=0), fingerprint="c" * 64)


def test_other_class_count_refused(tmp_path):
    with pytest.raises(KdcliError, match="logits for 10 classes; this data has 100"):
        cache.open_cache(make_cache(tmp_path / "c.h5"), num_classes=100)


@pytest.mark.parametrize("version", [2, 0], ids=["newer", "older"])
def test_other_format_version_refused(tmp_path, version):
    path = make_cache(tmp_path / "c.h5")
    set_attr(path, "format_version", version)
    with pytest.raises(KdcliError, match=f"format version {version}; this kdcli .* reads version 1"):
        cache.open_cache(path)


def test_other_augmentation_refused(tmp_path):
    path = make_cache(tmp_path / "c.h5")
    set_attr(path, "augment_pad", 2)
    with pytest.raises(KdcliError, match="made with augmentation"):
        cache.open_cache(path)


def test_missing_file_refused(tmp_path):
    with pytest.raises(KdcliError, match=r"no cache at .*nope.h5: run `kdcli dump-logits` first"):
        cache.open_cache(tmp_path / "nope.h5")


def test_non_hdf5_and_truncated_files_refused(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not an HDF5 file\n")
    with pytest.raises(KdcliError, match="not a readable HDF5 file"):
        cache.open_cache(text)
    path = make_cache(tmp_path / "c.h5")
    size = path.stat().st_size
    for keep in (size // 2, size - 1):
        with open(path, "r+b") as f:
            f.truncate(keep)
        with pytest.raises(KdcliError, match="not a readable HDF5 file"):
            cache.open_cache(path)


def test_hdf5_file_that_is_not_a_cache_refused(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(KdcliError, match="not a kdcli logit cache .*lacks aug, logits"):
        cache.open_cache(path)


def replace_dataset(name, array):
    def edit(f):
        del f[name]
        f[name] = array
    return edit


def set_attribute(name, value):
    def edit(f):
        f.attrs[name] = value
    return edit


@pytest.mark.parametrize("edit, said", [
    (replace_dataset("epochs_complete", np.int64(E + 2)), f"its epochs_complete is 5, where its attributes say 0 to {E} epochs"),
    (replace_dataset("epochs_complete", np.int64(-1)), "its epochs_complete is -1"),
    (replace_dataset("epochs_complete", np.float64(1.5)), "its epochs_complete is 1.5"),
    (replace_dataset("logits", np.zeros((E, N, 5), np.float16)), f"its logits is \\[{E}, {N}, 5\\] float16, where its attributes say {E}x{N}x{C} float16"),
    (replace_dataset("logits", np.zeros((E, N, C), np.int8)), "its logits is .* int8, where its attributes say .* float16"),
    (replace_dataset("logits", np.zeros((E - 1, N, C), np.float16)), f"its logits is \\[{E - 1}, {N}, {C}\\]"),
    (replace_dataset("aug", np.zeros((E, N // 2, 3), np.int8)), "its aug is"),
    (replace_dataset("labels", np.zeros(N, np.float32)), "its labels is .* float32, where its attributes say 20 int64"),
    (replace_dataset("test_logits", np.zeros((M, C + 1), np.float16)), "its test_logits is"),
    (set_attribute("config", "{not json"), "its attribute config is '{not json', not a JSON object"),
    (set_attribute("config", "[1, 2]"), "its attribute config is '\\[1, 2\\]', not a JSON object"),
    (set_attribute("epochs", "3"), "its attribute epochs is '3', not an integer"),
    (set_attribute("train_fingerprint", 5), "its attribute train_fingerprint is 5, not a string"),
    (set_attribute("teacher_test_accuracy", "16.5"), "its attribute teacher_test_accuracy is '16.5', not a number"),
])  # fmt: skip
def test_a_cache_whose_arrays_or_attributes_were_edited_is_refused_as_damaged(tmp_path, edit, said):
    """Not read past its end (an IndexError), nor trained on numbers its attributes do not describe (logits of 5 classes,
    int8 logits read as if float16), nor a traceback where an attribute is read: one line, wherever it is opened."""
    path = make_cache(tmp_path / "c.h5")
    with h5py.File(path, "r+") as f:
        edit(f)
    for read in (lambda: cache.open_cache(path, "b" * 64, C), lambda: cache.cache_info(path), lambda: cache.resume_point(path, IDENTITY, force=False)):
        with pytest.raises(KdcliError, match=f"c.h5 is damaged: {said}"):
            read()


def test_cache_info(tmp_path):
    info = cache.cache_info(make_cache(tmp_path / "c.h5", complete=1))
    assert (info["epochs_complete"], info["epochs"], info["dtype"], info["teacher_test_accuracy"]) == (1, E, "float16", 12.5)
    assert info["datasets"]["logits"] == {"shape": [E, N, C], "dtype": "float16"}
    assert info["datasets"]["aug"] == {"shape": [E, N, 3], "dtype": "int8"}
    assert info["datasets"]["labels"] == {"shape": [N], "dtype": "int64"}  # the layout cache.py's docstring gives
    assert info["datasets"]["epochs_complete"] == {"shape": [], "dtype": "int64"}
    assert info["size_bytes"] > E * N * (3 + 2 * C)
    assert info["attrs"]["teacher_sha256"] == "a" * 64


def test_resume_point(tmp_path):
    path = tmp_path / "c.h5"
    assert cache.resume_point(path, IDENTITY, force=False) is None  # no file: a new one
    make_cache(path, complete=1)
    assert cache.resume_point(path, IDENTITY, force=False) == 1
    with pytest.raises(KdcliError, match=r"other settings: teacher_sha256 aaaaaaaa… \(now dddddddd…\), seed 0 \(now 7\); pass --force"):
        cache.resume_point(path, {**IDENTITY, "seed": 7, "teacher_sha256": "d" * 64}, force=False)  # another teacher's weights: not to finish
    with pytest.raises(KdcliError, match=r"other settings: seed 0 \(now 7\); finish it as it was begun \(`kdcli dump-logits --epochs 3 --out [^`]*`\), pass --force"):
        cache.resume_point(path, {**IDENTITY, "seed": 7}, force=False)
    assert cache.resume_point(path, {**IDENTITY, "seed": 7}, force=True) is None
    make_cache(path)
    with pytest.raises(KdcliError, match=r"is complete \(3 epochs\); pass --force to recompute it, or --resume to keep it"):
        cache.resume_point(path, IDENTITY, force=False)
    assert cache.resume_point(path, IDENTITY, force=False, keep_complete=True) == 3
    damaged = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(damaged)  # a cache cut short: overwritten only when asked
    with pytest.raises(KdcliError, match="not a readable HDF5 file.*; pass --force to overwrite it"):
        cache.resume_point(path, IDENTITY, force=False)
    assert cache.resume_point(path, IDENTITY, force=True) is None


def test_a_cache_open_in_h5py_beside_kdcli_is_said_to_be_so_not_damaged(tmp_path):
    """HDF5 refuses to open one file with and without its file lock in one process: a notebook holding the cache
    in h5py.File(path) must not be told the cache is corrupt and to overwrite it."""
    path = make_cache(tmp_path / "c.h5")
    with h5py.File(path, "r"):
        with pytest.raises(KdcliError, match=r"c.h5 is open in this program .*locking=False\)$"):
            cache.open_cache(path)
        with pytest.raises(KdcliError, match="is open in this program") as refused:
            cache.resume_point(path, IDENTITY, force=False, keep_complete=True)
        assert "--force" not in str(refused.value)
    with h5py.File(path, "r", locking=False), cache.open_cache(path) as c:  # as the message says
        assert c.epochs_complete == E


def test_a_cache_of_other_augmentation_is_not_resumed(tmp_path):
    """Its new epochs would be views of this kdcli's augmentation under attributes that say another."""
    path = make_cache(tmp_path / "c.h5", complete=1)
    set_attr(path, "augment_pad", 2)
    with pytest.raises(KdcliError, match=r"other settings: augment_pad 2 \(now 4\); pass --force"):
        cache.resume_point(path, IDENTITY, force=False)


def test_only_a_cache_kdcli_wrote_may_be_overwritten(tmp_path):
    path = tmp_path / "c.h5"
    cache.check_may_write(path)  # nothing there
    make_cache(path)
    cache.check_may_write(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut short: still HDF5, unreadable
    cache.check_may_write(path)
    path.write_bytes(b"PK\x03\x04 a checkpoint")
    with pytest.raises(KdcliError, match=r"c.h5 is not an HDF5 file: pass another --out \(even --force overwrites only a cache kdcli wrote\)"):
        cache.check_may_write(path)
    path.unlink()
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(KdcliError, match="c.h5 is an HDF5 file that kdcli did not write: pass another --out"):
        cache.check_may_write(path)


def test_second_writer_refused(tmp_path):
    path = tmp_path / "c.h5"
    with cache.write_lock(path):
        with pytest.raises(KdcliError, match="being written by another dump-logits"):
            with cache.write_lock(path):
                pass
    with cache.write_lock(path):  # released on exit
        pass


def test_a_lock_file_on_a_filesystem_without_locks_reads_as_not_held(tmp_path, monkeypatch):
    """Nothing can be told there: "a dump-logits is writing it now" would send the user waiting for nothing."""
    import fcntl

    (tmp_path / "c.h5.lock").write_text("")
    assert not is_locked(tmp_path / "c.h5.lock") and not is_locked(tmp_path / "missing.lock")

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert not is_locked(tmp_path / "c.h5.lock")


def test_unwritable_path_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(KdcliError, match="cannot write .*file/c.h5"):
        with cache.write_lock(blocker / "c.h5"):
            pass
    with pytest.raises(KdcliError, match="cannot write .*file/c.h5"):
        make_cache(blocker / "c.h5")


def test_create_replaces_atomically(tmp_path):
    """A new cache is written beside the old one and renamed over it: no temporary file is left."""
    path = make_cache(tmp_path / "c.h5")
    make_cache(path, complete=1)
    assert cache.cache_info(path)["epochs_complete"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError(28, "No space left on device")], ids=["ctrl-c", "disk full"])
def test_create_stopped_leaves_the_old_cache_and_no_temporary_file(tmp_path, monkeypatch, stop):
    """Stopped while allocating (Ctrl-C, a full disk): the old cache is untouched and no hidden
    temporary file of the new cache's size is left behind."""
    path = make_cache(tmp_path / "c.h5", complete=1)
    before = path.read_bytes()

    def allocate(*args):
        raise stop

    monkeypatch.setattr(cache.os, "posix_fallocate", allocate, raising=False)
    with pytest.raises(KeyboardInterrupt if stop is KeyboardInterrupt else KdcliError):
        make_cache(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]


# Epoch 0 written into a disk with room for 1,000 bytes: past the file's header, short of every epoch's chunk.
AN_EPOCH_ON_A_FULL_DISK = """
import sys
sys.path.insert(0, sys.argv[2])
from kdcli import KdcliError, cache
from test_cache import epoch_arrays
with cache.CacheWriter(sys.argv[1]) as w:
    disk_full_past_here()
    try:
        w.write_epoch(0, *epoch_arrays(0))
    except KdcliError as e:
        print(e)
    print(w.epochs_complete)
"""


def test_an_epoch_the_disk_refuses_is_one_line_and_not_counted(tmp_path):
    """The space was reserved at creation, but a copy-on-write filesystem (or a failing disk) can still refuse an
    epoch's bytes. HDF5 would report it only as the dataset closed, where h5py prints it and the epoch counts as written."""
    path = make_cache(tmp_path / "c.h5", complete=0)
    child = on_a_full_disk(AN_EPOCH_ON_A_FULL_DISK, 1000, path, Path(__file__).parent)
    assert (child.returncode, child.stdout, child.stderr) == (0, f"cannot write {path}: File too large\n0\n", "")
    assert cache.cache_info(path)["epochs_complete"] == 0


def test_file_left_by_a_killed_writer_opens(tmp_path):
    """A writer killed while the file is open leaves the superblock's "open for writing" flag set
    (bytes 20-23 of a version-0 superblock); HDF5 must ignore it, for reading and for resuming."""
    path = make_cache(tmp_path / "c.h5", complete=1)
    with open(path, "r+b") as f:
        assert f.read(9)[8] == 0  # superblock version 0: kept by cache.LIBVER
        f.seek(20)
        f.write(b"\x01\x00\x00\x00")
    with cache.CacheWriter(path) as w:
        w.write_epoch(1, *epoch_arrays(1))
    with cache.open_cache(path, allow_partial=True) as c:
        assert c.epochs_complete == 2


def test_an_epoch_not_yet_complete_cannot_be_read(tmp_path):
    """Its storage is allocated but never written (FILL_TIME_NEVER): its bytes would be read as teacher logits."""
    with cache.open_cache(make_cache(tmp_path / "c.h5", complete=2), allow_partial=True) as c:
        c.epoch(1)
        with pytest.raises(IndexError, match="epoch 2 is not among the 2 complete epochs"):
            c.epoch(2)


def test_a_negative_epoch_is_not_read_as_one_from_the_end(tmp_path):
    with cache.open_cache(make_cache(tmp_path / "c.h5", complete=2), allow_partial=True) as c:
        with pytest.raises(IndexError, match="epoch -1 is not among the 2 complete epochs"):
            c.epoch(-1)


def test_students_stacked_on_one_cache_read_each_epoch_once(tmp_path, monkeypatch):
    """A group of S students asks for each epoch S times (Group.epoch_inputs): read and checked S times, an epoch of
    50,000 images cost 24 students 0.36 s before their first step, the GPU idle."""
    from kdcli.runs import CachedTargets

    checked, check = [], cache.check_finite
    monkeypatch.setattr(cache, "check_finite", lambda path, what, logits: (checked.append(what), check(path, what, logits)))
    with cache.open_cache(make_cache(tmp_path / "c.h5"), "b" * 64, C) as c:
        students = [CachedTargets(c, N) for _ in range(3)]
        for e in (1, 2, 1):  # another epoch is read afresh, and an earlier one again
            for aug, logits in (s.epoch(e) for s in students):
                np.testing.assert_array_equal(aug.numpy(), augment.params(0, e, N).numpy())
                np.testing.assert_array_equal(logits.numpy(), epoch_arrays(e)[1])
    assert checked == ["epoch 1", "epoch 2", "epoch 1"]


def test_epochs_are_written_in_order_only(tmp_path):
    """Epoch 1 written first would count epoch 0's never-written bytes as complete."""
    path = make_cache(tmp_path / "c.h5", complete=0)
    with cache.CacheWriter(path) as w, pytest.raises(AssertionError):
        w.write_epoch(1, *epoch_arrays(1))
    assert cache.cache_info(path)["epochs_complete"] == 0


def test_a_refused_cache_is_closed(tmp_path):
    """A cache refused (here: unfinished) is not left open while its error is still held: the dump that finishes it,
    in the same process, can write it (HDF5 refuses to open for writing a file this process holds open for reading)."""
    path = make_cache(tmp_path / "c.h5", complete=2)
    with pytest.raises(KdcliError, match="has 2 of 3 epochs") as refused:
        cache.open_cache(path)
    with cache.CacheWriter(path) as w:
        w.write_epoch(2, *epoch_arrays(2))
    assert cache.cache_info(path)["epochs_complete"] == 3 and refused.value


# ---------------------------------------------------------------- found by mutation testing (2026-11-27, second round)


def test_other_data_of_as_many_images_is_not_told_to_pass_subset(tmp_path):
    """--subset cannot make N images into the cache's N: the hint would send the user the wrong way."""
    with pytest.raises(KdcliError, match=r"this data has 20 images \(cccccccc…\): run dump-logits on it$"):
        cache.open_cache(make_cache(tmp_path / "c.h5"), fingerprint="c" * 64, num_images=N)


def test_a_cache_lacking_an_attribute_is_refused_in_one_line(tmp_path):
    path = make_cache(tmp_path / "c.h5")
    with h5py.File(path, "r+") as f:
        del f.attrs["train_fingerprint"]
    with pytest.raises(KdcliError, match=r"c.h5 is an HDF5 file but not a kdcli logit cache \(it lacks train_fingerprint\)"):
        cache.open_cache(path, fingerprint="b" * 64)


# ---------------------------------------------------------------- found by mutation testing (third round)


def test_an_epoch_is_fsynced_before_the_count_that_says_it_is_complete(tmp_path, monkeypatch):
    """A power cut keeps only what was fsynced, in no particular order: epoch e's bytes must reach the disk while
    epochs_complete still says e, or a cut could keep the new count and lose the epoch it counts."""
    path = make_cache(tmp_path / "c.h5", complete=0)
    with h5py.File(path, "r") as f:
        count_at, chunk = f["epochs_complete"].id.get_offset(), f["logits"].id.get_chunk_info(0)
    aug, logits = epoch_arrays(0)
    synced, fsync = [], os.fsync  # at each fsync: (the count in the file, whether epoch 0's logits are in it)

    def recording(fd):
        count = int(np.frombuffer(os.pread(fd, 8, count_at), np.int64)[0])
        synced.append((count, os.pread(fd, chunk.size, chunk.byte_offset) == logits.tobytes()))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    with cache.CacheWriter(path) as w:
        w.write_epoch(0, aug, logits)
    assert synced == [(0, True), (1, True)]


def test_a_cache_of_another_format_refused_is_closed(tmp_path):
    """As an unfinished cache (test_a_refused_cache_is_closed): a file refused for its format version is not held open
    while its error is, so the program that was told can mend it, here with h5py.File(path, "r+")."""
    path = make_cache(tmp_path / "c.h5")
    set_attr(path, "format_version", 2)
    with pytest.raises(KdcliError, match="cache format version 2") as refused:
        cache.cache_info(path)
    set_attr(path, "format_version", cache.FORMAT_VERSION)
    assert cache.cache_info(path)["epochs_complete"] == E and refused.value


# ---------------------------------------------------------------- found by mutation testing (2026-11-29)


def test_the_command_that_finishes_a_cache_gives_every_option_it_was_begun_with(tmp_path):
    """The "finish it with" of an unfinished cache, and the "finish it as it was begun" of a dump refused for its
    settings: without the dump's own --seed or --subset the command printed would be refused in turn (other
    settings: seed 7 (now 0)), printing itself again, and only --force, which loses the epochs done, was left."""
    path = make_cache(tmp_path / "c.h5", complete=1)
    begun = {"teacher": "/runs/t", "seed": 7, "dtype": "float32", "amp": "off", "data_dir": "/data/c", "subset": 100}
    set_attr(path, "config", json.dumps(begun))
    set_attr(path, "seed", 7)
    expected = {"--epochs": str(E), **{f"--{k.replace('_', '-')}": str(v) for k, v in begun.items()}, "--out": str(path)}

    def options_of(command):
        words = shlex.split(command)
        assert words[:2] == ["kdcli", "dump-logits"] and len(words) % 2 == 0, command
        return dict(zip(words[2::2], words[3::2]))

    with pytest.raises(KdcliError, match="finish it with `([^`]*)`") as unfinished:
        cache.open_cache(path)
    assert options_of(re.search("finish it with `([^`]*)`", str(unfinished.value))[1]) == expected
    with pytest.raises(KdcliError, match=r"finish it as it was begun \(`([^`]*)`\)") as refused:
        cache.resume_point(path, {**IDENTITY, "seed": 0}, force=False)  # what the command without --seed would ask
    assert options_of(re.search(r"finish it as it was begun \(`([^`]*)`\)", str(refused.value))[1]) == expected
