"""Runs and their folders: what one model trains on, where it writes, and what it records of where it ran.

    run = Run(config, DrawnAugmentation(seed, n))      # a teacher or a baseline student
    run = Run(config, CachedTargets(cache, n))         # a student of the logit cache
    with claim_folder(config.out):                     # one kdcli at a time writes in a folder
        state = resume.prepare_run_dir(config)         # None (new), a checkpoint to resume, or "done"

A run folder holds config.json, metrics.jsonl (one line per epoch), checkpoint.pt
and, once finished, summary.json (records.py reads and writes them); a run stopped by
a loss or weights not finite also holds diverged.json (DIVERGED). A folder holds one
run, and a sweep's folder only its students (check_run_folder, check_sweep_folder).
Whether a run in a folder starts, resumes or is refused is resume.py's.
"""

import errno
import functools
import math
import os
import re
import subprocess
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from kdcli import KdcliError, augment
from kdcli.checkpoint import CHECKPOINT
from kdcli.locks import is_locked, lock_or_refuse
from kdcli.records import check_record, read_json


class DrawnAugmentation:
    """A run without a cache (teacher, baseline student): it draws its own views from (seed, epoch)."""

    def __init__(self, seed: int, num_images: int):
        self.seed, self.num_images = seed, num_images

    def epoch(self, e: int):
        return augment.params(self.seed, e, self.num_images), None  # [N, 3], no soft targets


class CachedTargets:
    """A student of the cache: epoch e replays cached epoch e mod E, its views and its teacher logits, of
    the first `num_images` images (the cache also labels those a --val-size holds out)."""

    def __init__(self, cache, num_images: int):
        self.cache, self.num_images = cache, num_images

    def epoch(self, e: int):
        aug, logits = self.cache.epoch(e % self.cache.epochs_complete)  # [N, 3] int8, [N, C]
        return aug[: self.num_images], logits[: self.num_images]


@dataclass
class Run:
    """One model to train: its options, where its targets come from, and its folder."""

    config: object  # a TeacherConfig or StudentConfig
    targets: object  # DrawnAugmentation or CachedTargets
    inputs: dict = field(default_factory=dict)  # what it trains on, recorded in config.json beside its options and
    # compared on resume (check_same_inputs): the images' fingerprint, and for a student the cache's teacher, seed, epochs

    @property
    def dir(self) -> Path:
        return Path(self.config.out)

    @property
    def record(self) -> dict:
        """Its options and inputs, as its config.json records them (Group.start_folders adds what computed it: Group.ran_with)."""
        return {**asdict(self.config), **self.inputs}

    @property
    def temperature(self):
        return getattr(self.config, "temperature", 1.0)

    @property
    def distillation_weight(self):
        return getattr(self.config, "distillation_weight", 0.0)

    @property
    def hard_weight(self):
        return getattr(self.config, "hard_weight", 1.0)


LOCK = ".kdcli.lock"
# Written by a run stopped because its loss or weights were not finite (Group._diverged), and deleted once it trains
# again: the report leaves such a run out as diverged, not as unfinished (a seed that blew up is a result).
DIVERGED = "diverged.json"


@contextmanager
def claim_folder(out):
    """Make the folder `out` and hold an exclusive lock on its LOCK file while a run or sweep writes there:
    a second kdcli into the same folder (a job started twice) is refused instead of interleaving two
    runs' checkpoints and metrics. A file, not the folder itself, since NFS clients see only file locks."""
    out = Path(out)
    try:  # first: --force must not delete anything under an --out that cannot be a folder
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if e.errno == errno.EMFILE:  # a sweep holds one lock file open per student
            raise KdcliError(f"too many open files to hold the lock of {out}: raise the limit (ulimit -n), or sweep fewer students at once") from None
        raise KdcliError(f"cannot write to --out {out}: {e.strerror or e}") from None
    try:
        lock_or_refuse(fd, busy_message(out))
        try:  # the lock file may be older than the folder's permissions
            (out / ".write-test").touch()  # a fixed name, now that the folder is ours
            (out / ".write-test").unlink(missing_ok=True)  # another kdcli's, where the filesystem cannot lock
        except OSError as e:
            raise KdcliError(f"cannot write to --out {out}: {e.strerror or e}") from None
        yield out
    finally:
        os.close(fd)


def busy_message(out: Path) -> str:
    return f"{out} is in use by another kdcli training there (it holds {out / LOCK}): wait for it to end, or pass another --out"


def in_use(folder) -> bool:
    """Whether a kdcli is training in `folder` now (it holds the lock claim_folder takes)."""
    return is_locked(Path(folder) / LOCK)


def holds_a_run(folder) -> bool:
    """Whether a run's checkpoint or summary is in `folder` (not config.json: too common a name)."""
    return any(os.path.exists(os.path.join(folder, name)) for name in (CHECKPOINT, "summary.json"))


# Checked before claim_folder makes --out (a sweep's folder again once claimed): a run's folder neither holds other
# runs nor lies in a run's or a sweep's (but for that sweep's own students), and a sweep's holds no runs but its
# students. Their files would sit among each other's, the report would pool them, and an outer run could no longer resume.

def check_run_folder(out: Path):
    _check_not_a_file(out)
    if (out / "config.json").is_file() and not holds_a_run(out) and not kdcli_config(out):
        raise KdcliError(f"{out} holds a config.json that kdcli did not write, which a run would overwrite: give the run a folder of its own (--out)")
    if inner := next(runs_below(out), None):
        raise KdcliError(f"{out} holds other runs in its subfolders (e.g. {inner}): give this run a folder of its own (--out)")
    _check_not_inside_a_run_or_sweep(out, "this run")


def check_sweep_folder(out: Path):
    """A sweep's folder holds its students (T30/seed1, baseline/seed1: of any earlier sweep there too) and nothing
    else that is a run: `--out .` or `--out runs` would mix other runs into its report, or nest in another sweep."""
    _check_not_a_file(out)
    if holds_a_run(out):
        raise KdcliError(f"{out} holds a run of its own (its {CHECKPOINT} or summary.json): give the sweep a folder of its own (--out)")
    if stray := next((r for r in runs_below(out) if not _is_student_folder(r.relative_to(out))), None):
        raise KdcliError(f"{out} holds runs that are not a sweep's students (e.g. {stray}): give the sweep a folder of its own (--out)")
    _check_not_inside_a_run_or_sweep(out, "the sweep")


def _is_student_folder(relative: Path) -> bool:
    """Whether a run's path inside a sweep's folder is one sweep.student_configs makes: T<t>/seed<n> or baseline/seed<n>."""
    return len(relative.parts) == 2 and re.fullmatch(r"baseline|T[^/]+", relative.parts[0]) is not None and re.fullmatch(r"seed\d+", relative.parts[1]) is not None


def _check_not_a_file(out: Path):
    if out.exists() and not out.is_dir():
        raise KdcliError(f"--out {out} is a file, not a folder: pass another --out")


def _check_not_inside_a_run_or_sweep(out: Path, what: str):
    here = Path(out).resolve()
    for outer in here.parents:  # all the way up, a stat or two each: a report of the outer folder walks all the way down
        if _is_sweep_folder(outer):
            taken = not _is_students_own(here, outer)
        else:
            taken = _is_run_folder(outer)
        if taken:
            raise KdcliError(f"{out} is inside the folder of another run or sweep ({outer}): give {what} a folder of its own (--out)")


def _is_run_folder(folder: Path) -> bool:
    """A run finished or stopped (its checkpoint or summary), one in its first epoch (its config.json), or a run or
    sweep that a kdcli has just claimed (its held LOCK): a teacher's first epoch on a CPU takes half an hour."""
    return holds_a_run(folder) or bool(kdcli_config(folder)) or in_use(folder)


def _is_students_own(out: Path, sweep: Path) -> bool:
    """Whether `out` is one of the sweep's students, started already: its own folder, to resume or keep (train-student)."""
    return holds_a_run(out) and _is_student_folder(out.relative_to(sweep))


def _is_sweep_folder(folder: Path) -> bool:
    """A sweep holds its LOCK and its students; a folder of sweeps holds no LOCK, nor does a project whose
    stray LOCK (an old `--out .`) has no students beside it."""
    return (folder / LOCK).exists() and any(_is_student_folder(r.relative_to(folder)) for r in runs_below(folder, depth=2))


def runs_below(folder: Path, depth: float = math.inf):
    """The run folders strictly inside `folder`, up to `depth` levels down (a sweep's students are 2; all the way by
    default, as a report of `folder` walks), breadth first, so a large --out (`.`) whose first levels hold one costs
    only those. Links to folders are followed, each folder once, as the report follows them."""
    level, seen = [folder], {os.path.realpath(folder)}
    while level and depth > 0:
        inside = _unseen(_folders_in(level), seen)
        runs = {d for d in inside if holds_a_run(d) or (d / LOCK).exists()}  # LOCK: a sweep's student not started
        yield from (d for d in inside if d in runs)
        level = [d for d in inside if d not in runs]  # a run's folder holds files, not runs
        depth -= 1


def _folders_in(parents: list) -> list:
    inside = []
    for parent in parents:
        try:
            with os.scandir(parent) as entries:
                inside += [Path(e.path) for e in entries if e.is_dir()]
        except OSError:  # unreadable: nothing of ours in it
            pass
    return inside


def _unseen(folders: list, seen: set) -> list:
    """The folders not walked yet, each once (a link to a folder walked already, or to one above, ends there); `seen` grows."""
    fresh = []
    for d in folders:
        if (real := os.path.realpath(d)) not in seen:
            seen.add(real)
            fresh.append(d)
    return fresh


def kdcli_config(out: Path) -> dict:
    """The config.json a kdcli run wrote in `out` (it records kdcli_version), or {}: none, or another program's."""
    try:
        record = read_json(out / "config.json") if (out / "config.json").is_file() else {}
    except KdcliError:
        return {}
    return check_record(record, out / "config.json") if "kdcli_version" in record else {}


@functools.cache  # one git call per process, not one per run of a sweep
def git_commit(package: Path = Path(__file__).resolve().parent) -> str | None:
    """The commit of the kdcli checkout that `package` (this kdcli) is, with "-dirty" when its files differ
    from it; None for a kdcli installed from a wheel, which a repository around it (a user's project holding
    its virtualenv) would otherwise name."""
    top = _git(package, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != package.parent:
        return None
    commit = _git(package, "rev-parse", "HEAD")
    changed = _git(package, "status", "--porcelain", "--untracked-files=no", "--", ".")
    return None if commit is None else commit + ("-dirty" if changed else "")


def machine(device: torch.device) -> dict:
    """What computed a run or a dump, recorded beside kdcli's version and commit: the device (`--device auto` names
    none), torch's version and, on a CPU, torch's threads, which change the digits (README: Reproducibility).
    Recorded, never compared: a run or a dump may resume on another machine."""
    name = f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type
    threads = {"torch_threads": torch.get_num_threads()} if device.type == "cpu" else {}
    return {"resolved_device": name, "torch_version": str(torch.__version__), **threads}  # str: torch's is a subclass h5py cannot store


def _git(folder: Path, *args) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):  # no git on this machine
        return None
    return out.stdout.strip() if out.returncode == 0 else None
