"""Runs and their folders: what one model trains on, and where it writes.

    run = Run(config, DrawnAugmentation(seed, n))      # a teacher or a baseline student
    run = Run(config, CachedTargets(cache, n))         # a student of the logit cache
    with claim_folder(config.out):                     # one kdcli at a time writes in a folder
        state = prepare_run_dir(config)                # None (new), a checkpoint to resume, or "done"

A run folder holds config.json, metrics.jsonl (one line per epoch), checkpoint.pt
and, once finished, summary.json; a run stopped by a loss or weights not finite also
holds diverged.json (DIVERGED). --resume continues it, --force starts it over,
and anything else refuses to touch a run that is there.
"""

import errno
import functools
import json
import math
import os
import re
import subprocess
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from kdcli import KdcliError, augment, count
from kdcli.checkpoint import CHECKPOINT, load_checkpoint, peek_checkpoint, write_atomic
from kdcli.config import flag
from kdcli.locks import is_locked, lock_or_refuse
from kdcli.models import canonical_name


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
        lock_or_refuse(fd, _busy(out))
        try:  # the lock file may be older than the folder's permissions
            (out / ".write-test").touch()  # a fixed name, now that the folder is ours
            (out / ".write-test").unlink(missing_ok=True)  # another kdcli's, where the filesystem cannot lock
        except OSError as e:
            raise KdcliError(f"cannot write to --out {out}: {e.strerror or e}") from None
        yield out
    finally:
        os.close(fd)


def _busy(out: Path) -> str:
    return f"{out} is in use by another kdcli training there (it holds {out / LOCK}): wait for it to end, or pass another --out"


def in_use(folder) -> bool:
    """Whether a kdcli is training in `folder` now (it holds the lock claim_folder takes)."""
    return is_locked(Path(folder) / LOCK)


def check_can_start(config):
    """What of --out can be refused before any data or cache is loaded: its files, and what a checkpoint to --resume
    records (a refusal then costs nothing, and no warning about the data comes before it). prepare_run_dir checks
    it all again under the folder's lock, which is what counts."""
    out = Path(config.out)
    check_run_folder(out)
    if in_use(out):
        raise KdcliError(_busy(out))
    check_not_overwriting(config)
    # Before the cache opens: a --resume given another --subset than the run's is refused as that, not as a
    # cache of another length.
    if config.resume and not config.force and (out / CHECKPOINT).is_file():
        check_resumes(config, peek_checkpoint(out / CHECKPOINT), out)
    if getattr(config, "distillation_weight", 0) > 0:
        check_cache_readable(config.cache)


def check_cache_readable(path):
    from kdcli.cache import check_readable  # h5py is only needed by students of a cache

    check_readable(path)


def check_cache_is_there(path, recorded_by=None):
    """Before the data loads: a mistyped --cache must not cost a download of CIFAR-10 first. `recorded_by`: the run
    --resume read the path back from, which may have started in another folder."""
    if not Path(path).exists():
        if is_locked(f"{path}.lock"):  # a dump writes the file whole, then renames it into place
            raise KdcliError(f"no cache at {path} yet: a dump-logits is making it (it holds {path}.lock); wait for its first epochs")
        if recorded_by:
            raise KdcliError(f"no cache at {path}, as {recorded_by} recorded (relative to the folder it started in): pass --cache, or run `kdcli dump-logits`")
        raise KdcliError(f"no cache at {path}: run `kdcli dump-logits` first (its --out is the file to read)")


def check_sweep_can_start(out: Path, cache=None):
    """check_can_start for a sweep's own folder (its students' are checked as they are claimed) and the `cache`
    its KD students read (None: baselines alone, which read none)."""
    check_sweep_folder(out)
    if in_use(out):
        raise KdcliError(_busy(out))
    if cache is not None:
        check_cache_readable(cache)


def check_not_overwriting(config):
    """--out holds a run that only --force replaces (finished or not), or --resume continues or keeps."""
    out = Path(config.out)
    if config.force or config.resume:
        return
    if (out / "summary.json").exists():
        raise KdcliError(f"{out} holds a finished run: pass --force to overwrite it, or choose another --out")
    if (out / CHECKPOINT).exists():
        raise KdcliError(f"{out} holds an unfinished run: pass --resume to continue it, or --force to start over")


def prepare_run_dir(config):
    """Ready --out (claimed: claim_folder) for the run: a killed write's temporary files and, with --force, the old
    run deleted, what is left checked against --resume; return the checkpoint to resume from, 'done', or None."""
    out = Path(config.out)
    ckpt = out / CHECKPOINT
    for stale in out.glob(".*.tmp-*"):  # left by a process killed in write_atomic
        stale.unlink(missing_ok=True)
    if config.force:
        forget_run(out)
    check_not_overwriting(config)  # so what is left in --out is a run to --resume
    finished = (out / "summary.json").exists()  # --resume keeps it, but only for the options it was trained with
    if not ckpt.exists():
        if finished and (state := state_of_config_json(out)):
            check_same_options(config, state, out)
        return "done" if finished else None
    state = peek_checkpoint(ckpt) if finished else load_checkpoint(ckpt)
    check_resumes(config, state, out)
    return "done" if finished else state


def state_of_config_json(out: Path) -> dict | None:
    """For a finished run whose checkpoint was deleted (to save space): its options, as a checkpoint's state holds
    them, from the config.json it started with; None where kdcli wrote none there."""
    record = _kdcli_config(out)
    return {"config": record} if record else None


def check_resumes(config, state: dict, out: Path):
    """--resume: the checkpoint `state` in `out` is of the run `config` describes, and one to continue unless finished."""
    missing = [key for key in ("optimizer", "epoch", "step", "partial", "config") if key not in state]
    if missing and not (out / "summary.json").exists():
        raise KdcliError(f"{out / CHECKPOINT} is not a checkpoint of a run to resume (it lacks {', '.join(missing)}): pass --force to start over, or another --out")
    check_same_options(config, state, out)


def holds_a_run(folder) -> bool:
    """Whether a run's checkpoint or summary is in `folder` (not config.json: too common a name)."""
    return any(os.path.exists(os.path.join(folder, name)) for name in (CHECKPOINT, "summary.json"))


# Checked before claim_folder makes --out: a run's folder neither holds other runs nor lies in a run's or a sweep's
# (but for that sweep's own students), and a sweep's holds no runs but its students. Their files would sit among
# each other's, the report would pool them, and an outer run could no longer resume.

def check_run_folder(out: Path):
    _check_not_a_file(out)
    if (out / "config.json").is_file() and not holds_a_run(out) and not _kdcli_config(out):
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
    if outer := next((p for p in here.parents[:3] if holds_a_run(p) or (_is_sweep_folder(p) and not _is_students_own(here, p))), None):
        raise KdcliError(f"{out} is inside the folder of another run or sweep ({outer}): give {what} a folder of its own (--out)")


def _is_students_own(out: Path, sweep: Path) -> bool:
    """Whether `out` is one of the sweep's students, started already: its own folder, to resume or keep (train-student)."""
    return holds_a_run(out) and _is_student_folder(out.relative_to(sweep))


def _is_sweep_folder(folder: Path) -> bool:
    """A sweep holds its LOCK and its students; a folder of sweeps holds no LOCK, nor does a project whose
    stray LOCK (an old `--out .`) has no students beside it."""
    return (folder / LOCK).exists() and any(_is_student_folder(r.relative_to(folder)) for r in runs_below(folder, depth=2))


def runs_below(folder: Path, depth: int = 3):
    """The run folders strictly inside `folder`, up to `depth` levels down (a sweep's students are 2, a folder of
    sweeps' 3), breadth first, so a large --out (`.`) whose first levels hold one costs only those."""
    level = [folder]
    for _ in range(depth):
        inside = []
        for parent in level:
            try:
                with os.scandir(parent) as entries:
                    inside += [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
            except OSError:  # unreadable: nothing of ours in it
                pass
        runs = {d for d in inside if holds_a_run(d) or (d / LOCK).exists()}  # LOCK: a sweep's student not started
        yield from (d for d in inside if d in runs)
        level = [d for d in inside if d not in runs]  # a run's folder holds files, not runs


# --resume and the options a run recorded. The run's own (model, recipe, seed, --subset, ...) are read back where
# not given and refused where given otherwise (check_same_options). The others may change:
# - not read back: where the run is and what to do with it, and how this machine runs it (its defaults fit it);
NOT_READ_BACK = {"out", "resume", "force", "quiet", "device", "compile", "cuda_graphs"}
# - read back, yet free to differ: how a run computes, and where its inputs are (check_same_inputs checks the inputs
#   themselves). A resumed run may move to another device, which changes its precision anyway; --amp too (a bf16
#   run resumed under fp16 starts a fresh loss scale).
MAY_DIFFER = NOT_READ_BACK | {"amp", "eval_every", "save_every", "cache", "data_dir", "download", "allow_partial"}


# Options that runs written by an earlier kdcli do not record, and the value those runs trained as: a
# resumed or reported old run compares as this value, not as a different option.
OPTIONS_ADDED_LATER = {"val_size": 0}


def as_recorded_now(config: dict) -> dict:
    """A run's (or cache's) recorded options as this kdcli records them: options added later at the value
    old runs trained with, --amp (before 2026-11-27 a flag, true meaning bf16) as a precision, and the
    model by its own name (kdcli until 2026-11-27 recorded an alias as given: "1" for lenet5)."""
    now = {**OPTIONS_ADDED_LATER, **config}
    if isinstance(now.get("amp"), bool):
        now["amp"] = "bf16" if now["amp"] else "off"
    if "model" in now:
        now["model"] = canonical_name(now["model"])
    return now


def recorded_options(out, asked: dict) -> dict:
    """The options the run in `out` started with, as this kdcli names them (but NOT_READ_BACK); {} where no run
    started there. `asked`: the options given now, to refuse a student's read into a teacher's."""
    ckpt = Path(out) / CHECKPOINT
    if ckpt.is_file():
        recorded = peek_checkpoint(ckpt).get("config") or {}
    elif not (recorded := _kdcli_config(Path(out))):  # else a run stopped before its first checkpoint: its config.json
        return {}  # (its options, and Run.inputs, which no option is named after)
    recorded = as_recorded_now(recorded)
    if asked.get("force") and run_kind(recorded) != run_kind(asked):  # make passes --resume always, so --force must replace it
        warnings.warn(f"{out} holds a {run_kind(recorded)}'s run: --force replaces it with a new {run_kind(asked)}'s, of the options "
                      "given and the defaults (none of the run's own apply to it)", stacklevel=2)  # fmt: skip
        return {}
    check_same_kind(recorded, asked, out)
    return {k: v for k, v in recorded.items() if k not in NOT_READ_BACK}


IMAGE_OPTIONS = ("data_dir", "subset")  # which images a stage trains on or labels: said once, to the teacher


def options_of_inputs(options: dict) -> dict:
    """The images (IMAGE_OPTIONS) the stage before recorded: the teacher's run for dump-logits, the cache for a student of
    it; a later stage reads them back where not given. {} where that input cannot be read: the command
    itself then says why."""
    try:
        if "teacher" in options:
            recorded = peek_checkpoint(options["teacher"]).get("config") or {}
        elif options.get("cache") and options.get("distillation_weight", 0) > 0:
            from kdcli.cache import cache_info  # h5py is only needed by students of a cache

            recorded = cache_info(options["cache"])["attrs"].get("config") or {}
        else:
            return {}
    except KdcliError:
        return {}
    return {k: recorded[k] for k in IMAGE_OPTIONS if k in recorded}


def _kdcli_config(out: Path) -> dict:
    """The config.json a kdcli run wrote in `out` (it records kdcli_version), or {}: none, or another program's."""
    try:
        record = read_json(out / "config.json") if (out / "config.json").is_file() else {}
    except KdcliError:
        return {}
    return record if "kdcli_version" in record else {}


def forget_run(out):
    """--force: the run in `out` is to be trained anew (its config.json is rewritten when it starts)."""
    for name in ("summary.json", "metrics.jsonl", CHECKPOINT, DIVERGED):
        (Path(out) / name).unlink(missing_ok=True)


def run_kind(options: dict) -> str:
    return "student" if "cache" in options else "teacher"


def check_same_kind(saved: dict, now: dict, out):
    """A student never continues a teacher's run, nor the reverse (options recorded and asked for, as dicts)."""
    was, now = run_kind(saved), run_kind(now)
    if was != now:
        raise KdcliError(f"{out} holds a {was}'s run, not a {now}'s: pass another --out, or --force to start over")


def check_same_options(config, state, out, remedy="give the run's own (--resume takes them where left out), --force to start over, or another --out"):
    """The run in `out` (its checkpoint's `state`) is the run `config` describes: a teacher's or a student's, of
    the same model, with the same options (the CLI fills in those not given from the run: recorded_options)."""
    saved = as_recorded_now(state.get("config", {}))
    check_same_kind(saved, vars(config), out)
    if canonical_name(state.get("model_name", config.model)) != config.model:
        raise KdcliError(f"{out} holds a {state['model_name']}, not a {config.model} (--model); {remedy}")
    changed = [
        f"{flag(k)} {plain(getattr(config, k))!r} (run has {plain(saved[k])!r})"
        for k in saved
        if k not in MAY_DIFFER and hasattr(config, k) and plain(getattr(config, k)) != plain(saved[k])
    ]
    if changed:
        raise KdcliError(f"{out} was trained with other options: {', '.join(changed)}; {remedy}")


CACHE_IDENTITY = ("cache_teacher_sha256", "cache_seed", "cache_epochs")  # what a resumed student's cache must still be


def check_same_inputs(run):
    """A resumed or kept run must train on the images, and read the cache, it started with: otherwise it
    mixes two datasets, or two teachers (or two sets of views), in one run, or reports an old teacher's."""
    recorded = run.dir / "config.json"
    was = read_json(recorded) if recorded.exists() else {}

    def changed(keys):
        return [f"{k.removeprefix('cache_')} {short(was[k])} (now {short(run.inputs[k])})" for k in keys if k in was and k in run.inputs and was[k] != run.inputs[k]]

    if images := changed(["train_fingerprint"]):
        raise KdcliError(
            f"{run.dir} was trained on other images, not the training images given now ({images[0]}); "
            "pass its --data-dir and --subset, or --force to start over"
        )
    grew = was.get("allow_partial") and run.inputs.get("cache_epochs", 0) > was.get("cache_epochs", math.inf)
    if grew and not changed(["cache_teacher_sha256", "cache_seed"]):  # the same teacher and views, finished since
        raise KdcliError(
            f"{run.dir} was trained with --allow-partial while {run.config.cache} had {count(was['cache_epochs'], 'complete epoch')}; it now "
            f"has {run.inputs['cache_epochs']}, and a student replays cached epoch e mod E: --force to train it again on all of them"
        )
    if cache := changed(CACHE_IDENTITY):
        raise KdcliError(
            f"{run.dir} was trained from another cache than {run.config.cache} ({', '.join(cache)}); "
            "pass that cache, or --force to train it again"
        )


def short(value):
    """A sha256 (a fingerprint, a teacher's checkpoint) as its first 8 digits; anything else as it is."""
    return f"{value[:8]}…" if isinstance(value, str) and len(value) == 64 else value


def plain(value):
    """An option's value as JSON records it (a tuple as a list), so that a given value and a recorded one compare."""
    return list(value) if isinstance(value, tuple) else value


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


def read_json(path: Path) -> dict:
    """A JSON object kdcli wrote (config.json, summary.json), or one KdcliError line if it is unreadable or not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise KdcliError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise KdcliError(f"cannot read {path}: expected a JSON object")
    return data


def write_json(path: Path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def truncate_metrics(path: Path, epochs: int):
    """Keep the lines of epochs 1..`epochs`; drop later ones and a torn line (a write cut short by a full disk)."""
    if path.exists():
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["epoch"] <= epochs:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                pass
        write_text_atomic(path, "".join(line + "\n" for line in kept))  # a kill now leaves the old lines or the new


def write_text_atomic(path: Path, text: str):
    write_atomic(path, lambda f: f.write(text.encode()))


def append_line(path: Path, line: str):
    """Append one line, on disk before this returns. A full disk is one error line; the torn line it may leave
    is dropped when the run resumes (truncate_metrics)."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise KdcliError(f"cannot write {path}: {e.strerror or e}") from None
