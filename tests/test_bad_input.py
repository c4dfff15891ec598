"""Bad input through the CLI: exit status 1 (refused by the library) or 2 (a bad option value), no
traceback, a message of at most 3 lines that names the problem, and no file touched.

Covered (tests/test_cli.py has train-teacher's bad option values and train-student's bad temperatures):
- --cache of train-student and of sweep: not HDF5, truncated, made on other data (--subset), logits for
  another class count, an unknown format version, unfinished without --allow-partial, an attribute edited. A finished run
  at --out, with --force, is left as it was: the cache is refused before anything is deleted.
- --teacher of dump-logits: not a checkpoint, missing, the weights of another architecture, another
  class count, a pickle that runs code when loaded (it must not run). A finished cache at --out, with
  --force, is left as it was. The message gives torch's reason, not its "please file an issue".
- --data-dir: a batch file whose pickle would run code when loaded (it must not run), one this user may not read.
- --out: a finished run or cache without --force (train-teacher, train-student, dump-logits), a path
  under a regular file (all four commands).
- option values: --temperatures with 0, a negative or nan (sweep, named --temperatures); --epochs 0,
  --batch-size 0, a negative --lr or --val-size, a --val-size of every training image, an unknown
  --model, --scheduler, --optimizer, --dtype (train-student, sweep, dump-logits, where each has the
  option); --lr-milestones beyond --epochs warns once and runs.
- report on an empty or missing folder; cache-info on a missing and on a non-HDF5 file.
- a path the file system refuses (a name too long) at each command's path options; files and folders this user may
  not read (a cache, --out, a checkpoint, a run's metrics on --resume, a run folder in a sweep's report).
"""

import contextlib
import errno
import functools
import json
import os
import pickle
import re
import shlex
import shutil
import signal
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import run_kdcli_bound_by_permissions, write_cifar_folder
from typer.testing import CliRunner

import kdcli.train as train_module
from kdcli import KdcliError
from kdcli.cli import app
from kdcli.models import create_model
from kdcli.runs import claim_folder

CPU = ["--device", "cpu", "--no-download", "--quiet"]


def kdcli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def message(stderr):
    """The error itself: `error: ...` or the text in typer's usage box (not its frame, Usage/Try lines or warnings)."""
    skip = ("warning:", "Usage:", "Try ", "╭", "╰")
    return [line.strip("│ ") for line in stderr.splitlines() if line.strip() and not line.startswith(skip)]


def assert_refused(result, *words, codes=(1, 2)):
    assert result.exit_code in codes, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stdout + result.stderr
    lines = message(result.stderr)
    assert 1 <= len(lines) <= 3, result.stderr
    text = " ".join(lines)
    for word in words:
        assert word in text, (word, result.stderr)


def snapshot(*paths):
    """Every file under `paths` (files or folders) -> its bytes."""
    files = [q for p in paths for q in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {f: f.read_bytes() for f in files if f.is_file()}


def student_args(data_dir, cache, out, *extra):
    return ["train-student", "--epochs", 1, "--batch-size", 64, "--lr-milestones", "", "--data-dir", data_dir,
            "--cache", cache, "--out", out, *CPU, *extra]  # fmt: skip


def sweep_args(data_dir, cache, out, *extra):
    return ["sweep", "--epochs", 1, "--batch-size", 64, "--lr-milestones", "", "--temperatures", 4, "--seeds", 1,
            "--data-dir", data_dir, "--cache", cache, "--out", out, *CPU, *extra]  # fmt: skip


def dump_args(data_dir, teacher, out, *extra):
    return ["dump-logits", "--teacher", teacher, "--epochs", 2, "--dtype", "float32", "--data-dir", data_dir, "--out", out, *CPU, *extra]


def teacher_args(data_dir, out, *extra):
    return ["train-teacher", "--model", "lenet5", "--epochs", 1, "--batch-size", 64, "--lr-milestones", "",
            "--data-dir", data_dir, "--out", out, *CPU, *extra]  # fmt: skip


def save_teacher(path, model_name="lenet5", num_classes=10):
    torch.manual_seed(0)
    torch.save({"model": create_model("lenet5", num_classes).state_dict(), "model_name": model_name, "num_classes": num_classes}, path)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Runs here train in this process: one thread, since two OpenMP threads on two busy cores spin-wait (100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("bad-input")


@pytest.fixture(scope="module")
def teacher(root):
    return save_teacher(root / "teacher.pt")


@pytest.fixture(scope="module")
def cache(root, data_dir, teacher):
    """A finished 2-epoch cache (never modify it)."""
    result = kdcli(*dump_args(data_dir, teacher, root / "cache.h5"))
    assert result.exit_code == 0, result.output
    return root / "cache.h5"


@pytest.fixture(scope="module")
def student(root, data_dir, cache):
    """A finished student run (never modify it)."""
    result = kdcli(*student_args(data_dir, cache, root / "student"))
    assert result.exit_code == 0, result.output
    return root / "student"


@pytest.fixture(scope="module")
def teacher_run(root, data_dir):
    """A finished teacher run (never modify it)."""
    result = kdcli(*teacher_args(data_dir, root / "teacher-run"))
    assert result.exit_code == 0, result.output
    return root / "teacher-run"


# ---------------------------------------------------------------- --cache


def edit(**change):
    """A copy of the cache with attributes (or the epochs_complete dataset) changed."""

    def make(path, good):
        shutil.copy(good, path)
        with h5py.File(path, "r+") as f:
            for name, value in change.items():
                if name in f:
                    f[name][()] = value
                else:
                    f.attrs[name] = value

    return make


def with_classes(num_classes):
    """A copy of the cache as a dump of a teacher of `num_classes` outputs would have made it (arrays and attributes)."""

    def make(path, good):
        shutil.copy(good, path)
        with h5py.File(path, "r+") as f:
            for name in ("logits", "clean_logits", "test_logits"):
                shape, dtype = f[name].shape, f[name].dtype
                del f[name]
                f[name] = np.zeros((*shape[:-1], num_classes), dtype)
            f.attrs["num_classes"] = num_classes

    return make


BAD_CACHES = {
    "not-hdf5": (lambda path, good: path.write_text("not an HDF5 file\n"), [], ["not a readable HDF5 file"]),
    "truncated": (lambda path, good: path.write_bytes(good.read_bytes()[: good.stat().st_size // 2]), [], ["not a readable HDF5 file", "truncated"]),
    "other-data": (edit(), ["--subset", 100], ["fingerprint", "run dump-logits on it, or pass --subset 200 if it was made with that"]),
    "other-class-count": (with_classes(100), [], ["logits for 100 classes", "this data has 10"]),
    "format-version": (edit(format_version=99), [], ["format version 99", "reads version 1"]),
    "unfinished": (edit(epochs_complete=1), [], ["1 of 2 epochs", "--allow-partial"]),
    "edited-attribute": (edit(teacher_train_images="all"), [], ["is damaged: its attribute teacher_train_images is 'all', not an integer"]),
}


@pytest.mark.parametrize("kind", BAD_CACHES)
def test_student_refuses_a_bad_cache_and_keeps_its_run(tmp_path, data_dir, cache, student, kind):
    make, extra, words = BAD_CACHES[kind]
    make(tmp_path / "bad.h5", cache)
    shutil.copytree(student, tmp_path / "run")
    before = snapshot(tmp_path)
    assert_refused(kdcli(*student_args(data_dir, tmp_path / "bad.h5", tmp_path / "run", "--force", *extra)), *words, codes=(1,))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", BAD_CACHES)
def test_sweep_refuses_a_bad_cache(tmp_path, data_dir, cache, kind):
    make, extra, words = BAD_CACHES[kind]
    make(tmp_path / "bad.h5", cache)
    before = snapshot(tmp_path)
    assert_refused(kdcli(*sweep_args(data_dir, tmp_path / "bad.h5", tmp_path / "sweep", *extra)), *words, codes=(1,))
    assert snapshot(tmp_path) == before and not (tmp_path / "sweep").exists()


# ---------------------------------------------------------------- --teacher


class RunsCode:
    """Unpickling this runs a shell command (the classic __reduce__ attack)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


BAD_TEACHERS = {
    "not-a-checkpoint": (lambda path: path.write_text("not a checkpoint\n"), [str]),
    "missing": (lambda path: None, ["no teacher at", "train-teacher"]),
    "other-architecture": (lambda path: save_teacher(path, model_name="resnet18"),
                           ["weights do not fit resnet18 (missing stem.0.weight and ", " more; unexpected conv1.weight and 9 more)"]),
    "misshapen-weights": (lambda path: torch.save({"model": {**create_model("lenet5").state_dict(), "fc3.bias": torch.zeros(7)}, "model_name": "lenet5"}, path),
                          ["weights do not fit lenet5 (fc3.bias is [7], not [10])"]),
    "unknown-model": (lambda path: save_teacher(path, model_name="vgg16"), [str, "holds a 'vgg16', a model this kdcli does not know (it knows ", "resnet18"]),
    "other-class-count": (lambda path: save_teacher(path, num_classes=100), ["100 outputs", "10 classes"]),
    "runs-code": (lambda path: path.write_bytes(pickle.dumps({"model": RunsCode(path.with_name("pwned")), "model_name": "lenet5"})), ["weights_only"]),
}


@pytest.mark.parametrize("kind", BAD_TEACHERS)
def test_dump_refuses_a_bad_teacher_and_keeps_the_cache(tmp_path, data_dir, cache, kind):
    make, words = BAD_TEACHERS[kind]
    make(tmp_path / "teacher.pt")
    shutil.copy(cache, tmp_path / "c.h5")
    before = snapshot(tmp_path)
    result = kdcli(*dump_args(data_dir, tmp_path / "teacher.pt", tmp_path / "c.h5", "--force"))
    assert_refused(result, *[str(tmp_path / "teacher.pt") if w is str else w for w in words], codes=(1,))
    assert not (tmp_path / "pwned").exists(), "loading the teacher ran its code"
    after = snapshot(tmp_path)
    after.pop(tmp_path / "c.h5.lock", None)  # the dump's lock file (empty) may stay
    assert after == before


@pytest.mark.parametrize("kind, reason", [("not-a-checkpoint", "is not a checkpoint (not a file torch.save writes)"), ("runs-code", "unsupported")])
def test_unloadable_teacher_message_gives_the_reason(tmp_path, data_dir, kind, reason):
    BAD_TEACHERS[kind][0](tmp_path / "teacher.pt")
    result = kdcli(*dump_args(data_dir, tmp_path / "teacher.pt", tmp_path / "c.h5"))
    text = " ".join(message(result.stderr))
    assert result.exit_code == 1 and reason in text.lower() and "file an issue" not in text, text


@pytest.mark.parametrize("command", ["train-teacher", "evaluate"])
def test_a_data_file_that_runs_code_when_loaded_is_refused_and_does_not_run(tmp_path, data_dir, teacher_run, command):
    """A CIFAR-10 batch is a pickle: a copy from elsewhere (a re-encoded proxy) must not run code, as a checkpoint may not."""
    folder = shutil.copytree(data_dir, tmp_path / "data")
    batch = folder / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({b"data": RunsCode(tmp_path / "pwned"), b"labels": [0]}))
    args = teacher_args(folder, tmp_path / "run") if command == "train-teacher" else ["evaluate", teacher_run, "--data-dir", folder, "--device", "cpu"]
    assert_refused(kdcli(*args), f"{batch} is not a CIFAR-10 batch: its pickle asks for ", ".system, which could run code", codes=(1,))
    assert not (tmp_path / "pwned").exists(), "loading the data ran its code"


# ---------------------------------------------------------------- --out


@pytest.mark.parametrize("command", ["train-teacher", "train-student", "dump-logits"])
def test_finished_output_needs_force(tmp_path, data_dir, teacher, cache, student, teacher_run, command):
    finished, args, said = {
        "train-teacher": (teacher_run, lambda out: teacher_args(data_dir, out), "holds a finished run: pass --force"),
        "train-student": (student, lambda out: student_args(data_dir, cache, out), "holds a finished run: pass --force"),
        "dump-logits": (cache, lambda out: dump_args(data_dir, teacher, out), "is complete (2 epochs); pass --force"),
    }[command]
    out = tmp_path / finished.name
    (shutil.copytree if finished.is_dir() else shutil.copy)(finished, out)
    before = snapshot(tmp_path)
    assert_refused(kdcli(*args(out)), said, codes=(1,))  # not any refusal that names --force (an unfinished run's, another cache's)
    after = snapshot(tmp_path)
    after.pop(Path(f"{out}.lock"), None)
    assert after == before


@pytest.mark.parametrize("command", ["train-teacher", "train-student", "dump-logits", "sweep"])
def test_out_under_a_regular_file(tmp_path, data_dir, teacher, cache, command):
    (tmp_path / "file").write_text("a regular file\n")
    out = tmp_path / "file" / "out"
    args = {
        "train-teacher": teacher_args(data_dir, out),
        "train-student": student_args(data_dir, cache, out),
        "dump-logits": dump_args(data_dir, teacher, out),
        "sweep": sweep_args(data_dir, cache, out),
    }[command]
    assert_refused(kdcli(*args), "cannot write", str(out), codes=(1,))
    assert (tmp_path / "file").read_text() == "a regular file\n"


@pytest.mark.parametrize("command", ["train-teacher", "train-student", "sweep"])
def test_out_that_is_a_file_is_told_so_before_the_data_loads(tmp_path, cache, command):
    """A cache's path given as a run's --out, say: said as such, and before missing data could be blamed."""
    out, no_data = tmp_path / "c.h5", tmp_path / "no-data"
    out.write_text("a regular file\n")
    args = {"train-teacher": teacher_args(no_data, out), "train-student": student_args(no_data, cache, out), "sweep": sweep_args(no_data, cache, out)}[command]
    assert_refused(kdcli(*args), f"--out {out} is a file, not a folder", codes=(1,))
    assert out.read_text() == "a regular file\n"


def test_dump_out_under_a_regular_file_says_why(tmp_path, data_dir, teacher):
    (tmp_path / "file").write_text("a regular file\n")
    result = kdcli(*dump_args(data_dir, teacher, tmp_path / "file" / "c.h5"))
    assert result.exit_code == 1 and "not a directory" in result.stderr.lower(), result.stderr


# ---------------------------------------------------------------- option values


@pytest.mark.parametrize("value", ["1,0", "1,-1", "1,nan", "1,inf", "1,1e30", "1,1e-40", "1,0.0009"])
def test_sweep_refuses_a_bad_temperature(tmp_path, data_dir, cache, value):
    result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--temperatures", value))
    assert_refused(result, "must be between 0.001 and 10,000, got ", codes=(2,))
    assert not (tmp_path / "sweep").exists()


def test_sweep_bad_temperature_names_its_flag(tmp_path, data_dir, cache):
    assert_refused(kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--temperatures", "1,0")), "--temperatures", codes=(2,))


TRAINING = ["train-student", "sweep"]
BAD_OPTIONS = [
    *[(c, ["--epochs", 0], ["--epochs"]) for c in [*TRAINING, "dump-logits"]],
    *[(c, ["--batch-size", 0], ["--batch-size"]) for c in [*TRAINING, "dump-logits"]],
    *[(c, ["--lr", -0.1], ["--lr"]) for c in TRAINING],
    *[(c, ["--lr", 1e39], ["--lr", "float32's largest number"]) for c in TRAINING],  # a CPU optimizer's traceback in the first step
    ("train-student", ["--lr-gamma", 1e40, "--lr-milestones", 1, "--epochs", 2], ["--lr-gamma", "1e+40 at 1 milestone takes --lr 0.1 past"]),
    *[(c, ["--val-size", -1], ["--val-size", "must be >= 0"]) for c in TRAINING],
    *[(c, ["--subset", 100, "--val-size", 100], ["--val-size", "must be between 0 and 99 (the --subset images less one), got 100"]) for c in TRAINING],
    *[(c, ["--model", "nope"], ["nope", "lenet5", "resnet18"]) for c in TRAINING],
    *[(c, ["--scheduler", "nope"], ["--scheduler", "multistep"]) for c in TRAINING],
    *[(c, ["--optimizer", "nope"], ["--optimizer", "sgd"]) for c in TRAINING],
    ("dump-logits", ["--dtype", "float8"], ["--dtype", "float16"]),
    *[(c, ["--seed", s], ["--seed", "between 0 and 2**63 - 1"]) for c in ["train-student", "dump-logits"] for s in (-1, 2**63)],
    ("sweep", ["--seeds", f"1,{10**23}"], ["--seeds", "between 0 and 2**63 - 1"]),
    *[(c, ["--amp", "fp8"], ["--amp", "bf16", "fp16", "off"]) for c in [*TRAINING, "dump-logits"]],
    ("sweep", ["--distillation-weight", 0], ["--distillation-weight", "must be > 0 in a sweep", "--baseline"]),
    ("sweep", ["--hard-weight", 0], ["--hard-weight", "must be > 0 with --baseline"]),
    ("sweep", ["--resume"], ["Invalid value for '--resume': a sweep has none: run again with the same options, it goes on where it stopped"]),
    ("sweep", ["--seeds", "1,2,1"], ["--seeds", "values must not repeat (1 does)"]),
    ("sweep", ["--temperatures", "4,10,4"], ["--temperatures", "values must not repeat (4 does)"]),
    ("sweep", ["--temperatures", "1.0000001,1.0000002,2.0000001,2.0000002"], ["--temperatures", "1.0000001 and 1.0000002 would share the folder T1:"]),
    ("sweep", ["--seeds", ""], ["--seeds", "give at least one seed"]),
    ("sweep", ["--temperatures", "", "--no-baseline"], ["--temperatures", "nothing to train"]),
    ("sweep", ["--parallel", -1], ["--parallel", "must be >= 0, got -1"]),
    ("train-student", ["--lr-milestones", "0,5"], ["--lr-milestones", "must be epochs >= 1, got 0"]),
    *[(c, [option, ""], [option, "must not be empty"]) for c in [*TRAINING, "dump-logits"] for option in ("--out", "--data-dir")],  # `--out "$OUT"`, OUT unset
    *[(c, ["--cache", ""], ["--cache", "must not be empty"]) for c in TRAINING],
    ("dump-logits", ["--teacher", ""], ["--teacher", "must not be empty"]),
]


@pytest.mark.parametrize("command,option,words", BAD_OPTIONS, ids=lambda v: "_".join(map(str, v)) if isinstance(v, list) else v)
def test_bad_option_values(tmp_path, data_dir, teacher, cache, command, option, words, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an empty path would point
    out = tmp_path / "out"
    args = {"train-student": student_args, "sweep": sweep_args}.get(command)
    args = args(data_dir, cache, out, *option) if args else dump_args(data_dir, teacher, out, *option)
    assert_refused(kdcli(*args), *words, codes=(2,))
    assert not out.exists()


@pytest.mark.parametrize("command", TRAINING)
def test_holding_out_every_training_image_is_refused(tmp_path, data_dir, cache, command):
    out = tmp_path / "out"
    args = (student_args if command == "train-student" else sweep_args)(data_dir, cache, out, "--val-size", 200)
    assert_refused(kdcli(*args), "--val-size must be between 0 and 199", codes=(1,))
    assert not out.exists()


@pytest.mark.parametrize("checkpoints", ["kept", "deleted"])
def test_sweep_run_again_with_other_options_is_refused(tmp_path, data_dir, cache, checkpoints):
    """Its finished students were trained otherwise: reporting them as the new sweep's would be wrong. Also where
    their checkpoints were deleted to save space: their config.json says how they were trained."""
    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep")).exit_code == 0
    if checkpoints == "deleted":
        for checkpoint in (tmp_path / "sweep").glob("*/seed1/checkpoint.pt"):
            checkpoint.unlink()
    before = snapshot(tmp_path / "sweep")
    result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--lr", 0.05))
    assert_refused(result, "was trained with other options: --lr 0.05 (run has 0.1)", "--force", codes=(1,))
    assert snapshot(tmp_path / "sweep") == before


@pytest.mark.parametrize("other", [["--lr", 0.05], ["--model", "resnet8", "--parallel", 1]], ids=["lr", "model"])
def test_a_stopped_sweep_run_again_with_other_options_says_what_a_sweep_can_do(tmp_path, data_dir, cache, monkeypatch, other):
    """Its students stopped part-way: the advice is the sweep's (it has no --resume), not a single run's."""
    import kdcli.group as group_module
    from kdcli.losses import distillation_loss

    def loss(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return distillation_loss(*args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(group_module, "distillation_loss", loss)
        assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep")).exit_code == 130
    result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", *other))
    assert_refused(result, "run the sweep with the options it started with", "--force", codes=(1,))
    assert "--resume" not in result.stderr


@pytest.mark.parametrize("held", ["sweep", "sweep/T4/seed1"])
def test_a_sweep_into_a_folder_another_kdcli_trains_in_is_refused(tmp_path, data_dir, cache, held):
    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep")).exit_code == 0
    before = snapshot(tmp_path / "sweep")
    with claim_folder(tmp_path / held):  # the sweep itself, or one of its students trained alone
        result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--force"))
    assert_refused(result, f"{tmp_path / held} is in use by another kdcli", codes=(1,))
    assert snapshot(tmp_path / "sweep") == before  # --force deleted nothing


@pytest.fixture(scope="module")
def other_cache(root, data_dir):
    """A finished cache like `cache`, of another teacher (other weights)."""
    torch.manual_seed(1)
    teacher = root / "other-teacher.pt"
    torch.save({"model": create_model("lenet5").state_dict(), "model_name": "lenet5", "num_classes": 10}, teacher)
    result = kdcli(*dump_args(data_dir, teacher, root / "other.h5"))
    assert result.exit_code == 0, result.output
    return root / "other.h5"


def test_a_finished_student_is_kept_only_for_the_cache_it_read(tmp_path, data_dir, student, other_cache):
    """make always passes --resume: after a new teacher's cache, a finished student must not pass for its student."""
    shutil.copytree(student, tmp_path / "run")
    before = snapshot(tmp_path / "run")
    result = kdcli(*student_args(data_dir, other_cache, tmp_path / "run", "--resume"))
    assert_refused(result, "was trained from another cache than", "--force", codes=(1,))
    assert snapshot(tmp_path / "run") == before


@pytest.mark.parametrize("command", ["train-student", "sweep"])
def test_a_student_resumed_on_other_images_is_told_so_not_sent_to_dump_its_cache_again(tmp_path, data_dir, cache, student, command):
    """Resumed from another folder, its recorded --data-dir (relative) named another `data` there: the cache was blamed,
    with advice (dump-logits on these images) that made a cache of the wrong images."""
    if command == "train-student":
        shutil.copytree(student, tmp_path / "run")
        args = student_args(write_cifar_folder(tmp_path / "other", seed=1), cache, tmp_path / "run", "--resume")
    else:
        assert kdcli(*sweep_args(data_dir, cache, tmp_path / "run")).exit_code == 0
        args = sweep_args(write_cifar_folder(tmp_path / "other", seed=1), cache, tmp_path / "run")
    before = snapshot(tmp_path / "run")
    assert_refused(kdcli(*args), "was trained on other images", "pass its --data-dir and --subset", codes=(1,))
    assert "dump-logits" not in kdcli(*args).stderr and snapshot(tmp_path / "run") == before


def test_a_finished_student_is_kept_only_for_the_views_it_read(tmp_path, data_dir, teacher, student):
    """The same teacher dumped again with another --seed labelled other views: not the cache the student read.
    The seed is said whole (a 9-digit one once lost its last digit, as if cut like a sha256)."""
    assert kdcli(*dump_args(data_dir, teacher, tmp_path / "seed.h5", "--seed", 123456789)).exit_code == 0
    shutil.copytree(student, tmp_path / "run")
    before = snapshot(tmp_path / "run")
    result = kdcli(*student_args(data_dir, tmp_path / "seed.h5", tmp_path / "run", "--resume"))
    assert_refused(result, "was trained from another cache than", "seed 0 (now 123456789)", codes=(1,))
    assert snapshot(tmp_path / "run") == before


def test_a_student_of_a_partial_cache_that_grew_is_told_so(tmp_path, data_dir, cache):
    """Not "another cache ... pass that cache": it is the same file, finished since (--allow-partial)."""
    edit(epochs_complete=1)(tmp_path / "c.h5", cache)
    run = tmp_path / "run"
    assert kdcli(*student_args(data_dir, tmp_path / "c.h5", run, "--allow-partial")).exit_code == 0
    before = snapshot(run)
    again = kdcli(*student_args(data_dir, tmp_path / "c.h5", run, "--allow-partial", "--resume"))  # make's rerun: the cache as it was
    assert again.exit_code == 0 and snapshot(run) == before, again.output  # finished, and kept
    shutil.copy(cache, tmp_path / "c.h5")  # the dump went on: 2 of 2 epochs
    result = kdcli(*student_args(data_dir, tmp_path / "c.h5", run, "--resume"))
    assert_refused(result, "trained with --allow-partial while", "had 1 complete epoch; it now has 2", "--force", codes=(1,))
    assert "another cache" not in result.stderr


def test_a_student_of_a_partial_cache_replaced_by_another_teachers_longer_one_is_told_it_was_made_again(tmp_path, data_dir, cache, other_cache):
    """More epochs now, but of another teacher: not the message above, which would pass the new file for the old one
    finished; and said to be made again since (make logits after a new teacher does that), not only "another cache"."""
    edit(epochs_complete=1)(tmp_path / "c.h5", cache)
    run = tmp_path / "run"
    assert kdcli(*student_args(data_dir, tmp_path / "c.h5", run, "--allow-partial")).exit_code == 0
    shutil.copy(other_cache, tmp_path / "c.h5")  # 2 complete epochs, of other weights
    result = kdcli(*student_args(data_dir, tmp_path / "c.h5", run, "--resume"))
    assert_refused(result, f"was trained from another cache than the one now at {tmp_path / 'c.h5'} (", "teacher_sha256", "it was made again since", codes=(1,))
    assert "--allow-partial" not in result.stderr


def test_allow_partial_given_to_a_run_of_a_complete_cache_changes_nothing(tmp_path, data_dir, cache, student):
    """It only permits an unfinished cache: not an option of the run that a resume would call changed."""
    shutil.copytree(student, tmp_path / "run")
    before = snapshot(tmp_path / "run")
    result = kdcli(*student_args(data_dir, cache, tmp_path / "run", "--resume", "--allow-partial"))
    assert result.exit_code == 0 and snapshot(tmp_path / "run") == before, result.output
    assert "(finished already, kept: --force trains it again)" in result.stdout


def test_a_student_whose_cache_was_dumped_again_shorter_is_sent_back_to_its_cache(tmp_path, data_dir, teacher, student):
    """Not the message above: the run did not read a partial cache, and its cache did not grow."""
    shutil.copytree(student, tmp_path / "run")
    assert kdcli(*dump_args(data_dir, teacher, tmp_path / "short.h5", "--epochs", 1)).exit_code == 0
    result = kdcli(*student_args(data_dir, tmp_path / "short.h5", tmp_path / "run", "--resume"))
    assert_refused(result, "was trained from another cache than", "epochs 2 (now 1)", codes=(1,))


def test_a_run_is_not_trained_into_a_sweeps_folder_nor_a_sweep_into_a_runs(tmp_path, data_dir, cache, student):
    """Either way the report would pool the odd run with the sweep's students, or refuse it in puzzling words."""
    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep")).exit_code == 0
    before = snapshot(tmp_path / "sweep")
    for extra in ([], ["--force"]):
        assert_refused(kdcli(*student_args(data_dir, cache, tmp_path / "sweep", *extra)), "holds other runs in its subfolders", "seed1", codes=(1,))
    assert snapshot(tmp_path / "sweep") == before
    shutil.copytree(student, tmp_path / "run")
    before = snapshot(tmp_path / "run")
    assert_refused(kdcli(*sweep_args(data_dir, cache, tmp_path / "run", "--force")), "holds a run of its own", codes=(1,))
    assert snapshot(tmp_path / "run") == before


@pytest.mark.parametrize("out, said", [
    ("project", "holds runs that are not a sweep's students (e.g. {project}/teacher)"),  # `--out .` in a project
    ("project/runs", "holds runs that are not a sweep's students (e.g. {project}/runs/other)"),  # a folder of sweeps
    ("project/runs/other/T4", "holds runs that are not a sweep's students (e.g. {project}/runs/other/T4/seed1)"),
    ("project/runs/other/new", "is inside the folder of another run or sweep ({project}/runs/other)"),
])  # fmt: skip
def test_a_sweep_is_not_run_into_a_folder_of_other_runs_nor_into_another_sweep(tmp_path, data_dir, cache, student, out, said):
    """Its report would pool them with its students (or refuse them in puzzling words), and the other sweep's too."""
    project = tmp_path / "project"
    shutil.copytree(student, project / "teacher")  # any run will do
    assert kdcli(*sweep_args(data_dir, cache, project / "runs" / "other")).exit_code == 0
    before = snapshot(project)
    assert_refused(kdcli(*sweep_args(data_dir, cache, tmp_path / out)), said.format(project=project), codes=(1,))
    assert snapshot(project) == before


def test_a_student_is_not_trained_into_a_new_folder_inside_a_sweeps(tmp_path, data_dir, cache):
    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep")).exit_code == 0
    assert_refused(kdcli(*student_args(data_dir, cache, tmp_path / "sweep" / "mine")), "is inside the folder of another run or sweep", codes=(1,))
    # named like a student of it, but not one it started: only a started student's folder is its own
    assert_refused(kdcli(*student_args(data_dir, cache, tmp_path / "sweep" / "T4" / "seed2")), "is inside the folder of another run or sweep", codes=(1,))
    assert not (tmp_path / "sweep" / "T4" / "seed2").exists()
    # at any depth: the sweep's report walks its whole folder, and pooled a student 4 levels down into its table
    assert_refused(kdcli(*student_args(data_dir, cache, tmp_path / "sweep/a/b/c/mine")), f"inside the folder of another run or sweep ({tmp_path / 'sweep'})", codes=(1,))


def test_a_sweep_is_not_run_into_a_folder_holding_a_run_below_one_named_like_its_student(tmp_path, cache, student):
    """Only T<t>/seed<n> itself is a student's folder: a run further down is another's, which the student's report would pool."""
    shutil.copytree(student, tmp_path / "sweep" / "T4" / "seed1" / "old")
    before = snapshot(tmp_path / "sweep")
    result = kdcli(*sweep_args(tmp_path / "no-data", cache, tmp_path / "sweep"))
    assert_refused(result, "holds runs that are not a sweep's students", f"{tmp_path / 'sweep' / 'T4' / 'seed1' / 'old'}", codes=(1,))
    assert snapshot(tmp_path / "sweep") == before


@pytest.mark.parametrize("where", ["T4/seed1/a/b/old", "extra"], ids=["four levels down", "linked in"])
def test_a_sweep_is_not_run_into_a_folder_holding_another_run_deep_down_or_linked_in(tmp_path, cache, student, where):
    """Its report walks all the way down and follows links: it pooled such a run into the sweep's table."""
    if where == "extra":
        shutil.copytree(student, tmp_path / "elsewhere")
        (tmp_path / "sweep").mkdir()
        (tmp_path / "sweep" / "extra").symlink_to(tmp_path / "elsewhere")
    else:
        shutil.copytree(student, tmp_path / "sweep" / where)
    result = kdcli(*sweep_args(tmp_path / "no-data", cache, tmp_path / "sweep"))
    assert_refused(result, "holds runs that are not a sweep's students", str(tmp_path / "sweep" / where), codes=(1,))


def test_a_sweep_beside_an_earlier_student_linked_in_names_it_by_its_link(tmp_path, data_dir, cache):
    """The report counts a student linked into the sweep's folder: the check that the sweep fits beside it named it by
    the path it resolves to, outside the folder, and that was a traceback."""
    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "a", "--no-baseline")).exit_code == 0
    (tmp_path / "b" / "T4").mkdir(parents=True)
    (tmp_path / "b" / "T4" / "seed1").symlink_to(tmp_path / "a" / "T4" / "seed1")
    refused = kdcli(*sweep_args(data_dir, cache, tmp_path / "b", "--temperatures", 8, "--epochs", 2))
    assert_refused(refused, f"{tmp_path / 'b'} holds an earlier sweep's students (T4/seed1)", codes=(1,))
    result = kdcli(*sweep_args(data_dir, cache, tmp_path / "b", "--temperatures", 8))
    assert result.exit_code == 0 and "1 student of earlier sweeps" in result.stderr, result.output


def test_a_run_started_inside_a_sweeps_folder_while_its_data_loads_is_refused_by_the_sweep(tmp_path, monkeypatch, data_dir, cache, student):
    """The sweep checked its folder before loading the data, and a run started there meanwhile was pooled into its table."""
    import kdcli.sweep as sweep_module

    def load_while_a_run_starts(config):
        loaded = device_and_data(config)
        shutil.copytree(student, tmp_path / "sweep" / "mine")
        return loaded

    device_and_data = sweep_module.device_and_data
    monkeypatch.setattr(sweep_module, "device_and_data", load_while_a_run_starts)
    assert_refused(kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep")), "holds runs that are not a sweep's students", "mine", codes=(1,))
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == [".kdcli.lock", "mine"]  # no student started


@pytest.mark.parametrize("state", ["in its first epoch", "just claimed"])
def test_a_run_is_not_trained_inside_a_run_that_has_no_checkpoint_yet(tmp_path, data_dir, cache, student, state):
    """A teacher's first epoch on a CPU takes half an hour, with only its config.json and held lock in its folder;
    a sweep holds only its lock until its students' folders are made."""
    outer = tmp_path / "outer"
    outer.mkdir()
    if state == "in its first epoch":
        shutil.copy(student / "config.json", outer)
    with claim_folder(outer) if state == "just claimed" else contextlib.nullcontext():
        result = kdcli(*student_args(data_dir, cache, outer / "inner"))
    assert_refused(result, f"is inside the folder of another run or sweep ({outer})", codes=(1,))
    assert not (outer / "inner").exists()


def test_a_sweeps_own_student_is_still_resumed_and_kept_by_train_student(tmp_path, data_dir, cache):
    """Its folder lies in the sweep's, as its own: `make student STUDENT=runs/sweep/T4/seed1` keeps it."""
    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep")).exit_code == 0
    student = tmp_path / "sweep" / "T4" / "seed1"
    result = kdcli(*student_args(data_dir, cache, student, "--temperature", 4, "--seed", 1, "--resume"))
    assert result.exit_code == 0, result.output
    assert "kept" in result.stdout


def test_a_stray_lock_file_without_students_beside_it_is_no_sweep(tmp_path, data_dir):
    """An old `--out .` may have left one in a project: its runs must still train."""
    (tmp_path / ".kdcli.lock").touch()
    result = kdcli(*teacher_args(data_dir, tmp_path / "runs" / "teacher"))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", [student_args, sweep_args], ids=["train-student", "sweep"])
def test_a_missing_cache_is_said_before_any_data_is_loaded_or_downloaded(tmp_path, monkeypatch, command):
    """A mistyped --cache must not cost a 170 MB download first."""
    from kdcli import data as data_module

    monkeypatch.setattr(data_module, "_download", lambda *a, **kw: pytest.fail("CIFAR-10 was downloaded"))
    args = [a for a in command(tmp_path / "nodata", tmp_path / "typo.h5", tmp_path / "out") if a != "--no-download"]
    assert_refused(kdcli(*args), f"no cache at {tmp_path / 'typo.h5'}: run `kdcli dump-logits` first", codes=(1,))
    assert not (tmp_path / "nodata").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [student_args, sweep_args], ids=["train-student", "sweep"])
@pytest.mark.parametrize("cache_file", ["random.h5", "folder"])
def test_a_cache_that_is_no_cache_is_said_before_any_data_is_loaded_or_downloaded(tmp_path, monkeypatch, command, cache_file):
    from kdcli import data as data_module

    monkeypatch.setattr(data_module, "_download", lambda *a, **kw: pytest.fail("CIFAR-10 was downloaded"))
    path = tmp_path / cache_file
    path.mkdir() if cache_file == "folder" else path.write_bytes(os.urandom(4096))
    args = [a for a in command(tmp_path / "nodata", path, tmp_path / "out") if a != "--no-download"]
    assert_refused(kdcli(*args), "is a folder; a cache is" if cache_file == "folder" else "not a readable HDF5 file", codes=(1,))
    assert not (tmp_path / "nodata").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit", [{"test_accuracy": None}, {"epochs": "1"}], ids=["test_accuracy null", "epochs a string"])
def test_a_finished_run_whose_summary_was_edited_is_one_line_when_kept(tmp_path, data_dir, cache, student, edit):
    """--resume keeps a finished run and prints its summary: that was a traceback (a format code on None)."""
    shutil.copytree(student, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    (tmp_path / "run" / "summary.json").write_text(json.dumps({**summary, **edit}))
    field = next(iter(edit))
    assert_refused(kdcli(*student_args(data_dir, cache, tmp_path / "run", "--resume")), f"summary.json: its {field} is", codes=(1,))


@pytest.mark.parametrize("finished", [False, True], ids=["unfinished", "finished"])
def test_a_checkpoint_copied_in_from_another_run_is_neither_resumed_nor_kept(tmp_path, data_dir, cache, student, finished):
    """Its options are read back from it: the folder's run was "finished" as the other (1 epoch of 4000 planned, its
    metrics cut back), under its own config.json."""
    shutil.copytree(student, tmp_path / "run")
    assert kdcli(*student_args(data_dir, cache, tmp_path / "other", "--seed", 5)).exit_code == 0
    shutil.copy(tmp_path / "other" / "checkpoint.pt", tmp_path / "run" / "checkpoint.pt")
    if not finished:
        (tmp_path / "run" / "summary.json").unlink()
    before = snapshot(tmp_path / "run")
    result = kdcli("train-student", "--out", str(tmp_path / "run"), "--resume")
    assert_refused(result, "checkpoint.pt is another run's than its config.json's: --seed 5 (config.json: ", "--force", codes=(1,))
    assert snapshot(tmp_path / "run") == before


def test_an_option_read_back_from_an_edited_checkpoint_is_not_blamed_on_the_command_line(tmp_path, data_dir, cache, student):
    """It was "Invalid value for '--lr'", a usage error, for an option the user never typed."""
    shutil.copytree(student, tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    state["config"]["lr"] = "fast"
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    result = kdcli("train-student", "--out", str(tmp_path / "run"), "--resume")
    assert_refused(result, "--lr fast, read back from what a run or cache recorded, is refused by this kdcli (", "Pass --lr yourself", codes=(1,))
    assert "Invalid value" not in result.stderr


def test_an_option_typed_to_a_resume_is_refused_as_changed_before_one_read_back_is_checked_against_it(tmp_path, data_dir):
    """--subset 40 given to a run of --subset 100 --val-size 50: the read-back --val-size was refused as too large for
    the typed --subset, and blamed on an edited file; the typed option is what changed."""
    assert kdcli(*teacher_args(data_dir, tmp_path / "run", "--subset", 100, "--val-size", 50)).exit_code == 0
    result = kdcli("train-teacher", "--out", str(tmp_path / "run"), "--resume", "--subset", "40")
    assert_refused(result, "run was trained with other options: --subset 40 (run has 100)", codes=(1,))


@pytest.mark.parametrize("edit", [{"cache_epochs": "2", "allow_partial": True}, {"model": ["lenet5"]}], ids=["cache_epochs a string", "model a list"])
def test_a_config_json_edited_in_what_a_resume_reads_is_one_line(tmp_path, data_dir, cache, student, edit):
    """A TypeError in the check of the run's cache, or in reading its model back where its checkpoint was deleted."""
    shutil.copytree(student, tmp_path / "run")
    (tmp_path / "run" / "checkpoint.pt").unlink()
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    (tmp_path / "run" / "config.json").write_text(json.dumps({**record, **edit}))
    field = next(iter(edit))
    assert_refused(kdcli(*student_args(data_dir, cache, tmp_path / "run", "--resume")), f"config.json: its {field} is", codes=(1,))


@pytest.mark.parametrize("val_size", [10**6, 100], ids=["more", "all"])
def test_evaluate_refuses_a_checkpoint_edited_to_hold_out_more_images_than_it_trained_on(tmp_path, data_dir, teacher, val_size):
    """It printed an accuracy "on the 1,000,000 training images its run held out", of the few there are; holding out
    all of its --subset 100, its training images would be called held out."""
    state = torch.load(teacher, weights_only=True)
    state.setdefault("config", {}).update(val_size=val_size, subset=100)
    torch.save(state, tmp_path / "t.pt")
    result = kdcli("evaluate", str(tmp_path / "t.pt"), "--data-dir", str(data_dir), "--device", "cpu")
    assert_refused(result, f"records --val-size {val_size} of its 100 training images", codes=(1,))


def test_the_command_that_finishes_an_unfinished_cache_works_as_printed(tmp_path, data_dir, teacher):
    """It was a bare `kdcli dump-logits`, which finishes only a cache of the default teacher and settings, and a dump
    of other settings offered only --force, which loses the epochs done."""
    assert kdcli(*dump_args(data_dir, teacher, tmp_path / "c.h5", "--epochs", 3)).exit_code == 0
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        f["epochs_complete"][()] = 1  # as a dump stopped after its first epoch leaves it
    refused = kdcli(*student_args(data_dir, tmp_path / "c.h5", tmp_path / "run"))
    printed = re.search(r"finish it with `([^`]*)`", refused.stderr)[1]
    assert f"--teacher {shlex.quote(str(teacher.resolve()))} --epochs 3 --dtype float32" in printed, printed
    assert_refused(kdcli(*dump_args(data_dir, teacher, tmp_path / "c.h5", "--epochs", 5)), f"finish it as it was begun (`{printed}`), pass --force", codes=(1,))
    finished = kdcli(*shlex.split(printed)[1:], *CPU)
    assert finished.exit_code == 0 and "resumed at epoch 2" in finished.stdout, finished.output


def test_a_cache_edited_to_claim_more_epochs_than_it_holds_is_refused_by_every_command(tmp_path, data_dir, teacher, cache):
    """It was read past its end (an IndexError after the data loaded), and dump-logits --resume "resumed" it at an epoch beyond."""
    shutil.copy(cache, tmp_path / "c.h5")
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        f["epochs_complete"][()] = 5
    said = "c.h5 is damaged: its epochs_complete is 5, where its attributes say 0 to 2 epochs"
    assert_refused(kdcli(*student_args(data_dir, tmp_path / "c.h5", tmp_path / "run")), said, codes=(1,))
    assert_refused(kdcli("cache-info", str(tmp_path / "c.h5")), said, codes=(1,))
    dumped = kdcli(*dump_args(data_dir, teacher, tmp_path / "c.h5", "--resume"))
    assert_refused(dumped, f"{said}; make it again (dump-logits --force)", codes=(1,))
    assert dumped.stderr.count("--force") == 1, dumped.stderr  # the remedy said once


def test_a_teachers_run_is_refused_to_a_student_unless_forced_even_with_resume(tmp_path, data_dir, cache):
    """make's targets always pass --resume: `--force` must still replace a run of the other kind, as it says."""
    assert kdcli(*teacher_args(data_dir, tmp_path / "run")).exit_code == 0
    assert_refused(kdcli(*student_args(data_dir, cache, tmp_path / "run", "--resume")), "holds a teacher's run, not a student's", "--force", codes=(1,))
    replaced = kdcli(*[a for a in student_args(data_dir, cache, tmp_path / "run", "--resume", "--force") if a != "--quiet"])
    assert replaced.exit_code == 0, replaced.output
    assert "holds a teacher's run: --force replaces it with a new student's" in replaced.stderr  # not its options, nor "nothing to resume"
    assert "nothing to resume" not in replaced.stderr
    assert "cache" in json.loads((tmp_path / "run" / "config.json").read_text())


@pytest.mark.parametrize("text", ["[]", "{not json"])
def test_a_damaged_config_json_is_one_line_on_resume(tmp_path, data_dir, text):
    assert kdcli(*teacher_args(data_dir, tmp_path / "run")).exit_code == 0
    (tmp_path / "run" / "config.json").write_text(text)
    assert_refused(kdcli(*teacher_args(data_dir, tmp_path / "run", "--resume")), "config.json", codes=(1,))


@pytest.mark.parametrize("inside", ["sweeps/a/T4/seed1", "sweep/T4/seed1/.kdcli.lock", "deep/a/b/c/run"], ids=["a folder of sweeps", "a student not started", "four levels down"])
def test_a_run_is_not_trained_into_a_folder_holding_runs_further_down(tmp_path, data_dir, student, inside):
    """A folder of sweeps holds its runs three levels down; a sweep's student that has not started holds only its lock;
    and a report of the folder walks all the way down."""
    if inside.endswith(".kdcli.lock"):
        (tmp_path / "out" / inside).parent.mkdir(parents=True)
        (tmp_path / "out" / inside).touch()
    else:
        shutil.copytree(student, tmp_path / "out" / inside)
    assert_refused(kdcli(*teacher_args(data_dir, tmp_path / "out" / inside.split("/")[0])), "holds other runs in its subfolders", codes=(1,))


def test_links_in_a_runs_folder_are_followed_each_folder_once(tmp_path, data_dir, student):
    """As the report follows them: a run linked in would join the folder's table, so it is refused; links back up
    (a loop) end where they meet a folder walked already, instead of walking forever."""
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "up").symlink_to(out)
    (out / "a" / "self").symlink_to(out / "a")
    (out / "b").symlink_to(tmp_path)  # above: holds out itself
    assert kdcli(*teacher_args(data_dir, out)).exit_code == 0
    (out / "b").unlink()
    (out / "b").symlink_to(student)
    assert_refused(kdcli(*teacher_args(data_dir, out, "--force")), f"holds other runs in its subfolders (e.g. {out / 'b'})", codes=(1,))


@pytest.mark.parametrize("why", ["holds a run of its own", "is in use by another kdcli"])
def test_a_sweep_into_a_refused_folder_is_told_so_before_its_data_loads(tmp_path, cache, student, why):
    """Not after seconds of loading, nor as missing data: the folder is what is wrong."""
    out = tmp_path / "out"
    if why == "holds a run of its own":
        shutil.copytree(student, out)
    with claim_folder(out) if why.startswith("is in use") else contextlib.nullcontext():  # another sweep's, say
        result = kdcli(*sweep_args(tmp_path / "no-data", cache, out))
    assert_refused(result, why, codes=(1,))


def test_no_run_or_sweep_is_trained_inside_another_runs_folder(tmp_path, data_dir, cache, student):
    """The outer run could no longer resume (its folder would hold runs), and the report would mix them."""
    shutil.copytree(student, tmp_path / "run")
    before = snapshot(tmp_path / "run")
    assert_refused(kdcli(*student_args(data_dir, cache, tmp_path / "run" / "inner")), "is inside the folder of another run", codes=(1,))
    assert_refused(kdcli(*sweep_args(data_dir, cache, tmp_path / "run" / "a" / "sweep")), "is inside the folder of another run", codes=(1,))
    deep = tmp_path / "run" / "a" / "b" / "c" / "inner"  # at any depth: a report of the outer folder looks all the way down
    assert_refused(kdcli(*student_args(data_dir, cache, deep)), f"is inside the folder of another run or sweep ({tmp_path / 'run'})", codes=(1,))
    assert snapshot(tmp_path / "run") == before and not (tmp_path / "run" / "inner").exists()


def test_a_folder_holding_other_files_named_config_json_is_no_sweep(tmp_path, data_dir, cache):
    (tmp_path / "exp" / "notes").mkdir(parents=True)
    (tmp_path / "exp" / "notes" / "config.json").write_text("{}")
    assert kdcli(*student_args(data_dir, cache, tmp_path / "exp")).exit_code == 0


def test_a_sweep_run_again_with_another_cache_is_refused(tmp_path, data_dir, cache, other_cache):
    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--seeds", "1,2")).exit_code == 0
    result = kdcli(*sweep_args(data_dir, other_cache, tmp_path / "sweep", "--seeds", "1,2"))
    assert_refused(result, "was trained from another cache than", "; 1 more of this sweep's students are refused too", codes=(1,))  # not the first alone


def test_a_sweeps_stdout_is_its_table_alone_and_its_progress_goes_to_stderr(tmp_path, data_dir, cache):
    """`kdcli sweep > table.md` must catch the table, not the training log above it."""
    result = kdcli(*[a for a in sweep_args(data_dir, cache, tmp_path / "sweep") if a != "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (tmp_path / "sweep" / "results.md").read_text() + "\n", result.stdout  # typer.echo ends it with a newline
    assert "group 1 (0 of 2 students done): baseline/seed1\n" in result.stderr  # one at a time on a CPU: not "trained together"
    assert re.search(r"^epoch 1/1  loss ", result.stderr, re.M), result.stderr  # each student's one log line per evaluation, not a bar


def test_a_quiet_sweep_says_nothing_but_its_table(tmp_path, data_dir, cache):
    result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep"))  # --quiet
    assert result.exit_code == 0, result.output
    assert result.stdout == (tmp_path / "sweep" / "results.md").read_text() + "\n"
    assert result.stderr.splitlines() == [f"2 students (2 trained now) -> {tmp_path / 'sweep'}/results.md"], result.stderr


def table_rows(text):
    """The table's rows as (T, n, Δ cell), one per setting."""
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| lenet5")]
    return [(c[1], c[3], c[-1]) for c in cells]


def test_a_sweep_into_an_earlier_sweeps_folder_reports_the_folder(tmp_path, data_dir, cache):
    """More seeds added to a folder: its results.md, and the table on stdout, are the folder's, as `kdcli report` on it
    writes them, not the added seed's alone; --force trains its own students again and reports the earlier ones too."""
    out = tmp_path / "sweep"
    assert kdcli(*sweep_args(data_dir, cache, out, "--seeds", "1,2")).exit_code == 0
    before = snapshot(*out.glob("*/seed[12]"))
    for again in ([], ["--force"]):
        result = kdcli(*sweep_args(data_dir, cache, out, "--seeds", 3, *again))
        assert result.exit_code == 0, result.output
        assert [(t, n) for t, n, _ in table_rows(result.stdout)] == [("baseline", "3"), ("4", "3")], result.stdout  # seeds 1, 2 and 3
        assert result.stderr.splitlines() == [f"2 students (2 trained now) and 4 students of earlier sweeps -> {out}/results.md"], result.stderr
        assert result.stdout == (out / "results.md").read_text() + "\n"
        written = snapshot(out / "results.md", out / "results.csv")
        assert kdcli("report", out).stdout == result.stdout and snapshot(out / "results.md", out / "results.csv") == written
        assert snapshot(*out.glob("*/seed[12]")) == before  # the earlier students are reported, never trained again
    resumed = kdcli(*sweep_args(data_dir, cache, out, "--seeds", 1))  # a subset of the folder's seeds: still the folder's table
    assert resumed.stderr.splitlines() == [f"2 students (0 trained now) and 4 students of earlier sweeps -> {out}/results.md"], resumed.stderr
    assert [n for _, n, _ in table_rows(resumed.stdout)] == ["3", "3"]


def test_a_sweep_without_baselines_into_a_folder_holding_them_is_compared_with_them(tmp_path, data_dir, cache):
    """A --no-baseline sweep of another temperature: the folder's baselines are its table's, and its Δ column is filled."""
    out = tmp_path / "sweep"
    assert kdcli(*sweep_args(data_dir, cache, out, "--seeds", "1,2")).exit_code == 0
    (out / "T4" / "seed3").mkdir()  # an earlier sweep's student it stopped before starting: counted, as `kdcli report` counts it
    (out / "T4" / "seed3" / ".kdcli.lock").touch()
    result = kdcli(*sweep_args(data_dir, cache, out, "--seeds", "1,2", "--temperatures", 8, "--no-baseline"))
    assert result.exit_code == 0, result.output
    rows = table_rows((out / "results.md").read_text())
    assert [(t, n) for t, n, _ in rows] == [("baseline", "2"), ("4", "2"), ("8", "2")], rows
    assert re.fullmatch(r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", rows[2][2]), rows  # against the folder's baselines, not "no baseline"
    assert "1 run unfinished, left out." in result.stdout
    assert result.stdout == kdcli("report", out).stdout


@pytest.mark.parametrize("command", TRAINING)
def test_milestones_beyond_epochs_warn_once_and_run(tmp_path, data_dir, cache, command):
    args = (student_args if command == "train-student" else sweep_args)(data_dir, cache, tmp_path / "out", "--lr-milestones", "5")
    result = kdcli(*args)
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if "--lr-milestones" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: --lr-milestones 5 "), result.stderr
    assert list((tmp_path / "out").rglob("summary.json"))


@pytest.mark.parametrize("command", TRAINING)
@pytest.mark.parametrize("given, said", [
    (["--scheduler", "cosine", "--lr-milestones", "5"], "warning: --lr-milestones does nothing with --scheduler cosine: only multistep reads it"),
    (["--scheduler", "onecycle", "--lr-gamma", "0.5", "--lr-milestones", "1"], "warning: --lr-milestones and --lr-gamma do nothing with --scheduler onecycle: only multistep reads them"),
], ids=["milestones", "milestones and gamma"])
def test_a_multistep_option_given_to_another_schedule_warns_once_and_runs(tmp_path, data_dir, cache, command, given, said):
    """As --momentum with --optimizer adam: a value the user chose, which the schedule they chose never reads."""
    result = kdcli(*(student_args if command == "train-student" else sweep_args)(data_dir, cache, tmp_path / "out", *given))
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if "--lr-" in line] == [said], result.stderr
    assert list((tmp_path / "out").rglob("summary.json"))
    quiet = kdcli(*student_args(data_dir, cache, tmp_path / "default", "--scheduler", "cosine"))  # "" (none) given, or the defaults: nothing to say
    assert quiet.exit_code == 0 and "--lr-" not in quiet.stderr, quiet.output


def test_a_baseline_given_a_cache_is_told_it_does_not_read_it(tmp_path, data_dir, cache):
    """Its images are not the cache's (--subset is not read back from it), unlike a sweep's baselines."""
    result = kdcli(*student_args(data_dir, cache, tmp_path / "out", "--distillation-weight", 0, "--subset", 100))
    assert result.exit_code == 0, result.output
    assert "warning: --cache is not read with --distillation-weight 0: this student trains on --subset 100, not the cache's --subset all" in result.stderr
    same = kdcli(*student_args(data_dir, cache, tmp_path / "same", "--distillation-weight", 0))  # the cache's images: nothing to say
    assert same.exit_code == 0 and "--cache" not in same.stderr, same.output
    resumed = kdcli("train-student", "--out", tmp_path / "out", "--resume", "--force", "--quiet")  # --cache read back, not typed
    assert resumed.exit_code == 0 and "--cache" not in resumed.stderr, resumed.output
    assert "--cache" not in kdcli(*[a for a in student_args(data_dir, cache, tmp_path / "kd") if a != "--quiet"]).stderr


def test_a_baseline_given_the_caches_data_dir_spelled_otherwise_is_not_told_it_trains_on_other_images(tmp_path, data_dir, cache, monkeypatch):
    """The cache recorded its --data-dir as given to the dump (here absolute): `data`, `./data/` and a link to it name that folder too."""
    monkeypatch.chdir(data_dir.parent)
    (tmp_path / "link").symlink_to(data_dir)
    for spelled in (data_dir.name, f"./{data_dir.name}/", tmp_path / "link"):
        result = kdcli(*student_args(spelled, cache, tmp_path / "out", "--distillation-weight", 0, "--force"))
        assert result.exit_code == 0 and "--cache is not read" not in result.stderr, (spelled, result.stderr)


def test_a_baseline_given_a_cache_of_a_subset_does_not_take_the_caches_subset(tmp_path, data_dir, teacher):
    """The other way round: a cache of --subset 100 does not lend its subset to a baseline that reads no cache."""
    assert kdcli(*dump_args(data_dir, teacher, tmp_path / "c.h5", "--subset", 100)).exit_code == 0
    result = kdcli(*student_args(data_dir, tmp_path / "c.h5", tmp_path / "out", "--distillation-weight", 0))
    assert result.exit_code == 0, result.output
    assert "this student trains on --subset all, not the cache's --subset 100" in result.stderr
    assert json.loads((tmp_path / "out" / "config.json").read_text())["subset"] is None


def test_an_empty_out_with_resume_is_a_usage_error_before_any_run_is_read_back(tmp_path, student, monkeypatch):
    """`--out "$OUT" --resume` with OUT unset, in a run's folder: not "  holds a student's run", with a blank name."""
    monkeypatch.chdir(student)
    assert_refused(kdcli("train-teacher", "--out", "", "--resume"), "--out", "must not be empty", codes=(2,))


def test_a_baseline_refused_for_its_options_is_not_warned_about_a_cache_it_would_not_read(tmp_path, data_dir, cache):
    result = kdcli(*student_args(data_dir, cache, tmp_path / "out", "--distillation-weight", 0, "--hard-weight", 0, "--subset", 100))
    assert_refused(result, "--hard-weight", codes=(2,))
    assert "--cache is not read" not in result.stderr, result.stderr


@pytest.mark.parametrize("command", TRAINING)
def test_compile_where_it_does_nothing_says_so_once(tmp_path, data_dir, cache, command, monkeypatch):
    from kdcli import group

    monkeypatch.setattr(group, "warn_compile_does_nothing", functools.cache(group.warn_compile_does_nothing.__wrapped__))  # a process of its own
    if command == "sweep":  # four groups of one student: four models that would each compile
        args = sweep_args(data_dir, cache, tmp_path / "out", "--compile", "--parallel", 1, "--seeds", "1,2")
    else:
        args = student_args(data_dir, cache, tmp_path / "out", "--compile")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # as after any catch_warnings of the process, which forgets what was said
        result = kdcli(*args)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: --compile does nothing on cpu: it compiles a run trained alone on CUDA") == 1, result.stderr


def test_compile_without_triton_is_refused_before_force_deletes_the_run(tmp_path, data_dir, monkeypatch):
    """torch.compile looks for Triton at the first step, after --force has deleted the finished run: a CUDA machine
    without it (or with a GPU older than it supports) is refused first, and the run is left as it was."""
    out = tmp_path / "out"
    assert kdcli(*teacher_args(data_dir, out)).exit_code == 0
    before = snapshot(out)
    monkeypatch.setattr(train_module, "resolve_device", lambda name: torch.device("cuda"))  # refused before anything reaches it
    monkeypatch.setattr("torch.utils._triton.has_triton", lambda: False)
    assert_refused(kdcli(*teacher_args(data_dir, out, "--force", "--compile")), "--compile needs Triton", "--no-compile", codes=(1,))
    assert snapshot(out) == before


# ---------------------------------------------------------------- report and cache-info


def test_a_report_is_not_written_into_the_folder_of_a_run_or_sweep_it_does_not_report(tmp_path, data_dir, cache, student):
    """`report runs/sweep/T1 runs/sweep/baseline --out runs/sweep` would replace the sweep's own report with a part of it."""
    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep")).exit_code == 0
    own = (tmp_path / "sweep" / "results.md").read_text()
    shutil.copytree(student, tmp_path / "run")
    for out in (tmp_path / "sweep", tmp_path / "run"):
        result = kdcli("report", tmp_path / "sweep" / "T4", tmp_path / "sweep" / "baseline", "--out", out)
        assert_refused(result, f"--out {out} is the folder of a run or sweep, whose own report this would replace", codes=(2,))
    assert (tmp_path / "sweep" / "results.md").read_text() == own and not (tmp_path / "run" / "results.md").exists()
    combined = kdcli("report", tmp_path / "sweep", tmp_path / "run", "--out", tmp_path / "sweep")  # one of them, yet not its own report
    assert_refused(combined, f"--out {tmp_path / 'sweep'} is the folder of a run or sweep", codes=(2,))
    assert (tmp_path / "sweep" / "results.md").read_text() == own
    assert kdcli("report", tmp_path / "sweep", "--out", tmp_path / "sweep").exit_code == 0  # its own report, as without --out


def test_report_prints_the_table_and_where_it_wrote(tmp_path, student):
    result = kdcli("report", student, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert "| lenet5 | 30 | 0.1 | 1 |" in result.stdout and f"-> {tmp_path / 'report' / 'results.md'}" in result.stderr
    assert result.stdout == (tmp_path / "report" / "results.md").read_text() + "\n" and (tmp_path / "report" / "results.csv").exists()  # stdout: the table alone


def test_report_of_several_folders_asks_where_to_write(tmp_path, student):
    """Defaulting to the first folder would replace its own results.md (a sweep's) with the combined table."""
    sweep = tmp_path / "sweep"
    shutil.copytree(student, sweep / "T4" / "seed777")
    (sweep / "results.md").write_text("the sweep's own report")
    assert_refused(kdcli("report", sweep, student), "--out", "2 folders given", codes=(2,))
    assert (sweep / "results.md").read_text() == "the sweep's own report"


def test_report_on_a_folder_without_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_refused(kdcli("report", tmp_path / "empty"), "no finished run", codes=(1,))
    assert list((tmp_path / "empty").iterdir()) == []


def test_report_on_a_missing_folder(tmp_path):
    assert_refused(kdcli("report", tmp_path / "nowhere"), str(tmp_path / "nowhere"), codes=(1,))
    assert not (tmp_path / "nowhere").exists()


def test_report_of_an_empty_folder_name_is_refused(tmp_path, student, monkeypatch):
    """`kdcli report "$SWEEP"` with SWEEP unset: "" is the current folder, whose runs it would report and whose
    results.md (a project's own, say) it would replace."""
    shutil.copytree(student, tmp_path / "run")
    (tmp_path / "results.md").write_text("the project's notes")
    monkeypatch.chdir(tmp_path)
    assert_refused(kdcli("report", ""), "FOLDER must not be empty", codes=(2,))
    assert (tmp_path / "results.md").read_text() == "the project's notes" and not (tmp_path / "results.csv").exists()


def test_cache_info_on_a_missing_file(tmp_path):
    assert_refused(kdcli("cache-info", tmp_path / "nope.h5"), "no cache at", codes=(1,))


def test_cache_info_on_a_non_hdf5_file(tmp_path):
    (tmp_path / "notes.h5").write_text("not an HDF5 file\n")
    assert_refused(kdcli("cache-info", tmp_path / "notes.h5"), "not a readable HDF5 file", codes=(1,))
    assert (tmp_path / "notes.h5").read_text() == "not an HDF5 file\n"


def test_cache_info_verifies_against_the_teacher_on_the_given_data(tmp_path, data_dir, teacher, cache):
    result = kdcli("cache-info", cache, "--verify", 16, "--teacher", teacher, "--data-dir", data_dir, "--device", "cpu", "--no-download")
    assert result.exit_code == 0, result.output
    said = re.fullmatch(r"verify +ok: largest \|logit difference\| over 16 entries (\S+) \((\S+)% of an entry's largest \|logit\|; rounding stays under 2%\)", result.stdout.splitlines()[-1])
    assert said and float(said[1]) < 1e-4 and float(said[2]) < 1e-2  # float32 cache, same computation
    # what README promises besides: the metadata, the shapes and the size
    lines = result.stdout.splitlines()
    assert re.fullmatch(rf"{re.escape(str(cache))}: [\d.]+ MB, 2 of 2 epochs complete", lines[0]) and lines[1].startswith("teacher lenet5: ")
    assert re.search(r"^  logits +float32 +\[2, 200, 10\]$", result.stdout, re.M) and re.search(r"^  aug +int8 +\[2, 200, 3\]$", result.stdout, re.M)
    assert re.search(r"^  seed +0$", result.stdout, re.M) and re.search(r"^  teacher_sha256 +[0-9a-f]{64}$", result.stdout, re.M)
    everything = kdcli("cache-info", cache, "--verify", 10**6, "--teacher", teacher, "--data-dir", data_dir, "--device", "cpu", "--no-download")
    assert everything.exit_code == 0 and "largest |logit difference| over 400 entries " in everything.stdout  # 2 epochs x 200 images


@pytest.mark.parametrize("given, said", [(["--teacher", "T"], "--teacher is read"), (["--teacher", "T", "--data-dir", "D"], "--teacher and --data-dir are read")])
def test_cache_info_given_what_only_verify_reads_says_so_and_shows_the_cache(cache, given, said):
    """A user who meant to check the cache against a teacher, but left out --verify N, is told, not shown metadata alone unsaid."""
    result = kdcli("cache-info", cache, *given)
    assert result.exit_code == 0 and "epochs complete" in result.stdout, result.output
    assert result.stderr.splitlines() == [f"warning: {said} only by --verify N, which was not given: pass it to check the cache's logits against the teacher"]
    assert kdcli("cache-info", cache).stderr == ""


def test_cache_info_shows_the_dumps_options_as_json(cache):
    """Its config attribute as the file holds it (JSON), not as a Python dict: a user copies it into jq or json.loads."""
    result = kdcli("cache-info", cache)
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stdout.splitlines() if line.split()[0] == "config"]
    assert json.loads(line.split(None, 1)[1])["teacher"]


def test_cache_info_verify_reads_the_dumps_images_back_and_fails_a_damaged_cache(tmp_path, data_dir, teacher, cache):
    damaged = tmp_path / "damaged.h5"
    shutil.copy(cache, damaged)
    result = kdcli("cache-info", damaged, "--verify", 16, "--teacher", teacher, "--device", "cpu", "--no-download")  # no --data-dir
    assert result.exit_code == 0 and f"--data-dir {data_dir}: as the cache {damaged} recorded" in result.stderr
    with h5py.File(damaged, "r+") as f:
        f["logits"][:] = 5.0  # readable, the right shape, and wrong
    result = kdcli("cache-info", damaged, "--verify", 16, "--teacher", teacher, "--device", "cpu", "--no-download")
    assert_refused(result, "damaged.h5 fails verification: over 16 entries", "make it again (dump-logits --force)", codes=(1,))


@pytest.mark.parametrize("images", [{"seed": 1}, {"seed": 0, "train_per_batch": 10}], ids=["others", "fewer"])
def test_cache_info_verify_on_other_images_is_refused(tmp_path, teacher, cache, images):
    other = write_cifar_folder(tmp_path / "other", **images)  # "fewer": the first 50 of the cache's
    result = kdcli("cache-info", cache, "--verify", 16, "--teacher", teacher, "--data-dir", other, "--device", "cpu", "--no-download")
    assert_refused(result, "made on other training images than those in", codes=(1,))


def test_cache_info_on_a_folder(tmp_path):
    assert_refused(kdcli("cache-info", tmp_path), "is a folder", codes=(1,))


def test_a_finished_student_is_refused_without_a_warning_about_its_cache_first(tmp_path, data_dir, cache):
    out = tmp_path / "student"
    assert kdcli(*student_args(data_dir, cache, out)).exit_code == 0
    result = kdcli(*student_args(data_dir, cache, out, "--epochs", 5))  # more epochs than the cache: a warning, were it trained
    assert_refused(result, "holds a finished run", codes=(1,))
    assert "warning" not in result.stderr, result.stderr


def test_dump_into_a_folder_says_so_even_with_force(tmp_path, data_dir, teacher):
    (tmp_path / "out").mkdir()
    for extra in ([], ["--force"]):
        assert_refused(kdcli(*dump_args(data_dir, teacher, tmp_path / "out", *extra)), "it is a folder", "logits.h5", codes=(1,))
    assert list((tmp_path / "out").iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no out.lock either


def test_dump_resume_into_a_run_folder_is_a_dump_refused_not_a_run_resumed(tmp_path, data_dir, teacher):
    """A dump's --resume keeps a complete cache: it reads no run's options back (a student's would be refused)."""
    student = tmp_path / "student"
    student.mkdir()
    torch.save({**torch.load(teacher), "config": {"cache": "cache/logits.h5", "epochs": 1}}, student / "checkpoint.pt")
    result = kdcli(*dump_args(data_dir, teacher, student, "--resume"))
    assert_refused(result, "it is a folder", codes=(1,))


# ---------------------------------------------------------------- Ctrl-C: the printed command resumes


def run_printed_hint(result):
    """The `resume with:` command a Ctrl-C (or SIGTERM) printed, run as given."""
    assert result.exit_code in (130, 143) and "Traceback" not in result.output, result.output
    hint = result.stderr.split("resume with: ")[1].strip()
    return hint, kdcli(*shlex.split(hint)[1:])


def test_ctrl_c_in_a_sweep_prints_the_same_command_to_resume(tmp_path, data_dir, cache, monkeypatch):
    import kdcli.group as group_module
    from kdcli.losses import distillation_loss

    def loss(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return distillation_loss(*args, **kwargs)

    args = [str(a) for a in sweep_args(data_dir, cache, tmp_path / "sweep")]
    monkeypatch.setattr(sys, "argv", ["kdcli", *args])
    monkeypatch.setattr(group_module, "distillation_loss", loss)
    result = kdcli(*args)
    monkeypatch.setattr(group_module, "distillation_loss", distillation_loss)
    hint, resumed = run_printed_hint(result)
    assert "--resume" not in hint  # a sweep has no --resume: it resumes when run again
    assert resumed.exit_code == 0, resumed.output


def test_a_student_that_diverges_in_a_stacked_group_is_left_and_its_stack_mate_finishes_without_it(tmp_path, data_dir, cache):
    """A KD weight far too large blows up the KD student; the baseline stacked with it stops with it, not diverged,
    and trains on alone: the sweep writes its table, names the diverged student under it, and exits 1 saying why,
    in the sweep's own options (its --temperatures, not train-student's --temperature)."""
    result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--distillation-weight", "1e6", "--parallel", 2, "--quiet"))
    told = "(now 1.6e+07: --distillation-weight 1e+06, T 4 of --temperatures)"
    assert_refused(result, "1 of 2 students diverged and is left out of the table", "not finite at epoch 1", "T4/seed1", told, codes=(1,))
    assert "--temperature " not in result.stderr, result.stderr  # the warning as it went on, too
    assert "the sweep goes on without it" in result.stderr
    assert "baseline" not in result.stderr.splitlines()[-1]
    assert (tmp_path / "sweep" / "T4" / "seed1" / "diverged.json").exists()
    assert (tmp_path / "sweep" / "baseline" / "seed1" / "summary.json").exists() and not (tmp_path / "sweep" / "baseline" / "seed1" / "diverged.json").exists()
    assert "| lenet5 | baseline |" in result.stdout and "1 run diverged, left out: T4/seed1." in result.stdout
    assert (tmp_path / "sweep" / "results.md").read_text() in result.stdout  # the report of the folder, as kdcli report writes it


def test_a_sweep_goes_on_past_a_diverged_group_and_run_again_keeps_its_diverged_students(tmp_path, data_dir, cache):
    """Divergence leaves a student, not the sweep: the groups after it train. Run again, the sweep trains nothing:
    a diverged student is a result of its setting, which the same options would only diverge into again. Its progress
    counts students, not the groups made again without the diverged ones, and its closing line tells them apart."""
    args = sweep_args(data_dir, cache, tmp_path / "sweep", "--seeds", "1,2", "--distillation-weight", "1e6", "--parallel", 2)
    first = kdcli(*[a for a in args if a != "--quiet"])
    told = "2 of 4 students diverged and are left out of the table (T4/seed1, T4/seed2); the first: loss is not finite at epoch 1"
    assert first.exit_code == 1 and message(first.stderr)[-1].startswith(f"error: {told}"), first.stderr
    # "the first" is T4/seed1's record (its error names its own folder), not the last one's
    assert f"{tmp_path / 'sweep' / 'T4' / 'seed1'}): lower --lr" in message(first.stderr)[-1].split("; the first: ")[1], first.stderr
    # The baseline stacked with T4/seed1 starts over with the other seed's: three groups where two were made first.
    assert [line.split(")")[0] + ")" for line in first.stderr.splitlines() if line.startswith("group ")] == [
        "group 1 (0 of 4 students done)", "group 2 (1 of 4 students done)", "group 3 (3 of 4 students done)"], first.stderr
    assert f"4 students (4 trained now: 2 finished, 2 diverged) -> {tmp_path / 'sweep'}/results.md" in first.stderr.splitlines()
    for seed in (1, 2):
        assert (tmp_path / "sweep" / "baseline" / f"seed{seed}" / "summary.json").exists()
        assert (tmp_path / "sweep" / "T4" / f"seed{seed}" / "diverged.json").exists()
    before = snapshot(tmp_path / "sweep" / "T4")
    again = kdcli(*[a for a in args if a != "--quiet"])
    assert again.exit_code == 1 and message(again.stderr)[-1] == message(first.stderr)[-1], again.stderr
    assert "4 students: 2 finished before, 2 diverged before (kept: --force trains every student again), 0 to train" in again.stderr
    assert snapshot(tmp_path / "sweep" / "T4") == before
    assert again.stdout == first.stdout  # the same table, the same two left out under it
    assert "2 runs diverged, left out: T4/seed1, T4/seed2." in again.stdout
    runs = (tmp_path / "sweep" / "runs.csv").read_text().splitlines()
    for line, seed in zip(runs[-2:], (1, 2)):  # where each did: epoch 1, at a step of it
        assert re.fullmatch(rf"T4/seed{seed},lenet5,4.0,1000000.0,1.0,{seed},,,,,1,[1-4]", line), runs


def test_each_group_of_a_sweep_is_freed_before_the_next_one_is_made(tmp_path, data_dir, cache, monkeypatch):
    """A finished or diverged group's tensors (on a GPU: its weights, its epoch's soft targets, its CUDA graph's memory)
    go before the next group's come, not at Python's next garbage collection, which may be groups later: a Diverged
    and the frame it was raised from held each other, and with it the group (tests/test_cuda.py checks a Group and its
    GraphedStep). Garbage collection is off here, so that only references can free them."""
    import gc
    import weakref

    made, alive_when_made, Group = [], [], train_module.Group

    def group(*args, **kwargs):
        alive_when_made.append([ref() is not None for ref in made])
        g = Group(*args, **kwargs)
        made.append(weakref.ref(g))
        return g

    monkeypatch.setattr(train_module, "Group", group)
    args = sweep_args(data_dir, cache, tmp_path / "sweep", "--seeds", "1,2", "--distillation-weight", "1e6", "--parallel", 2)
    assert kdcli(*args).exit_code == 1  # once with garbage collected: torch's imports at a first group leave cycles of their own
    made.clear(), alive_when_made.clear()
    gc.disable()
    try:
        result = kdcli(*args, "--force")
    finally:
        gc.enable()
    assert result.exit_code == 1 and "2 of 4 students diverged" in result.stderr, result.output  # groups that diverged, and one that finished
    assert alive_when_made == [[], [False], [False, False]]


def test_a_student_that_diverged_before_its_first_checkpoint_is_kept_only_for_the_options_and_cache_it_diverged_with(tmp_path, data_dir, cache, other_cache):
    """It holds no checkpoint, only its config.json: run again with the --distillation-weight its error said to lower,
    or from another teacher's cache, it must be refused as a finished student is, not kept as diverged under options
    it never trained with (the error it repeated then said "now 1e+06" to a user who had just passed 0.5)."""
    args = sweep_args(data_dir, cache, tmp_path / "sweep", "--distillation-weight", "1e6", "--no-baseline")
    assert kdcli(*args).exit_code == 1 and not (tmp_path / "sweep" / "T4" / "seed1" / "checkpoint.pt").exists()
    before = snapshot(tmp_path / "sweep")
    lowered = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--distillation-weight", "0.5", "--no-baseline"))
    assert_refused(lowered, "T4/seed1 was trained with other options: --distillation-weight 0.5", "--force", codes=(1,))
    other = kdcli(*sweep_args(data_dir, other_cache, tmp_path / "sweep", "--distillation-weight", "1e6", "--no-baseline"))
    assert_refused(other, "T4/seed1 was trained from another cache", codes=(1,))
    assert snapshot(tmp_path / "sweep") == before


def test_ctrl_c_in_the_step_a_student_diverges_stops_the_sweep_counting_it_diverged_and_the_sweep_resumes(tmp_path, data_dir, cache, monkeypatch):
    """The stop finds the loss not finite before it saves: the student is left as diverged, its stack-mate unsaved,
    and the sweep stops between groups. Its line counts the diverged student, as the run that resumes does."""
    import kdcli.group as group_module
    from kdcli.losses import distillation_loss

    def ctrl_c_when_it_diverges(*args, **kwargs):
        loss = distillation_loss(*args, **kwargs)
        if not pressed and not bool(torch.isfinite(loss).all()):
            pressed.append(os.kill(os.getpid(), signal.SIGINT))
        return loss

    pressed = []
    args = [str(a) for a in sweep_args(data_dir, cache, tmp_path / "sweep", "--seeds", "1,2", "--distillation-weight", "1e6", "--parallel", 2)]
    monkeypatch.setattr(sys, "argv", ["kdcli", *args])
    with monkeypatch.context() as patch:
        patch.setattr(group_module, "distillation_loss", ctrl_c_when_it_diverges)
        stopped = kdcli(*args)
    assert "interrupted between groups of students: 0 of 4 finished, 1 diverged, each in its folder" in stopped.stderr, stopped.output
    assert (tmp_path / "sweep" / "T4" / "seed1" / "diverged.json").exists()
    hint, resumed = run_printed_hint(stopped)
    assert resumed.exit_code == 1 and "2 of 4 students diverged and are left out of the table (T4/seed1, T4/seed2)" in resumed.stderr, resumed.output
    assert "4 students (3 trained now: 2 finished, 1 diverged)" in resumed.stderr  # the diverged one was kept, not trained again


def test_a_sweep_into_a_folder_whose_earlier_sweep_diverged_under_another_recipe_is_refused(tmp_path, data_dir, cache):
    """The folder's table names the earlier sweep's diverged students under it, as a result of its recipe: students
    that diverged at --lr 1e4 must not be told as a setting that diverged at the default lr. Finished students of
    another recipe are refused already; diverged ones, too."""
    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--lr", "1e4", "--no-baseline")).exit_code == 1
    assert (tmp_path / "sweep" / "T4" / "seed1" / "diverged.json").exists()
    result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--temperatures", 8))
    assert_refused(result, "other lr", "holds an earlier sweep's students (T4/seed1)", "pass another --out", codes=(1,))
    assert not (tmp_path / "sweep" / "results.md").exists() and not (tmp_path / "sweep" / "T8").exists()


def test_a_sweep_whose_every_student_diverged_ends_with_the_divergence_not_an_empty_report(tmp_path, data_dir, cache):
    result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--distillation-weight", "1e6", "--no-baseline", "--quiet"))
    assert_refused(result, "the sweep's only student diverged: loss is not finite at epoch 1", "--distillation-weight", codes=(1,))
    assert "no finished run" not in result.stderr and not (tmp_path / "sweep" / "results.md").exists()


def test_a_sweep_whose_several_students_all_diverged_names_them_and_tells_the_first(tmp_path, data_dir, cache):
    result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--seeds", "1,2", "--distillation-weight", "1e6", "--no-baseline", "--quiet"))
    assert_refused(result, "every student diverged (T4/seed1, T4/seed2); the first: loss is not finite at epoch 1", codes=(1,))


def test_a_sweep_whose_every_student_diverged_still_reports_an_earlier_sweeps_students_in_its_folder(tmp_path, data_dir, cache):
    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--temperatures", "")).exit_code == 0  # baselines alone
    result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--distillation-weight", "1e6", "--no-baseline"))
    assert_refused(result, "the sweep's only student diverged: loss is not finite at epoch 1", codes=(1,))
    assert "| lenet5 | baseline |" in result.stdout and "1 run diverged, left out: T4/seed1." in (tmp_path / "sweep" / "results.md").read_text()


def test_a_divergence_a_full_disk_kept_from_being_recorded_ends_the_sweep_not_trains_it_again(tmp_path, data_dir, cache, monkeypatch):
    """Made again, the groups would hold the student whose diverged.json could not be written: it would diverge
    again, for ever. The sweep ends with the divergence instead, as it did before it went on past one."""
    import kdcli.group as group_module
    import kdcli.sweep as sweep_module

    def write_json(path, data):
        if path.name == "diverged.json":
            raise KdcliError(f"cannot write {path}: No space left on device")
        return real_write_json(path, data)

    def train_runs(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("trained the same group again and again")
        return real_train_runs(*args, **kwargs)

    real_write_json, real_train_runs, calls = group_module.write_json, sweep_module.train_runs, []
    monkeypatch.setattr(group_module, "write_json", write_json)
    monkeypatch.setattr(sweep_module, "train_runs", train_runs)
    result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--seeds", "1,2", "--distillation-weight", "1e6", "--parallel", 2))
    assert_refused(result, "not finite at epoch 1", "T4/seed1", codes=(1,))
    assert len(calls) == 1
    # Ended by a divergence, not refused: the students it never started keep their folders (a report counts them unfinished).
    assert (tmp_path / "sweep" / "T4" / "seed2").is_dir() and (tmp_path / "sweep" / "baseline" / "seed2").is_dir()


def test_a_sweep_started_over_stops_calling_its_students_diverged_before_it_trains_them(tmp_path, data_dir, cache, monkeypatch):
    """--force starts every student over: one that diverged before, not trained again yet (the sweep was stopped in
    the group before its own), is a student yet to train, not a diverged one."""
    import kdcli.group as group_module
    from kdcli.losses import distillation_loss

    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--distillation-weight", "1e6", "--parallel", 2)).exit_code == 1
    assert (tmp_path / "sweep" / "T4" / "seed1" / "diverged.json").exists()

    def ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return distillation_loss(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(group_module, "distillation_loss", ctrl_c)  # in the first group's first step: the baseline's
        stopped = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--distillation-weight", "0.5", "--parallel", 1, "--force"))
    assert stopped.exit_code == 130, stopped.output
    assert not (tmp_path / "sweep" / "T4" / "seed1" / "diverged.json").exists()
    assert_refused(kdcli("report", tmp_path / "sweep"), "no finished run", "(2 unfinished)", codes=(1,))


def test_ctrl_c_while_a_group_saves_its_last_epoch_stops_the_sweep_before_the_next(tmp_path, data_dir, cache, monkeypatch):
    """The step loop has ended, so only the sweep can still see that Ctrl-C: it must not carry on for hours."""
    import kdcli.group as group_module

    end_epoch = group_module.Group.end_epoch

    def ctrl_c_while_saving(group, seconds):
        os.kill(os.getpid(), signal.SIGINT)
        return end_epoch(group, seconds)

    args = [str(a) for a in sweep_args(data_dir, cache, tmp_path / "sweep", "--seeds", "1,2,3", "--no-baseline", "--parallel", 1)]
    monkeypatch.setattr(sys, "argv", ["kdcli", *args])
    monkeypatch.setattr(group_module.Group, "end_epoch", ctrl_c_while_saving)
    result = kdcli(*args)
    monkeypatch.setattr(group_module.Group, "end_epoch", end_epoch)
    assert "interrupted between groups of students: 1 of 3 finished" in result.stderr, result.output
    assert [p.parent.name for p in (tmp_path / "sweep").rglob("summary.json")] == ["seed1"]  # seeds 2 and 3 never started
    assert "2 runs unfinished, left out." in kdcli("report", tmp_path / "sweep", "--out", tmp_path / "report").stdout  # but is counted
    hint, resumed = run_printed_hint(result)
    assert resumed.exit_code == 0 and "3 students (2 trained now)" in resumed.stderr, resumed.output


def test_a_sweep_stopped_mid_epoch_resumes_under_a_larger_parallel(tmp_path, data_dir, cache, monkeypatch):
    """Students stopped at a step of the epoch train as a group of their own, apart from those not started, whatever --parallel now allows."""
    import kdcli.group as group_module
    from kdcli.losses import distillation_loss

    calls = [0]

    def loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:  # the first group, 3 students, stops at step 2 of 4; the fourth student never starts
            os.kill(os.getpid(), signal.SIGINT)
        return distillation_loss(*args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(group_module, "distillation_loss", loss)
        assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--seeds", "1,2", "--parallel", 3)).exit_code == 130
    resumed = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--seeds", "1,2", "--parallel", 4))
    assert resumed.exit_code == 0 and "4 students (4 trained now)" in resumed.stderr, resumed.output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_in_a_dump_says_what_is_kept_and_how_to_resume(tmp_path, data_dir, teacher, monkeypatch, capfd, signum):
    from kdcli import dump

    label, epochs_labelled = dump.teacher_logits, []

    def interrupted_at_epoch_1(model, images, aug, *args, **kwargs):
        if aug is not None:  # (None: the un-augmented train and test sets, labelled first)
            if epochs_labelled:
                os.kill(os.getpid(), signum)  # a real Ctrl-C or SIGTERM, handled while epoch 1 is being labelled
            epochs_labelled.append(aug)
        return label(model, images, aug, *args, **kwargs)

    args = [str(a) for a in dump_args(data_dir, teacher, tmp_path / "c.h5")]
    monkeypatch.setattr(sys, "argv", ["kdcli", *args])
    monkeypatch.setattr(dump, "teacher_logits", interrupted_at_epoch_1)
    result = kdcli(*args)
    monkeypatch.setattr(dump, "teacher_logits", label)
    assert result.exit_code == 128 + signum
    assert "quit at once, losing the epochs not yet written" in capfd.readouterr().err  # a dump has no checkpoint
    assert f"interrupted: {tmp_path / 'c.h5'} holds 1 of 2 epochs" in result.stderr, result.stderr
    hint, resumed = run_printed_hint(result)
    assert "--force" not in hint  # it would start over
    assert resumed.exit_code == 0 and "resumed at epoch 2" in resumed.stdout, resumed.output


def test_ctrl_c_in_a_forced_sweep_resumes_with_the_printed_command(tmp_path, data_dir, cache, other_cache, monkeypatch):
    """`sweep --force` after a new teacher's cache, stopped in its second student: the printed command (no
    --force, which would throw away the student already trained) must go on, not trip over old students."""
    import kdcli.group as group_module
    from kdcli.losses import distillation_loss

    base = ["--seeds", "1,2", "--parallel", 1]
    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", *base)).exit_code == 0
    calls = [0]

    def loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:  # in the second of four students (4 steps each)
            os.kill(os.getpid(), signal.SIGINT)
        return distillation_loss(*args, **kwargs)

    args = [str(a) for a in sweep_args(data_dir, other_cache, tmp_path / "sweep", *base, "--force")]
    monkeypatch.setattr(sys, "argv", ["kdcli", *args])
    monkeypatch.setattr(group_module, "distillation_loss", loss)
    result = kdcli(*args)
    monkeypatch.setattr(group_module, "distillation_loss", distillation_loss)
    assert not any((tmp_path / "sweep" / name).exists() for name in ("results.md", "results.csv", "runs.csv"))  # the old teacher's table must not pass for the new one's
    hint, resumed = run_printed_hint(result)
    assert "--force" not in hint and resumed.exit_code == 0, resumed.output
    assert "4 students (3 trained now)" in resumed.stderr  # the one finished under --force is kept


def test_a_stopped_sweep_run_again_with_another_cache_is_refused_before_any_student_trains(tmp_path, data_dir, cache, other_cache, monkeypatch):
    """Its stopped student reads the cache it started with or none: a student added meanwhile (T2), trained first from
    the other cache, would in turn be refused once the sweep is given back its own, and only --force would be left."""
    import kdcli.group as group_module
    from kdcli.losses import distillation_loss

    calls = [0]

    def loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 6:  # T4/seed1's second step of 4: baseline/seed1 took the first 4
            os.kill(os.getpid(), signal.SIGINT)
        return distillation_loss(*args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(group_module, "distillation_loss", loss)
        assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--parallel", 1)).exit_code == 130
    before = snapshot(tmp_path / "sweep")
    result = kdcli(*sweep_args(data_dir, other_cache, tmp_path / "sweep", "--temperatures", "2,4", "--parallel", 1))
    assert_refused(result, f"{tmp_path / 'sweep' / 'T4' / 'seed1'} was trained from another cache than", codes=(1,))
    assert snapshot(tmp_path / "sweep") == before  # T2/seed1 neither trained nor left behind


def test_a_sweep_refused_while_claiming_its_students_leaves_no_folder_of_theirs(tmp_path, data_dir, cache, monkeypatch):
    """Too many open files at the third student's lock: the two folders made before it must not stay behind as
    lock-only folders, which the report would count as unfinished students."""
    import kdcli.sweep as sweep_module

    claims = []

    def claim_or_run_out_of_files(out):
        claims.append(out)
        if len(claims) == 3:
            raise KdcliError(f"too many open files to hold the lock of {out}")
        return claim_folder(out)

    monkeypatch.setattr(sweep_module, "claim_folder", claim_or_run_out_of_files)
    result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--temperatures", "4,8", "--seeds", "1,2"))
    assert_refused(result, "too many open files", codes=(1,))
    assert [p for p in (tmp_path / "sweep").rglob("*") if p.is_dir()] == []  # the sweep's own folder keeps only its lock


def test_an_out_whose_lock_file_is_writable_but_not_the_folder_is_one_clear_error(tmp_path, monkeypatch):
    """A run folder made read-only after a first run keeps a writable lock file, so taking the lock succeeds: the
    new run must still be refused at once, in one line, not fail later with a traceback at its first write.
    (Simulated: the tests may run as root, whom a chmod does not stop.)"""
    with claim_folder(tmp_path / "run"):  # a first run: the folder and its lock file exist
        pass
    touch = Path.touch

    def read_only_folder(self, *args, **kwargs):
        if self.parent == tmp_path / "run":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return touch(self, *args, **kwargs)

    monkeypatch.setattr(Path, "touch", read_only_folder)
    with pytest.raises(KdcliError, match=r"cannot write to --out .*run: Permission denied"):
        with claim_folder(tmp_path / "run"):
            pass


def test_an_unfinished_run_of_the_other_kind_is_not_said_to_resume(tmp_path, data_dir, cache):
    """A teacher's unfinished run given to a student without --resume: "pass --resume to continue it" would only
    lead to the next refusal (a student never resumes a teacher's run); the refusal says so at once."""
    assert kdcli(*teacher_args(data_dir, tmp_path / "run")).exit_code == 0
    (tmp_path / "run" / "summary.json").unlink()  # its checkpoint stays: stopped before it finished
    refused = kdcli(*student_args(data_dir, cache, tmp_path / "run"))
    assert_refused(refused, "holds a teacher's run, not a student's", "--force", codes=(1,))
    assert "--resume" not in refused.stderr


def test_a_run_of_the_other_kind_refused_without_force_is_not_said_to_be_replaced(tmp_path, data_dir, cache):
    """Without --force a teacher's run is refused to a student and left as it is: a warning that '--force replaces
    it with a new student's, of the options given and the defaults' would describe what did not happen."""
    assert kdcli(*teacher_args(data_dir, tmp_path / "run")).exit_code == 0
    refused = kdcli(*student_args(data_dir, cache, tmp_path / "run", "--resume"))
    assert_refused(refused, "holds a teacher's run, not a student's", "--force", codes=(1,))
    assert "replaces it" not in refused.stderr


def test_a_sweep_students_checkpoint_that_cannot_resume_is_one_line(tmp_path, data_dir, cache):
    """A student's checkpoint without its optimizer (saved by hand, say): the sweep names it, it does not crash on it."""
    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep")).exit_code == 0
    student = tmp_path / "sweep" / "T4" / "seed1"
    state = torch.load(student / "checkpoint.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "optimizer"}, student / "checkpoint.pt")
    (student / "summary.json").unlink()
    assert_refused(kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep")), f"{student / 'checkpoint.pt'} is not a checkpoint of a run to resume (it lacks optimizer)", codes=(1,))


def test_a_sweep_of_baselines_alone_reads_no_cache_and_run_again_warns_of_nothing(tmp_path, data_dir):
    """--temperatures "": no cache needed; run again, nothing trains, so nothing (its --lr-milestones) is warned about."""
    args = [a for a in sweep_args(data_dir, tmp_path / "no-cache.h5", tmp_path / "sweep", "--temperatures", "", "--lr-milestones", 5) if a != "--quiet"]
    args[args.index("--lr-milestones") + 1] = 5  # the last one given wins; set the first as well
    first = kdcli(*args)
    assert first.exit_code == 0, first.output
    assert sorted(str(p.relative_to(tmp_path / "sweep")) for p in (tmp_path / "sweep").glob("*/seed*")) == ["baseline/seed1"]
    assert "warning: --lr-milestones" in first.stderr
    again = kdcli(*args)
    assert again.exit_code == 0, again.output
    assert "1 student: 1 finished before, 0 to train" in again.stderr and "warning" not in again.stderr, again.stderr


# ---------------------------------------------------------------- a GPU out of memory: one line, and what was saved stays

OUT_OF_MEMORY = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.20 GiB is free. "
                 "Process 77 has 77.98 GiB memory in use. If reserved but unallocated memory is large try setting "
                 "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.")  # fmt: skip
SAID = "out of GPU memory (it tried to allocate 2.00 GiB; 1.20 GiB of 79.19 GiB was free)"


def test_a_run_out_of_gpu_memory_ends_in_one_line_and_resumes_from_its_last_checkpoint(tmp_path, data_dir, cache, monkeypatch):
    import kdcli.group as group_module
    from kdcli.losses import distillation_loss

    def out_of_memory_in_epoch_2(*args, **kwargs):
        if (tmp_path / "run" / "checkpoint.pt").exists():
            raise torch.OutOfMemoryError(OUT_OF_MEMORY)
        return distillation_loss(*args, **kwargs)

    args = student_args(data_dir, cache, tmp_path / "run", "--temperature", 4, "--epochs", 2)
    with monkeypatch.context() as patch:
        patch.setattr(group_module, "distillation_loss", out_of_memory_in_epoch_2)
        result = kdcli(*args)
    assert_refused(result, f"error: {SAID}: free the GPU of other processes and run again with --resume (the last checkpoint is kept)", codes=(1,))
    assert "expandable_segments" not in result.stderr
    # The other way out, a smaller --batch-size, is another recipe: without --force the folder's run refuses it.
    assert "start over with a smaller --batch-size and --force" in result.stderr
    assert_refused(kdcli(*student_args(data_dir, cache, tmp_path / "run", "--temperature", 4, "--epochs", 2, "--batch-size", 32)), "--force", codes=(1,))
    resumed = kdcli(*args, "--resume")
    assert resumed.exit_code == 0 and (tmp_path / "run" / "summary.json").exists(), resumed.output


def test_a_sweep_out_of_gpu_memory_is_told_to_train_fewer_students_at_once_and_keeps_those_finished(tmp_path, data_dir, cache, monkeypatch):
    import kdcli.sweep as sweep_module

    def out_of_memory_in_group_2(runs, *args, **kwargs):
        if (tmp_path / "sweep" / "baseline" / "seed1" / "summary.json").exists():
            raise torch.OutOfMemoryError(OUT_OF_MEMORY)
        return train_runs(runs, *args, **kwargs)

    train_runs = sweep_module.train_runs
    with monkeypatch.context() as patch:
        patch.setattr(sweep_module, "train_runs", out_of_memory_in_group_2)
        result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--seeds", "1,2", "--parallel", 2))
    assert_refused(result, f"error: {SAID}: run again with --parallel below 2 (students trained at once)", "finished students are kept", codes=(1,))
    again = kdcli(*[a for a in sweep_args(data_dir, cache, tmp_path / "sweep", "--seeds", "1,2", "--parallel", 1) if a != "--quiet"])
    assert again.exit_code == 0 and "4 students: 2 finished before, 2 to train" in again.stderr, again.output


def test_a_sweep_out_of_gpu_memory_one_student_at_a_time_is_not_told_to_lower_parallel(tmp_path, data_dir, cache, monkeypatch):
    """--parallel 1 (or a model that cannot stack, or --amp fp16) trains one at a time already: no smaller --parallel
    exists (0 is all of them on a GPU), so the line must not send the user there."""
    import kdcli.sweep as sweep_module

    def out_of_memory_in_group_2(runs, *args, **kwargs):
        if (tmp_path / "sweep" / "baseline" / "seed1" / "summary.json").exists():
            raise torch.OutOfMemoryError(OUT_OF_MEMORY)
        return train_runs(runs, *args, **kwargs)

    train_runs = sweep_module.train_runs
    args = sweep_args(data_dir, cache, tmp_path / "sweep", "--parallel", 1)
    with monkeypatch.context() as patch:
        patch.setattr(sweep_module, "train_runs", out_of_memory_in_group_2)
        result = kdcli(*args)
    assert_refused(result, f"error: {SAID}: run again with the GPU freed of other processes (finished students are kept", codes=(1,))
    assert "--parallel" not in result.stderr
    again = kdcli(*[a for a in args if a != "--quiet"])  # the GPU freed
    assert again.exit_code == 0 and "2 students: 1 finished before, 1 to train" in again.stderr, again.output


def test_a_dump_out_of_gpu_memory_is_told_to_label_smaller_batches_and_resumes_with_them(tmp_path, data_dir, teacher, monkeypatch):
    from kdcli import dump

    def out_of_memory_in_epoch_3(model, images, aug, *args, **kwargs):
        if aug is not None:  # (None: the un-augmented train and test sets, labelled first)
            if len(labelled) == 2:
                raise torch.OutOfMemoryError(OUT_OF_MEMORY)
            labelled.append(aug)
        return label(model, images, aug, *args, **kwargs)

    label, labelled = dump.teacher_logits, []
    with monkeypatch.context() as patch:
        patch.setattr(dump, "teacher_logits", out_of_memory_in_epoch_3)
        result = kdcli(*dump_args(data_dir, teacher, tmp_path / "c.h5", "--epochs", 3))
    assert_refused(result, f"error: {SAID}: run again with a smaller --batch-size (the epochs written are kept)", codes=(1,))
    # Epoch 2, labelled but on its way to the disk when epoch 3 failed, is lost with it.
    resumed = kdcli(*dump_args(data_dir, teacher, tmp_path / "c.h5", "--epochs", 3, "--batch-size", 32))
    assert resumed.exit_code == 0 and "resumed at epoch 2" in resumed.stdout, resumed.output


def test_an_evaluation_out_of_gpu_memory_is_told_to_free_the_gpu_or_use_the_cpu(tmp_path, data_dir, monkeypatch):
    import kdcli.cli as cli_module

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("MPS backend out of memory")  # no CUDA numbers to quote: its first line is said

    monkeypatch.setattr(cli_module, "evaluate_checkpoint", out_of_memory)
    result = kdcli("evaluate", save_teacher(tmp_path / "t.pt"), "--data-dir", data_dir, "--device", "cpu")
    assert_refused(result, "error: out of GPU memory (MPS backend out of memory): free the GPU of other processes, or pass --device cpu", codes=(1,))


# ---------------------------------------------------------------- from mutation testing cli.py


def test_a_baseline_resumed_is_not_refused_for_a_recorded_cache_it_does_not_read(tmp_path, data_dir):
    """A baseline (--distillation-weight 0) records --cache too, but reads none: resumed where that path is no cache, it goes on."""
    out = tmp_path / "baseline"
    assert kdcli(*student_args(data_dir, tmp_path / "no-cache.h5", out, "--distillation-weight", 0)).exit_code == 0
    resumed = kdcli("train-student", "--out", out, "--resume", "--no-download")
    assert resumed.exit_code == 0 and "finished already, kept" in resumed.stdout, resumed.output
    assert "cache" not in resumed.stderr


def test_a_student_given_the_caches_own_images_is_told_nothing_read_back(tmp_path, data_dir, cache, monkeypatch):
    """Only an option that differs from the one it would have is said to be read from the cache (here: none)."""
    import kdcli.cli as cli_module

    configs = []
    monkeypatch.setattr(cli_module, "train_student", lambda config: configs.append(config) or {"model": config.model, "test_accuracy": 10.0, "epochs": 1})
    result = kdcli(*student_args(data_dir, cache, tmp_path / "out"))  # the cache's --data-dir given, its --subset (all) the default
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert [(c.data_dir, c.subset) for c in configs] == [(str(data_dir), None)]


def test_a_baseline_student_says_it_is_one(tmp_path, data_dir, cache):
    result = kdcli(*student_args(data_dir, cache, tmp_path / "out", "--distillation-weight", 0))
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"student lenet5 baseline \(no teacher\): [\d.]+% test accuracy after 1 epoch -> {re.escape(str(tmp_path / 'out'))}\n", result.stdout)


def test_a_dump_of_a_complete_cache_with_resume_keeps_it_and_says_so(tmp_path, data_dir, teacher, cache):
    shutil.copy(cache, tmp_path / "c.h5")
    before = snapshot(tmp_path / "c.h5")
    result = kdcli(*dump_args(data_dir, teacher, tmp_path / "c.h5", "--resume"))
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"{re.escape(str(tmp_path / 'c.h5'))}: complete already \(2 epochs x 200 images, this teacher and these settings\), kept; "
                        r"teacher test accuracy [\d.]+%\n", result.stdout), result.stdout  # fmt: skip
    assert snapshot(tmp_path / "c.h5") == before


def test_report_names_the_plot_only_where_it_wrote_one(tmp_path, student, monkeypatch):
    pytest.importorskip("matplotlib")
    plotted = kdcli("report", student, "--out", tmp_path / "with")
    assert plotted.exit_code == 0 and f"-> {tmp_path / 'with' / 'results.md'} (and results.csv, results.png, runs.csv beside it)" in plotted.stderr
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed
    table_only = kdcli("report", student, "--out", tmp_path / "without")
    assert table_only.exit_code == 0 and f"-> {tmp_path / 'without' / 'results.md'} (and results.csv, runs.csv beside it)" in table_only.stderr
    assert not (tmp_path / "without" / "results.png").exists()
    # the missing plot is said on stderr: stdout (`kdcli report ... > table.md`) holds the table alone
    assert table_only.stdout.strip() == (tmp_path / "without" / "results.md").read_text().strip()
    assert "warning: results.png skipped: matplotlib is not installed (pip install 'kdcli[plot]' for the plot)" in table_only.stderr


def test_a_resumed_student_keeps_its_own_data_dir_over_the_one_its_cache_recorded(tmp_path, data_dir, cache):
    """Given --data-dir (the same images elsewhere) when it started, the run keeps it on --resume: what the run
    recorded is given, and the cache's own --data-dir is not read back over it."""
    (tmp_path / "images").symlink_to(data_dir)
    out = tmp_path / "student"
    assert kdcli(*student_args(tmp_path / "images", cache, out)).exit_code == 0
    resumed = kdcli("train-student", "--out", out, "--resume", "--no-download")
    assert resumed.exit_code == 0 and "finished already, kept" in resumed.stdout, resumed.output
    assert "recorded" not in resumed.stderr and json.loads((out / "config.json").read_text())["data_dir"] == str(tmp_path / "images")


# ---------------------------------------------------------------- from mutation testing runs.py


@pytest.mark.parametrize("command", ["train-teacher", "sweep"])
def test_a_folder_in_use_is_refused_before_any_data_is_loaded(tmp_path, cache, command):
    """A job started twice is told "in use" at once: not after loading (or downloading) CIFAR-10, nor by an error of its data."""
    no_data, out = tmp_path / "no-data", tmp_path / "out"
    args = teacher_args(no_data, out) if command == "train-teacher" else sweep_args(no_data, cache, out)
    with claim_folder(out):
        assert_refused(kdcli(*args), f"{out} is in use by another kdcli", codes=(1,))
    assert not no_data.exists()


# ---------------------------------------------------------------- nothing said before a refusal


def assert_one_error(result, *words, codes=(1, 2)):
    """Refused, and the error is all that is printed: no warning or note first about a command that never runs
    (a usage error keeps click's Usage and Try lines around it)."""
    assert result.exit_code in codes, result.output
    said = [line for line in (result.stdout + result.stderr).splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    assert len(said) == 1 and said[0].startswith(("error: ", "Error: ")), result.output
    for word in words:
        assert word in said[0], (word, result.output)


READ_BACK = {  # a command given no --data-dir, whose input recorded one: "--data-dir ...: as ... recorded" were it to run
    "train-student": lambda cache, teacher_run, out: ["train-student", "--epochs", 1, "--lr-milestones", "", "--cache", cache, "--out", out, *CPU],
    "dump-logits": lambda cache, teacher_run, out: ["dump-logits", "--teacher", teacher_run, "--epochs", 2, "--out", out, *CPU],
    "sweep": lambda cache, teacher_run, out: ["sweep", "--epochs", 1, "--lr-milestones", "", "--seeds", 1, "--cache", cache, "--out", out, *CPU],
}


@pytest.mark.parametrize("command", READ_BACK)
def test_options_read_back_are_not_said_before_a_usage_error(tmp_path, cache, teacher_run, command):
    assert_one_error(kdcli(*READ_BACK[command](cache, teacher_run, tmp_path / "out"), "--epochs", 0), "--epochs", codes=(2,))


OUT_REFUSED = {  # what --out holds -> the words of its refusal, which needs no data
    "finished run": "holds a finished run",
    "folder": "it is a folder",
    "cache being written": "is being written by another dump-logits",
    "file": "is a file, not a folder",
}


@pytest.mark.parametrize("command,out_holds", [("train-student", "finished run"), ("dump-logits", "folder"), ("dump-logits", "cache being written"), ("sweep", "file")])
def test_options_read_back_are_not_said_before_out_is_refused(tmp_path, cache, teacher_run, command, out_holds):
    from kdcli.cache import write_lock

    out = tmp_path / "out"
    args = READ_BACK[command](cache, teacher_run, out)
    if out_holds == "finished run":
        assert kdcli(*args).exit_code == 0
    elif out_holds == "folder":
        out.mkdir()
    elif out_holds == "file":
        out.write_text("")
    with write_lock(out) if out_holds == "cache being written" else contextlib.nullcontext():  # another dump-logits
        assert_one_error(kdcli(*args), OUT_REFUSED[out_holds], codes=(1,))


@pytest.mark.parametrize("refused", [["--epochs", 0], ["--cache", "no-cache.h5"]], ids=["bad value", "no cache"])
def test_a_run_of_the_other_kind_forced_over_is_said_to_be_replaced_only_once_the_command_can_start(tmp_path, teacher_run, refused, monkeypatch):
    """`--resume --force` over a teacher's run warns that a student's replaces it: not where the student is refused."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(teacher_run, tmp_path / "run")
    result = kdcli("train-student", "--out", tmp_path / "run", "--resume", "--force", *CPU, *refused)
    assert_one_error(result, refused[0] if refused[0] == "--epochs" else "no cache at no-cache.h5")


def test_a_baseline_refused_for_its_folder_is_not_warned_about_the_cache_it_would_not_read(tmp_path, data_dir, cache, student):
    """Its --subset differs from the cache's: a warning, were it to train, but --out holds a finished run."""
    result = kdcli(*student_args(data_dir, cache, student, "--distillation-weight", 0, "--subset", 100))
    assert_one_error(result, "holds a finished run", codes=(1,))


def test_a_student_refused_is_not_warned_about_its_cache_first(tmp_path, data_dir, cache, other_cache):
    """Its cache has 2 epochs for a 3-epoch student, whose teacher saw the images --val-size holds out: said as the
    student trains, and as it is kept, but not where it is refused (here: resumed from another cache)."""
    out, options = tmp_path / "run", ["--epochs", 3, "--val-size", 50]
    warned = ("--val-size holds out", "has 2 epochs for a 3-epoch student")
    trained = kdcli(*student_args(data_dir, cache, out, *options))
    assert trained.exit_code == 0 and all(w in trained.stderr for w in warned), trained.output
    kept = kdcli(*student_args(data_dir, cache, out, *options, "--resume"))
    assert kept.exit_code == 0 and "kept" in kept.stdout and all(w in kept.stderr for w in warned), kept.output
    assert_one_error(kdcli(*student_args(data_dir, other_cache, out, *options, "--resume")), "was trained from another cache than", codes=(1,))


@pytest.mark.parametrize("refused", ["other options", "other cache"])
def test_a_sweep_refused_is_not_warned_about_its_cache_first(tmp_path, data_dir, cache, other_cache, refused):
    """As above, for the students of a sweep run again otherwise: with another --lr, or from another cache."""
    out, options = tmp_path / "sweep", ["--epochs", 3, "--val-size", 50]
    trained = kdcli(*sweep_args(data_dir, cache, out, *options))
    assert trained.exit_code == 0 and "has 2 epochs for a 3-epoch student" in trained.stderr, trained.output
    again = sweep_args(data_dir, cache, out, *options, "--lr", 0.05) if refused == "other options" else sweep_args(data_dir, other_cache, out, *options)
    assert_one_error(kdcli(*again), "was trained with other options" if refused == "other options" else "was trained from another cache", codes=(1,))


def test_a_sweep_in_fp16_on_a_gpu_refused_is_not_warned_that_it_trains_its_students_one_at_a_time(tmp_path, data_dir, cache, other_cache, monkeypatch):
    """Said as its students are about to train (here on a GPU pretended: nothing reaches it), not where it is refused."""
    import kdcli.sweep as sweep_module

    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--amp", "fp16")).exit_code == 0
    on_cpu = sweep_module.device_and_data
    monkeypatch.setattr(sweep_module, "device_and_data", lambda config: (torch.device("cuda"), on_cpu(config)[1]))
    assert_one_error(kdcli(*sweep_args(data_dir, other_cache, tmp_path / "sweep", "--amp", "fp16")), "was trained from another cache", codes=(1,))

    def train_groups(*args):  # in place of training on the pretended GPU
        raise KdcliError("the students train now")

    monkeypatch.setattr(sweep_module, "_train_groups", train_groups)
    trains = kdcli(*sweep_args(data_dir, cache, tmp_path / "new", "--amp", "fp16"))
    assert trains.stderr.splitlines()[-2:] == ["warning: --amp fp16 trains students one at a time (each needs its own loss scale); --amp bf16 stacks them",
                                               "error: the students train now"], trains.output  # fmt: skip


@pytest.mark.parametrize("other,words", [(["--lr", 0.05], "trained with other options"), (["--model", "resnet8"], "holds a lenet5, not a resnet8")], ids=["lr", "model"])
def test_a_sweep_run_again_with_other_options_is_refused_before_its_data_loads(tmp_path, data_dir, cache, other, words):
    """As a single run's --resume is (resume.check_can_start): at once, not after the data (and any warning about it)."""
    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep")).exit_code == 0
    assert_one_error(kdcli(*sweep_args(tmp_path / "no-data", cache, tmp_path / "sweep", *other)), words, codes=(1,))
    assert not (tmp_path / "no-data").exists()
    forced = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", *other, "--force", "--parallel", 1))
    assert forced.exit_code == 0, forced.output  # --force trains them again


@pytest.mark.filterwarnings("default::kdcli.data.NotOfficialDataWarning")
@pytest.mark.parametrize("option", [["--subset", 201], ["--val-size", 200]])
def test_a_subset_or_val_size_beyond_the_images_is_refused_without_a_warning_about_them_first(tmp_path, data_dir, option):
    """The tiny data is not the official release: a warning where it trains, not where its options are refused."""
    assert "differ from the official files" in kdcli(*teacher_args(data_dir, tmp_path / "ok")).stderr
    assert_one_error(kdcli(*teacher_args(data_dir, tmp_path / "out", *option)), option[0], codes=(1,))


def test_a_dump_refused_is_not_warned_first_that_its_teacher_is_unfinished_or_labels_uncompiled(tmp_path, data_dir, teacher, cache, monkeypatch):
    """The checkpoint file of a teacher stopped part-way (the user's choice), on a GPU without Triton: two warnings
    where the dump goes on, none where its --out is refused (a cache of another teacher, without --force)."""
    from kdcli import dump

    monkeypatch.setattr(dump, "triton_found", lambda: False)
    real = dump.compiles
    monkeypatch.setattr(dump, "compiles", lambda config, device: real(config, torch.device("cuda")))  # as on a GPU without Triton
    torch.save({**torch.load(teacher), "epoch": 1, "config": {"epochs": 3}}, tmp_path / "half.pt")
    shutil.copy(cache, tmp_path / "c.h5")
    assert_one_error(kdcli(*dump_args(data_dir, tmp_path / "half.pt", tmp_path / "c.h5")), "was made with other settings", codes=(1,))
    forced = kdcli(*dump_args(data_dir, tmp_path / "half.pt", tmp_path / "c.h5", "--force"))
    assert forced.exit_code == 0 and "has not finished training (epoch 1 of 3)" in forced.stderr and "finds no Triton" in forced.stderr, forced.output


# ---------------------------------------------------------------- found by mutation testing (2026-11-28: sweep, group, report's diverged runs)


def test_a_student_finished_with_other_options_while_the_sweep_loads_its_data_is_refused_under_its_lock(tmp_path, data_dir, cache, monkeypatch):
    """The sweep checks its students before its data loads, then again once it holds their folders: one that another
    kdcli finished meanwhile, at another --lr, must not be kept and reported as this sweep's."""
    import kdcli.sweep as sweep_module

    assert kdcli(*sweep_args(data_dir, cache, tmp_path / "other", "--no-baseline")).exit_code == 0  # T4/seed1 at the default --lr 0.1
    real = sweep_module.device_and_data

    def finished_meanwhile(*args, **kwargs):
        loaded = real(*args, **kwargs)
        shutil.copytree(tmp_path / "other" / "T4" / "seed1", tmp_path / "sweep" / "T4" / "seed1")
        return loaded

    monkeypatch.setattr(sweep_module, "device_and_data", finished_meanwhile)
    result = kdcli(*sweep_args(data_dir, cache, tmp_path / "sweep", "--no-baseline", "--lr", 0.05))
    assert_refused(result, "T4/seed1 was trained with other options: --lr 0.05 (run has 0.1)", codes=(1,))
    assert not (tmp_path / "sweep" / "results.md").exists()


# ---------------------------------------------------------------- paths the file system refuses


def too_long(tmp_path):
    return tmp_path / ("x" * 300)  # past any file system's 255-byte limit on one name


PATH_REFUSALS = {  # where -> the arguments, from (tmp_path, data_dir, teacher, cache, student)
    "train-teacher --out": lambda t, d, teacher, cache, student: teacher_args(d, too_long(t)),
    "train-teacher --data-dir": lambda t, d, teacher, cache, student: teacher_args(too_long(t), t / "run"),
    "dump-logits --teacher": lambda t, d, teacher, cache, student: dump_args(d, too_long(t), t / "c.h5"),
    "dump-logits --out": lambda t, d, teacher, cache, student: dump_args(d, teacher, f"{too_long(t)}.h5"),
    "train-student --cache": lambda t, d, teacher, cache, student: student_args(d, f"{too_long(t)}.h5", t / "run"),
    "train-student --out": lambda t, d, teacher, cache, student: student_args(d, cache, too_long(t)),
    "sweep --out": lambda t, d, teacher, cache, student: sweep_args(d, cache, too_long(t)),
    "sweep --data-dir": lambda t, d, teacher, cache, student: sweep_args(too_long(t), cache, t / "sweep"),
    "evaluate": lambda t, d, teacher, cache, student: ["evaluate", too_long(t), "--device", "cpu", "--no-download"],
    "cache-info": lambda t, d, teacher, cache, student: ["cache-info", f"{too_long(t)}.h5"],
    "report": lambda t, d, teacher, cache, student: ["report", too_long(t)],
    "report --out": lambda t, d, teacher, cache, student: ["report", student, "--out", too_long(t)],
}


@pytest.mark.parametrize("where", PATH_REFUSALS)
def test_a_path_the_file_system_refuses_is_one_line(tmp_path, data_dir, teacher, cache, student, where):
    """Python's Path.exists raises, not returns False, for a name too long (as for a file this user may not read):
    said as the path and the system's reason, whichever check meets it first."""
    result = kdcli(*PATH_REFUSALS[where](tmp_path, data_dir, teacher, cache, student))
    assert_refused(result, "x" * 300, os.strerror(errno.ENAMETOOLONG), codes=(1,))


def unreadable(path):
    """`path` chmod 000 (a folder: nor searchable); put back by the fixture `readable_again`."""
    path.chmod(0)
    return path


@pytest.fixture
def readable_again(tmp_path):
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def resume_with_unreadable_metrics(tmp_path, data_dir, cache, student, teacher_run):
    run = shutil.copytree(student, tmp_path / "run")
    (run / "summary.json").unlink()  # unfinished: --resume reads it back
    unreadable(run / "metrics.jsonl")
    return student_args(data_dir, cache, run, "--resume")


def unreadable_batch(data_dir, tmp_path):
    """A copy of the data folder in which one batch file may not be read: not "corrupt", nor to delete and download again."""
    folder = shutil.copytree(data_dir, tmp_path / "data")
    unreadable(folder / "cifar-10-batches-py" / "data_batch_3")
    return folder


def report_with_an_unreadable_run(tmp_path, data_dir, cache, student, teacher_run):
    shutil.copytree(student, tmp_path / "sweep/a")
    unreadable(shutil.copytree(student, tmp_path / "sweep/b"))
    return ["report", tmp_path / "sweep"]


UNREADABLE = {  # what -> (the arguments, from (tmp_path, data_dir, cache, student, teacher_run), what the error says)
    "cache-info of a cache": (lambda t, d, c, s, tr: ["cache-info", unreadable(Path(shutil.copy(c, t / "c.h5")))], "cannot read {t}/c.h5: Permission denied"),
    "dump-logits --out a cache": (lambda t, d, c, s, tr: [*dump_args(d, tr, unreadable(Path(shutil.copy(c, t / "c.h5")))), "--force"], "{t}/c.h5: Permission denied"),
    "evaluate of a checkpoint": (lambda t, d, c, s, tr: ["evaluate", unreadable(shutil.copytree(s, t / "run") / "checkpoint.pt"), "--device", "cpu"], "cannot read {t}/run/checkpoint.pt: Permission denied"),
    "report of a sweep with a run folder": (report_with_an_unreadable_run, "{t}/sweep/b: Permission denied"),
    "train-student --resume of a run's metrics": (resume_with_unreadable_metrics, "{t}/run/metrics.jsonl: Permission denied"),
    "train-teacher of a data file": (lambda t, d, c, s, tr: teacher_args(unreadable_batch(d, t), t / "run"), "cannot read {t}/data/cifar-10-batches-py/data_batch_3: Permission denied"),
}


def test_a_complete_cache_this_user_may_only_read_is_kept_by_resume_and_read_by_a_student(tmp_path, data_dir, teacher, cache):
    """make logits passes --resume: a finished cache made read-only (shared, or kept from harm) is kept as it is, not
    opened to be written, and its students read it."""
    path = Path(shutil.copy(cache, tmp_path / "c.h5"))
    path.chmod(0o444)
    kept = run_kdcli_bound_by_permissions(*dump_args(data_dir, teacher, path, "--resume"))
    assert kept.returncode == 0 and "Traceback" not in kept.stderr, kept.stderr
    assert run_kdcli_bound_by_permissions(*student_args(data_dir, path, tmp_path / "run")).returncode == 0
    assert path.read_bytes() == cache.read_bytes()


def test_an_unfinished_cache_this_user_may_only_read_is_one_line_and_left_as_it_was(tmp_path, data_dir, teacher, cache):
    """The epochs still to label cannot be written: said as the file and the system's reason (no traceback)."""
    path = tmp_path / "c.h5"
    edit(epochs_complete=1)(path, cache)
    path.chmod(0o444)
    before = path.read_bytes()
    result = run_kdcli_bound_by_permissions(*dump_args(data_dir, teacher, path, "--resume"))
    assert (result.returncode, result.stderr.splitlines()[-1:]) == (1, [f"error: cannot write {path}: Permission denied"]), result.stderr
    assert "Traceback" not in result.stderr and path.read_bytes() == before


def test_a_cache_into_a_folder_this_user_may_not_write_is_one_line_before_the_data_is_read(tmp_path, data_dir, teacher):
    """Its lock file, made first, cannot be: said as the cache and the system's reason, and nothing is left there."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o555)
    result = run_kdcli_bound_by_permissions(*dump_args(data_dir, teacher, folder / "c.h5"))
    assert (result.returncode, result.stderr.splitlines()[-1:]) == (1, [f"error: cannot write {folder / 'c.h5'}: Permission denied"]), result.stderr
    assert "Traceback" not in result.stderr and not any(folder.iterdir())


@pytest.mark.parametrize("what", UNREADABLE)
def test_a_file_this_user_may_not_read_is_one_line(tmp_path, data_dir, cache, student, teacher_run, readable_again, what):
    """Said as the path and the system's reason, and not as a corrupt file, nor left out unsaid (a report's run)."""
    make_args, said = UNREADABLE[what]
    args = make_args(tmp_path, data_dir, cache, student, teacher_run)
    before = snapshot(tmp_path)
    result = run_kdcli_bound_by_permissions(*args)
    assert (result.returncode, result.stderr.splitlines()[-1:]) == (1, ["error: " + said.format(t=tmp_path)]), result.stderr
    assert "Traceback" not in result.stderr and snapshot(tmp_path) == before
