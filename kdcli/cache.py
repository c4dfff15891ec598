"""The HDF5 logit cache: the teacher's logits on E augmented epochs, written by dump-logits, read by students.

    with write_lock(path):                                   # one writer at a time
        start = resume_point(path, identity, force)         # None: new file; k: k epochs are done
        check_room(path, epochs, N, M, C, dtype)             # where new: refused now if the disk cannot hold it
        create(path, attrs, labels, clean_logits, test_logits, epochs)
        with CacheWriter(path) as w:
            w.write_epoch(e, aug, logits)                    # [N, 3] int8, [N, C]
    with open_cache(path, data.fingerprint, data.num_classes) as cache:
        aug, logits = cache.epoch(e)                         # complete epochs only
    cache_info(path)                                         # what is in it (dump.verify_cache: is it right)

Layout (`h5ls -r` shows it):
    aug              int8 [E, N, 3]  crop y, crop x, flip: exactly augment.params(seed, e, N)
    logits           [E, N, C]       the teacher on those views, float16 or float32; one chunk per epoch
    labels           int64 [N]
    clean_logits     [N, C]          the teacher on the un-augmented training images
    test_logits      [M, C]          the teacher on the test set
    epochs_complete  int64 scalar    epochs 0..k-1 are on disk
and the attributes in REQUIRED_ATTRS.

Crash safety. An HDF5 file killed while its metadata is being changed can be left
unreadable, so metadata is never changed after creation: the whole file is built
in a temporary file (every dataset allocated up front, no fill, no timestamps,
all attributes set) and renamed into place; from then on writing an epoch
rewrites raw data bytes in place only, with os.pwrite where HDF5 allocated them
(tests/test_cache.py checks this byte for byte). Epoch e is on disk before
`epochs_complete` (a dataset, not an attribute, for that reason) moves past it,
so a kill at any moment leaves a readable file whose first `epochs_complete`
epochs are right (tests/test_dump.py kills a dump). SWMR does not do this: a
SIGKILLed SWMR writer leaves flags that block every later open until `h5clear`
is run.
"""

import json
import os
import shlex
import shutil
from contextlib import contextmanager, suppress
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import torch

from kdcli import KdcliError, __version__, augment, count, short
from kdcli.checkpoint import temporary_file_for, write_errors_as_one_line
from kdcli.locks import is_locked, lock_or_refuse

FORMAT_VERSION = 1
DATASETS = ("aug", "logits", "labels", "clean_logits", "test_logits", "epochs_complete")
SPEC_ATTRS = {f"augment_{k}": list(v) if isinstance(v, tuple) else v for k, v in augment.SPEC.items()}
REQUIRED_ATTRS = (
    "format_version", "kdcli_version", "created", "teacher_model", "teacher_sha256", "teacher_test_accuracy",
    "train_fingerprint", "num_images", "num_classes", "seed", "dtype", "epochs", "config", *SPEC_ATTRS,
)  # fmt: skip
# From superblock version 3 (libver "v110" on) HDF5 honours the "open for writing" flags a killed writer
# leaves set, and no one can open the file until h5clear; "v108" keeps a format that ignores them.
LIBVER = ("earliest", "v108")


def through_link(path) -> str:
    """`path`, or the file it links to (which may not exist yet): the cache is written as a new file renamed over its
    path, which would replace a link to a cache on another disk, leaving that file as it was; the lock and the room
    checked are the linked file's too."""
    return os.path.realpath(path) if os.path.islink(path) else str(path)


@contextmanager
def write_lock(path):
    """Hold an exclusive lock on `path`.lock while writing `path`: a second writer is refused rather than
    truncating the file under the first. HDF5's own lock is off here (see _open), and would not cover
    the temporary file anyway."""
    if Path(path).is_dir():  # refused before a lock file is left beside it
        raise _a_folder(path)
    lock_path = Path(f"{path}.lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileExistsError:  # mkdir's answer when the folder is a regular file
        raise KdcliError(f"cannot write {path}: {lock_path.parent} is not a directory") from None
    except OSError as e:
        raise KdcliError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        lock_or_refuse(fd, _busy(path))
        yield
    finally:
        os.close(fd)


def _a_folder(path) -> KdcliError:
    return KdcliError(f"cannot write {path}: it is a folder; pass --out a file path such as {Path(path) / 'logits.h5'}")


def _busy(path) -> str:
    return f"{path} is being written by another dump-logits (it holds {path}.lock): wait for it, or pass another --out"


def resume_point(path, identity: dict, force: bool, keep_complete: bool = False) -> int | None:
    """Where a dump into `path` starts: None for a new file, k to go on after k complete epochs.
    `identity` holds the attributes that must match to resume (teacher, data, seed, epochs, dtype and the
    teacher's precision: a resumed dump must not mix bf16 epochs with float32 ones). A complete cache is
    refused, or with keep_complete returned as done (k = its epochs)."""
    if force or not Path(path).exists():
        return None
    try:
        with _open(path) as f:
            attrs, done = _attrs(f), int(f["epochs_complete"][()])
    except OpenInThisProcess:
        raise  # the file is sound: --force would replace it for nothing
    except KdcliError as e:
        raise KdcliError(str(e) if "--force" in str(e) else f"{e}; pass --force to overwrite it") from None  # a damaged one says it already
    # A key the file lacks was not recorded by the kdcli that made it (teacher_precision before 2026-11-26): no check.
    differ = {k: f"{k} {short(attrs[k])} (now {short(v)})" for k, v in {**identity, **SPEC_ATTRS}.items() if k in attrs and attrs[k] != v}
    if differ:
        # Said before --force, which loses its epochs, where options it records set what differs: not another teacher's
        # weights (retrained since), images, precision (another GPU) or augmentation (another kdcli).
        can_finish = done < attrs["epochs"] and set(differ) <= {"seed", "epochs", "dtype"}
        finish = f"finish it as it was begun (`{dump_command(path, attrs)}`), " if can_finish else ""
        raise KdcliError(f"{path} was made with other settings: {', '.join(differ.values())}; {finish}pass --force to overwrite it, or pass another --out")
    if done >= attrs["epochs"] and not keep_complete:
        raise KdcliError(f"{path} is complete ({count(done, 'epoch')}); pass --force to recompute it, or --resume to keep it")
    return done


def dump_command(path, attrs: dict) -> str:
    """The dump-logits command that goes on with the cache at `path`, from the options its attributes record: a bare
    `kdcli dump-logits` finishes only a cache of the default teacher, epochs and settings."""
    from kdcli.dump import DumpConfig  # a student reads caches without the dump's code

    recorded = attrs.get("config") or {}
    args = ["kdcli", "dump-logits", *(["--teacher", recorded["teacher"]] if "teacher" in recorded else []), "--epochs", str(attrs["epochs"])]
    defaults = {f.name: f.default for f in fields(DumpConfig)}
    for name in ("seed", "dtype", "amp", "data_dir", "subset"):  # what resume_point compares, and which images
        if recorded.get(name, defaults[name]) != defaults[name]:
            args += [f"--{name.replace('_', '-')}", str(recorded[name])]
    return shlex.join([*args, "--out", str(path)])


def check_may_write(path):
    """Refuse an `--out` naming a file that is not a cache kdcli wrote (of any format version, or one too damaged
    to read), --force or not: a mistyped --out naming a checkpoint, a notebook or someone's dataset must not be
    overwritten, nor get a .lock file beside it. A folder, and a cache another dump is writing, are refused too:
    write_lock refuses them again, as it takes the lock."""
    path = Path(path)
    if path.is_dir():
        raise _a_folder(path)
    if is_locked(f"{path}.lock"):
        raise KdcliError(_busy(path))
    if not path.is_file():
        return
    with open(path, "rb") as f:
        hdf5 = f.read(8) == b"\x89HDF\r\n\x1a\n"  # HDF5's signature, at the start of every file kdcli writes
    try:
        with h5py.File(path, "r", locking=False) as f:
            ours = "kdcli_version" in f.attrs
    except OSError:
        ours = hdf5  # an HDF5 file too damaged to open: a cache cut short, most likely
    if not ours:
        what = "an HDF5 file that kdcli did not write" if hdf5 else "not an HDF5 file"
        raise KdcliError(f"{path} is {what}: pass another --out (even --force overwrites only a cache kdcli wrote)")


def check_room(path, epochs: int, num_images: int, num_test: int, num_classes: int, dtype: str):
    """Refuse a cache its disk cannot hold before anything is written: HDF5 hit by a full disk while creating the
    file can crash the process (h5py segfaults), and a mistyped --epochs would first write gigabytes of chunk index."""
    path, logit = Path(path), np.dtype(dtype).itemsize
    needed = epochs * num_images * (3 + num_classes * logit) + num_images * (8 + num_classes * logit) + num_test * num_classes * logit
    needed += 65536 + 256 * epochs  # HDF5's headers and chunk index: measured 14 KB + 113-175 bytes per epoch
    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise KdcliError(f"cannot write {path}: {epochs:,} epochs need {_size(needed)} and {path.parent} has {_size(free)} free; "
                         "pass fewer --epochs, free some space, or pass another --out")  # fmt: skip


def _size(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def create(path, attrs: dict, labels: np.ndarray, clean_logits: np.ndarray, test_logits: np.ndarray, epochs: int):
    """Write a new cache with every dataset allocated and no epoch complete; the logits arrays
    ([N, C] and [M, C]) are already in the storage dtype. Atomic: a kill leaves the old file or none."""
    path = Path(path)
    n, c = clean_logits.shape
    dtype = clean_logits.dtype
    attrs = {
        **attrs, **SPEC_ATTRS, "format_version": FORMAT_VERSION, "kdcli_version": __version__, "num_images": n,
        "num_classes": c, "epochs": epochs, "dtype": str(dtype), "config": json.dumps(attrs.get("config", {})),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    assert set(REQUIRED_ATTRS) <= set(attrs), set(REQUIRED_ATTRS) - set(attrs)
    tmp = path.with_name(f".{path.name}.tmp")  # one fixed name: write_lock makes it ours
    with temporary_file_for(path, tmp):  # a full disk or Ctrl-C leaves no temporary file of the cache's size
        with h5py.File(tmp, "w", libver=LIBVER, locking=False) as f:
            f.create_dataset("aug", (epochs, n, 3), np.int8, chunks=(1, n, 3), dcpl=_allocated_now())
            f.create_dataset("logits", (epochs, n, c), dtype, chunks=(1, n, c), dcpl=_allocated_now())
            f.create_dataset("labels", data=labels)
            f.create_dataset("clean_logits", data=clean_logits)
            f.create_dataset("test_logits", data=test_logits)
            f.create_dataset("epochs_complete", data=np.int64(0))  # written now, so its storage exists now
            f.attrs.update(attrs)
        with open(tmp, "r+b") as f:
            if hasattr(os, "posix_fallocate"):  # a full disk fails now, not hours later (Linux; not macOS)
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename on disk too: the epochs about to be fsynced into the file stay reachable after a power cut
        finally:
            os.close(folder)


def _allocated_now():
    """Dataset creation properties: storage allocated at creation and never filled, so that later
    writes only overwrite bytes (h5py's default already leaves out modification times)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


class _OpenFile:
    """A holder of the open h5py file `_file`, closed on leaving its `with` block."""

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CacheWriter(_OpenFile):
    """Fills a cache made by `create`, one epoch at a time, in order; hold `write_lock(path)` around it.

    An epoch's bytes go where HDF5 allocated them at creation, by os.pwrite, not through HDF5: HDF5 buffers a write
    and may fail it only as the dataset closes, where h5py prints the error and goes on (an epoch the disk refused
    would count as written), or crashes. HDF5 reads the file, to say where the bytes go; it never writes it."""

    def __init__(self, path):
        self.path = Path(path)
        with write_errors_as_one_line(path):
            self._file = h5py.File(self.path, "r", locking=False)
            try:
                self._fd = os.open(self.path, os.O_RDWR)
            except OSError:
                self._file.close()
                raise
        self._count = self._file["epochs_complete"]
        self.epochs_complete = int(self._count[()])

    def write_epoch(self, e: int, aug: np.ndarray, logits: np.ndarray):
        """aug [N, 3] int8, logits [N, C] in the storage dtype, for epoch e == epochs_complete."""
        assert e == self.epochs_complete, (e, self.epochs_complete)
        with write_errors_as_one_line(self.path):
            self._write_chunk("aug", e, aug)
            self._write_chunk("logits", e, logits)
            self._sync()  # epoch e is on disk ...
            _write_at(self._fd, np.asarray(e + 1, self._count.dtype).tobytes(), self._count.id.get_offset())  # ... before the count says so
            self._sync()
        self.epochs_complete = e + 1

    def _write_chunk(self, name: str, e: int, array: np.ndarray):
        """Epoch e of dataset `name`: its one chunk, allocated at creation and never compressed."""
        dataset = self._file[name]
        data = np.ascontiguousarray(array, dataset.dtype).tobytes()
        chunk = dataset.id.get_chunk_info_by_coord((e, 0, 0))
        assert len(data) == chunk.size, (name, array.shape, dataset.shape)
        _write_at(self._fd, data, chunk.byte_offset)

    def _sync(self):
        os.fsync(self._fd)  # survives a power cut, not only a kill

    def close(self):
        os.close(self._fd)
        self._file.close()


def _write_at(fd: int, data: bytes, offset: int):
    """All of `data` at `offset`: pwrite may write less than asked."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class LogitCache(_OpenFile):
    """An open, validated cache. Epochs are read one at a time (one chunk each), on the CPU."""

    def __init__(self, path, file):
        self.path, self._file = Path(path), file
        self.attrs = _attrs(file)
        self.epochs = self.attrs["epochs"]  # planned
        self.epochs_complete = int(file["epochs_complete"][()])  # read once: a dump may still be adding epochs
        self.num_images, self.num_classes = self.attrs["num_images"], self.attrs["num_classes"]
        self.labels = torch.from_numpy(file["labels"][:])  # [N] int64
        self.clean_logits = torch.from_numpy(file["clean_logits"][:])  # [N, C]
        self.test_logits = torch.from_numpy(file["test_logits"][:])  # [M, C]
        self._last = None  # (e, epoch e's tensors): the last epoch read

    def epoch(self, e: int) -> tuple:
        """(aug [N, 3] int8, logits [N, C] in the storage dtype) of complete epoch e. Students stacked in one group
        (a sweep's on a GPU) each ask for the same epoch in turn: it is read and checked once, and every one of them
        gets the same tensors (not to be written to). Read and checked for each, 24 students spent 0.36 s an epoch
        on it (50,000 images, 2 CPU cores; check_finite most of it), the GPU idle meanwhile."""
        if not 0 <= e < self.epochs_complete:
            raise IndexError(f"{self.path}: epoch {e} is not among the {self.epochs_complete} complete epochs")
        if self._last is None or self._last[0] != e:
            logits = torch.from_numpy(self._file["logits"][e])
            check_finite(self.path, f"epoch {e}", logits)  # else a student's first step ends in "loss is not finite"
            self._last = (e, (torch.from_numpy(self._file["aug"][e]), logits))
        return self._last[1]


def check_finite(path, what: str, logits: torch.Tensor):
    # A dump never writes one (dump.stored): the file was damaged since. A sum carries any NaN or inf, 15x faster than testing
    # each; a sum that is not finite is confirmed element by element, since large finite float32 logits can overflow it.
    if not bool(logits.float().sum().isfinite()) and not bool(logits.isfinite().all()):
        raise KdcliError(f"{path}: {what} holds logits that are not finite (NaN or inf): the file is damaged; make it again (dump-logits --force)")


def open_cache(path, fingerprint=None, num_classes=None, allow_partial=False, num_images=None) -> LogitCache:
    """Open the cache at `path` for reading, refusing (one KdcliError line) one that does not fit the data
    (`fingerprint`, `num_images`: of the training set), the model (`num_classes`) or this kdcli's augmentation,
    or is unfinished (with `allow_partial`, only one without a complete epoch)."""
    cache = LogitCache(path, _open(path))
    problem = _unfit(path, cache, fingerprint, num_classes, allow_partial, num_images)
    if problem:
        cache.close()
        raise KdcliError(problem)
    return cache


def _unfit(path, cache: LogitCache, fingerprint, num_classes, allow_partial, num_images) -> str | None:
    """Why open_cache refuses the cache it opened from `path`; None where it fits."""
    a, done = cache.attrs, cache.epochs_complete
    if fingerprint is not None and a["train_fingerprint"] != fingerprint:
        here = f"{num_images:,} images ({fingerprint[:8]}…)" if num_images is not None else f"other images ({fingerprint[:8]}…)"
        subset = f", or pass --subset {a['num_images']} if it was made with that" if num_images not in (None, a["num_images"]) else ""
        return (
            f"{path} has {count(done, 'epoch')} for {a['num_images']:,} images (fingerprint {a['train_fingerprint'][:8]}…); "
            f"this data has {here}: run dump-logits on it{subset}"
        )
    if num_classes is not None and a["num_classes"] != num_classes:
        return f"{path} holds logits for {a['num_classes']} classes; this data has {num_classes}: run dump-logits on it"
    if any(a.get(k) != v for k, v in SPEC_ATTRS.items()):
        made = {k: a.get(k) for k in SPEC_ATTRS}
        return f"{path} was made with augmentation {made}; this kdcli uses {SPEC_ATTRS}: run dump-logits again"
    if done == 0 or (done < cache.epochs and not allow_partial):
        finish = "a dump-logits is writing it now: wait for it" if is_locked(f"{path}.lock") else f"finish it with `{dump_command(path, a)}`"
        return f"{path} has no complete epoch yet: {finish}" if done == 0 else f"{path} has {done} of {cache.epochs} epochs: {finish}, or pass --allow-partial"
    return None


def check_cache_is_there(path, recorded_by=None):
    """Before the data loads: a mistyped --cache must not cost a download of CIFAR-10 first. `recorded_by`: the run
    --resume read the path back from, which may have started in another folder."""
    if not Path(path).exists():
        if is_locked(f"{path}.lock"):  # a dump writes the file whole, then renames it into place
            raise KdcliError(f"no cache at {path} yet: a dump-logits is making it (it holds {path}.lock); wait for its first epochs")
        if recorded_by:
            raise KdcliError(f"no cache at {path}, as {recorded_by} recorded (relative to the folder it started in): pass --cache, or run `kdcli dump-logits`")
        raise KdcliError(f"no cache at {path}: run `kdcli dump-logits` first (its --out is the file to read)")


def check_readable(path):
    """Before the data loads: a --cache that is not a kdcli cache must not cost a download of CIFAR-10 first."""
    _open(path).close()


def cache_info(path) -> dict:
    """What is in a cache (finished or not): attributes, datasets, size on disk, progress."""
    with _open(path) as f:
        attrs = _attrs(f)
        return {
            "path": str(path),
            "size_bytes": Path(path).stat().st_size,
            "epochs_complete": int(f["epochs_complete"][()]),
            "epochs": attrs["epochs"],
            "dtype": attrs["dtype"],
            "teacher_test_accuracy": attrs["teacher_test_accuracy"],
            "datasets": {name: {"shape": list(f[name].shape), "dtype": str(f[name].dtype)} for name in DATASETS},
            "attrs": attrs,
        }


def _open(path) -> h5py.File:
    """Open read-only and check that it is a kdcli cache of this format.

    HDF5's file lock is off (locking=False): the metadata never changes after creation, so a reader
    can safely open a cache a dump is still filling, and write_lock keeps writers apart."""
    path = Path(path)
    if path.is_dir():
        raise KdcliError(f"{path} is a folder; a cache is an .h5 file written by `kdcli dump-logits`")
    check_cache_is_there(path)
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as e:
        if _open_in_this_process(path):  # HDF5 refuses to open one file with and without its lock in one process
            raise OpenInThisProcess(f"{path} is open in this program with HDF5's file locking on (h5py.File's default): "
                                    "close it, or open it with h5py.File(path, 'r', locking=False)") from None  # fmt: skip
        if e.errno is not None:  # the system refused to open it (a file this user may not read): not the file's fault
            raise KdcliError(f"cannot read {path}: {os.strerror(e.errno)}") from None
        raise KdcliError(f"{path} is not a readable HDF5 file (truncated, corrupt or not a cache): {e}") from None
    problem = _not_a_cache_of_this_format(f, path)
    if problem:
        f.close()
        raise KdcliError(problem)
    return f


def _not_a_cache_of_this_format(f: h5py.File, path) -> str | None:
    """Why the open file `f` is not a cache this kdcli reads; None where it is one."""
    version = f.attrs.get("format_version")
    if version is not None and version != FORMAT_VERSION:
        return (
            f"{path} has cache format version {_plain(version)!r}; this kdcli (version {__version__}) reads version "
            f"{FORMAT_VERSION}: run dump-logits again, or read it with the kdcli that wrote it"
        )
    missing = [n for n in DATASETS if n not in f] + [a for a in REQUIRED_ATTRS if a not in f.attrs]
    if missing:
        return f"{path} is an HDF5 file but not a kdcli logit cache (it lacks {', '.join(missing)})"
    damage = _mistyped_attrs(f.attrs) or _misshapen_datasets(f)
    return f"{path} is damaged: {damage}; make it again (dump-logits --force)" if damage else None


def _is_json_object(value) -> bool:
    try:
        return isinstance(value, str) and isinstance(json.loads(value), dict)
    except ValueError:
        return False


def _is_int(value) -> bool:  # h5py gives numpy integers
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return _is_int(value) or isinstance(value, (float, np.floating))


# The attributes a reader relies on, and what dump-logits writes in each.
ATTR_KINDS = {
    **dict.fromkeys(("epochs", "num_images", "num_classes", "seed"), (_is_int, "an integer")),
    **dict.fromkeys(("dtype", "teacher_sha256", "train_fingerprint"), (lambda v: isinstance(v, str), "a string")),
    "teacher_test_accuracy": (_is_real, "a number"),
    "config": (_is_json_object, "a JSON object"),
    "teacher_train_images": (_is_int, "an integer"),  # absent from caches of before --val-size
}


def _mistyped_attrs(attrs) -> str | None:
    """The first attribute whose type is not the one dump-logits writes (an edited file)."""
    for name, (holds, kind) in ATTR_KINDS.items():
        if name in attrs and not holds(attrs[name]):  # the required ones are there (REQUIRED_ATTRS)
            return f"its attribute {name} is {_plain(attrs[name])!r}, not {kind}"
    return None


def _misshapen_datasets(f: h5py.File) -> str | None:
    """The first dataset whose shape or dtype contradicts the attributes (E epochs of N images, C classes, the storage
    dtype), or an epochs_complete outside 0..E: else a student reads past the end, or trains on other numbers."""
    e, n, c = (int(f.attrs[k]) for k in ("epochs", "num_images", "num_classes"))
    dtype = f.attrs["dtype"]
    expected = {"aug": ((e, n, 3), "int8"), "logits": ((e, n, c), dtype), "labels": ((n,), "int64"), "clean_logits": ((n, c), dtype),
                "test_logits": ((None, c), dtype), "epochs_complete": ((), None)}  # shape (None: any length), dtype (None: any)  # fmt: skip
    for name, (shape, kind) in expected.items():
        d = f[name]
        if not isinstance(d, h5py.Dataset):
            return f"its {name} is not a dataset"
        fits = len(d.shape) == len(shape) and all(want is None or got == want for got, want in zip(d.shape, shape))
        if not fits or kind is not None and str(d.dtype) != kind:
            said = "x".join("M" if want is None else str(want) for want in shape) or "a scalar"
            return f"its {name} is {list(d.shape)} {d.dtype}, where its attributes say {said}{f' {kind}' if kind else ''}"
    done = f["epochs_complete"][()]
    if not isinstance(done, np.integer) or not 0 <= done <= e:
        return f"its epochs_complete is {_plain(done)!r}, where its attributes say 0 to {e} epochs"
    return None


class OpenInThisProcess(KdcliError):
    """The cache is open through h5py elsewhere in this process, in a way HDF5 will not open it again here."""


def _open_in_this_process(path) -> bool:
    for file_id in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        with suppress(OSError):  # a file since deleted or replaced
            if os.path.samefile(os.fsdecode(file_id.name), path):
                return True
    return False


def _plain(value):
    """A value h5py read, as plain Python (numpy scalars and arrays become numbers and lists)."""
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value


def _attrs(f: h5py.File) -> dict:
    """HDF5 attributes as plain Python values."""
    out = {k: _plain(v) for k, v in f.attrs.items()}
    if isinstance(out.get("config"), str):
        out["config"] = json.loads(out["config"])
    return out
