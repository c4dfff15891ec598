"""Faults: `python -m kdcli` killed with SIGKILL (no handler, no `finally`), then run again.

Each run is LeNet-5 on the tiny CPU data, 3 epochs of 25 steps (batch 8 of 200 images), compared with
an uninterrupted run of the same command:
- train-teacher, train-student and sweep (2 temperatures x 2 seeds + baselines, `--parallel 0`: one
  after another on a CPU) killed after their first completed epoch (the sweep's: its second student's,
  so one student is finished, one half-way, four not started), then resumed (`--resume`; a sweep by
  running it again): the final weights are identical (torch.equal) and metrics.jsonl holds exactly one
  line per epoch, the same lines.
- killed half-way through writing a checkpoint (train-teacher; a sweep of six students stacked with
  `--parallel 6`, whose checkpoints are renamed into place only once all are written): the previous
  checkpoint still loads and the resumed run equals an unbroken one. A sweep killed among those renames,
  checkpointed only in part, resumes from two epochs as two stacks, to the same weights.
- a metrics.jsonl whose last line was cut (a full disk or a power cut mid-write): --resume still works;
  a kill mid-save leaves no temporary file behind.
- a cache whose dump was killed while epoch k was being flushed (epochs_complete = k, epoch k garbage):
  refused without --allow-partial; with it the student reads epochs < k only, exactly like a student of
  a finished k-epoch cache.
- determinism: the same train-student command twice gives the same metrics (timing aside) and weights.
- a student's --resume against a cache dumped again from another teacher is refused.

Timing the kill: the children import a sitecustomize.py (written by the `hooks` fixture, first on
PYTHONPATH) that, by environment variable, sleeps before every optimizer step (KDCLI_TEST_STEP_DELAY,
so that an epoch lasts long enough to be killed in) or SIGKILLs the process half-way through its Nth
torch.save (KDCLI_TEST_KILL_IN_SAVE) or just before it renames its Nth checkpoint into place (KDCLI_TEST_KILL_AT_RENAME). kdcli itself is unchanged. Children run on one thread
(OMP_NUM_THREADS=1): reference and resumed runs then compute alike, and two OpenMP threads on two busy
cores make a LeNet-5 step 100x slower (spin-waiting).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdcli.checkpoint import CHECKPOINT, load_checkpoint
from kdcli.cli import app
from kdcli.models import create_model
from kdcli.runs import LOCK

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
TRAIN = ["--model", "lenet5", "--epochs", EPOCHS, "--batch-size", 8, "--lr", 0.05, "--lr-milestones", 2,
         "--device", "cpu", "--quiet", "--no-download"]  # fmt: skip
STEP_DELAY = 0.02  # seconds per optimizer step while a child is to be killed: 0.5 s per epoch
TIMING = {"seconds", "images_per_s"}  # the only metrics that may differ between identical runs

HOOKS = '''"""Test hooks for the children of tests/test_faults.py, switched on by environment variables."""
import os

if os.environ.get("KDCLI_TEST_STEP_DELAY"):
    import time
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    delay = float(os.environ["KDCLI_TEST_STEP_DELAY"])
    register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: time.sleep(delay))

if os.environ.get("KDCLI_TEST_KILL_IN_SAVE"):
    import io, signal, torch

    save, calls = torch.save, [0]

    def torn_save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] < int(os.environ["KDCLI_TEST_KILL_IN_SAVE"]):
            return save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = torn_save

if os.environ.get("KDCLI_TEST_KILL_AT_RENAME"):
    import signal

    replace, renames = os.replace, [0]

    def last_rename(src, dst, *args, **kwargs):
        if os.path.basename(dst) == "checkpoint.pt":
            renames[0] += 1
            if renames[0] == int(os.environ["KDCLI_TEST_KILL_AT_RENAME"]):
                os.kill(os.getpid(), signal.SIGKILL)
        return replace(src, dst, *args, **kwargs)

    os.replace = last_rename
'''


@pytest.fixture(scope="module")
def hooks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hooks")
    (folder / "sitecustomize.py").write_text(HOOKS)
    return folder


def start(hooks, *args, **hook_env):
    """`python -m kdcli ARGS` in a child process, with the test hooks set by `hook_env`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KDCLI_TEST_")}
    path = [str(hooks), str(ROOT), env.get("PYTHONPATH", "")]
    env.update(PYTHONPATH=os.pathsep.join(path), OMP_NUM_THREADS="1", **{f"KDCLI_TEST_{k}": str(v) for k, v in hook_env.items()})
    command = [sys.executable, "-m", "kdcli", *map(str, args)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kdcli(hooks, *args, **hook_env):
    """Run to the end; return the exit status and stderr."""
    child = start(hooks, *args, **hook_env)
    _, stderr = child.communicate(timeout=300)
    return child.returncode, stderr


def kdcli_here(*args):
    """`kdcli ARGS` in this process, for commands that train nothing (no child to start: 2 s quicker)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def ok_here(*args):
    result = kdcli_here(*args)
    assert result.exit_code == 0, result.output


def ok(hooks, *args):
    status, stderr = kdcli(hooks, *args)
    assert status == 0, stderr


def kill_after_first_epoch(hooks, args, folders):
    """Start `kdcli ARGS` with slow steps; SIGKILL it as soon as every run folder has its epoch-1 checkpoint."""
    child = start(hooks, *args, STEP_DELAY=STEP_DELAY)
    try:
        deadline = time.monotonic() + 120
        while not all((f / CHECKPOINT).exists() for f in folders):
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.01)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL  # killed while still training, not finished
    for f in folders:
        assert 1 <= load_checkpoint(f)["epoch"] < EPOCHS and not (f / "summary.json").exists()


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(run_dir, reference, loss_rel=0.0, groups=None):
    """Same final weights, bit for bit, and the same metrics.jsonl (timing aside), one line per epoch.
    `loss_rel`: students that resumed in a stack of another size log a train_loss whose last digit may differ;
    `groups`: the size of the stack that ended each of their epochs."""
    a, b = load_checkpoint(run_dir)["model"], load_checkpoint(reference)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), run_dir
    rows, expected = ([{k: v for k, v in r.items() if k not in TIMING} for r in metrics(d)] for d in (run_dir, reference))
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    if loss_rel:
        assert [r.pop("train_loss") for r in rows] == pytest.approx([r.pop("train_loss") for r in expected], rel=loss_rel)
    if groups:
        assert [r.pop("trained_together") for r in rows] == groups, run_dir
        assert {r.pop("trained_together") for r in expected} == {len(SWEEP_RUNS)}
    assert rows == expected
    assert (run_dir / "summary.json").exists()


# ---------------------------------------------------------------- the runs and their references


def teacher_args(data_dir, out):
    return ["train-teacher", *TRAIN, "--data-dir", data_dir, "--out", out]


def student_args(data_dir, cache, out, *extra):
    return ["train-student", *TRAIN, "--data-dir", data_dir, "--cache", cache, "--distillation-weight", 0.5,
            "--temperature", 4, "--seed", 3, "--out", out, *extra]  # fmt: skip


def sweep_args(data_dir, cache, out, parallel=0):
    return ["sweep", *TRAIN, "--data-dir", data_dir, "--cache", cache, "--temperatures", "1,10", "--seeds", "1,2",
            "--parallel", parallel, "--out", out]  # fmt: skip


SWEEP_RUNS = [f"{setting}/seed{seed}" for seed in (1, 2) for setting in ("baseline", "T1", "T10")]  # training order


def make_teacher(path, seed=0):
    """A LeNet-5 teacher checkpoint whose logits have a trained net's size (~5)."""
    torch.manual_seed(seed)
    model = create_model("lenet5")
    with torch.no_grad():
        model.fc3.weight.mul_(50)
    torch.save({"model": model.state_dict(), "model_name": "lenet5", "num_classes": 10}, path)
    return path


def dump_args(data_dir, teacher, out, epochs, *extra):
    return ["dump-logits", "--teacher", teacher, "--epochs", epochs, "--dtype", "float32", "--device", "cpu",
            "--data-dir", data_dir, "--no-download", "--quiet", "--out", out, *extra]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def cache(data_dir, root):
    """A float32 cache of 2 epochs (never modify it)."""
    ok_here(*dump_args(data_dir, make_teacher(root / "teacher.pt"), root / "cache.h5", 2))
    return root / "cache.h5"


@pytest.fixture(scope="module")
def teacher_reference(hooks, data_dir, root):
    ok(hooks, *teacher_args(data_dir, root / "teacher"))
    return root / "teacher"


@pytest.fixture(scope="module")
def student_reference(hooks, data_dir, root, cache):
    ok(hooks, *student_args(data_dir, cache, root / "student"))
    return root / "student"


@pytest.fixture(scope="module")
def sweep_reference(hooks, data_dir, root, cache):
    ok(hooks, *sweep_args(data_dir, cache, root / "sweep"))
    return root / "sweep"


@pytest.fixture(scope="module")
def stacked_sweep_reference(hooks, data_dir, root, cache):
    ok(hooks, *sweep_args(data_dir, cache, root / "stacked-sweep", parallel=len(SWEEP_RUNS)))
    return root / "stacked-sweep"


@pytest.fixture(scope="module")
def killed_student(hooks, data_dir, root, cache):
    """A student killed after its first epoch (never modify it: tests resume copies)."""
    kill_after_first_epoch(hooks, student_args(data_dir, cache, root / "killed-student"), [root / "killed-student"])
    return root / "killed-student"


# ---------------------------------------------------------------- killed after the first epoch


def test_teacher_killed_after_an_epoch_resumes_to_the_same_run(tmp_path, hooks, data_dir, teacher_reference):
    args = teacher_args(data_dir, tmp_path / "run")
    kill_after_first_epoch(hooks, args, [tmp_path / "run"])
    ok(hooks, *args, "--resume")
    assert_same_run(tmp_path / "run", teacher_reference)


def test_student_killed_after_an_epoch_resumes_to_the_same_run(tmp_path, hooks, data_dir, cache, killed_student, student_reference):
    shutil.copytree(killed_student, tmp_path / "run")
    ok(hooks, *student_args(data_dir, cache, tmp_path / "run", "--resume"))
    assert_same_run(tmp_path / "run", student_reference)


def test_sweep_killed_after_an_epoch_resumes_when_run_again(tmp_path, hooks, data_dir, cache, sweep_reference):
    sweep = tmp_path / "sweep"
    args = sweep_args(data_dir, cache, sweep)
    kill_after_first_epoch(hooks, args, [sweep / SWEEP_RUNS[1]])
    assert (sweep / SWEEP_RUNS[0] / "summary.json").exists()
    assert not any((sweep / run / CHECKPOINT).exists() for run in SWEEP_RUNS[2:])
    ok(hooks, *args)
    for run in SWEEP_RUNS:
        assert_same_run(sweep / run, sweep_reference / run)
    assert (sweep / "results.md").exists()


def test_same_student_command_twice_gives_the_same_run(tmp_path, hooks, data_dir, cache, student_reference):
    ok(hooks, *student_args(data_dir, cache, tmp_path / "again"))
    assert_same_run(tmp_path / "again", student_reference)


# ---------------------------------------------------------------- killed while writing


@pytest.fixture(scope="module")
def torn_teacher(hooks, data_dir, root):
    """A teacher killed half-way through writing its epoch-2 checkpoint, checked, then resumed."""
    out = root / "torn-teacher"
    status, _ = kdcli(hooks, *teacher_args(data_dir, out), KILL_IN_SAVE=2)
    assert status == -signal.SIGKILL
    assert [p.stat().st_size > 0 for p in out.glob(f".{CHECKPOINT}.tmp-*")] == [True]  # the torn write
    assert load_checkpoint(out)["epoch"] == 1  # the previous checkpoint is intact
    assert [r["epoch"] for r in metrics(out)] == [1, 2]  # epoch 2 was logged, not saved
    shutil.copytree(out, root / "killed-in-save")  # for test_resume_after_a_torn_metrics_line
    ok(hooks, *teacher_args(data_dir, out), "--resume")
    return out


def test_teacher_killed_mid_checkpoint_resumes_from_the_previous_one(torn_teacher, teacher_reference):
    assert_same_run(torn_teacher, teacher_reference)


def test_teacher_killed_mid_checkpoint_leaves_no_temporary_file(torn_teacher):
    assert sorted(p.name for p in torn_teacher.iterdir()) == [LOCK, CHECKPOINT, "config.json", "metrics.jsonl", "summary.json"]


def test_sweep_killed_mid_checkpoint_resumes_as_the_stack_it_was(tmp_path, hooks, data_dir, cache, stacked_sweep_reference):
    """Killed half-way through writing the 2nd checkpoint of epoch 2: no student's is renamed into place before
    all are written, so all six resume from epoch 1 as the stack they were. Had student 1 saved epoch 2 alone,
    it would train epoch 3 alone, unstacked, which rounds otherwise: other weights than the unbroken sweep's."""
    args = sweep_args(data_dir, cache, tmp_path / "sweep", parallel=len(SWEEP_RUNS))
    status, _ = kdcli(hooks, *args, KILL_IN_SAVE=len(SWEEP_RUNS) + 2)
    assert status == -signal.SIGKILL
    ok(hooks, *args)
    for run in SWEEP_RUNS:
        assert_same_run(tmp_path / "sweep" / run, stacked_sweep_reference / run, groups=[6, 6, 6])
        assert not list((tmp_path / "sweep" / run).glob(".*.tmp-*"))


def test_sweep_killed_among_its_checkpoint_renames_resumes_as_the_stack_it_was(tmp_path, hooks, data_dir, cache, stacked_sweep_reference):
    """Killed before the 12th checkpoint rename: students 1-5 have saved epoch 2, student 6 still holds epoch 1. The
    sweep run again first completes the renames from their list, so all six resume as the stack of six they were.
    Left at epoch 1, student 6 would train epoch 2 alone, unstacked, which rounds otherwise: other weights."""
    args = sweep_args(data_dir, cache, tmp_path / "sweep", parallel=len(SWEEP_RUNS))
    status, _ = kdcli(hooks, *args, KILL_AT_RENAME=2 * len(SWEEP_RUNS))
    assert status == -signal.SIGKILL
    assert [load_checkpoint(tmp_path / "sweep" / run)["epoch"] for run in SWEEP_RUNS] == [2, 2, 2, 2, 2, 1]
    ok(hooks, *args)
    for run in SWEEP_RUNS:
        assert_same_run(tmp_path / "sweep" / run, stacked_sweep_reference / run, groups=[6, 6, 6])
        assert not list((tmp_path / "sweep" / run).glob(".*tmp-*"))  # the list of renames too


def test_resume_after_a_torn_metrics_line(tmp_path, hooks, data_dir, root, torn_teacher, teacher_reference):
    """The run killed in its epoch-2 checkpoint write, with epoch 2's metrics line cut short."""
    out = tmp_path / "run"
    shutil.copytree(root / "killed-in-save", out)
    lines = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    (out / "metrics.jsonl").write_text(lines[0] + lines[1][:20])
    status, stderr = kdcli(hooks, *teacher_args(data_dir, out), "--resume")
    assert status == 0, stderr
    assert_same_run(out, teacher_reference)


# ---------------------------------------------------------------- a cache killed mid-flush


def test_cache_killed_while_flushing_an_epoch(tmp_path, hooks, data_dir, root, cache):
    """A dump killed while flushing epoch 1 of 2: epochs_complete says 1 and epoch 1 holds garbage.
    A student with --allow-partial reads epoch 0 only: it trains exactly like a student of a finished
    1-epoch cache (garbage logits, nan, would have made its loss non-finite)."""
    torn = tmp_path / "torn.h5"
    shutil.copy(cache, torn)
    with h5py.File(torn, "r+") as f:
        f["epochs_complete"][()] = 1
        f["logits"][1] = np.nan
        f["aug"][1] = np.random.default_rng(0).integers(-128, 128, f["aug"].shape[1:], dtype=np.int8)
    refused = kdcli_here(*student_args(data_dir, torn, tmp_path / "refused"))
    assert refused.exit_code == 1 and "1 of 2 epochs" in refused.stderr and "--allow-partial" in refused.stderr, refused.output
    assert not (tmp_path / "refused").exists()

    ok(hooks, *student_args(data_dir, torn, tmp_path / "partial", "--allow-partial"))
    ok_here(*dump_args(data_dir, root / "teacher.pt", tmp_path / "finished.h5", 1))  # made as `cache` was
    ok(hooks, *student_args(data_dir, tmp_path / "finished.h5", tmp_path / "finished"))
    assert_same_run(tmp_path / "partial", tmp_path / "finished")


def test_student_resume_refuses_a_cache_of_another_teacher(tmp_path, hooks, data_dir, killed_student):
    """A killed student resumed with a cache of another teacher (same data, seed, epochs): the run would
    mix two teachers' soft targets, so --resume must refuse, and leave the run as it was."""
    ok_here(*dump_args(data_dir, make_teacher(tmp_path / "other.pt", seed=1), tmp_path / "other.h5", 2))
    shutil.copytree(killed_student, tmp_path / "run")
    before = {f: f.read_bytes() for f in (tmp_path / "run").iterdir()}
    status, stderr = kdcli(hooks, *student_args(data_dir, tmp_path / "other.h5", tmp_path / "run", "--resume"))
    assert status == 1 and "was trained from another cache than" in stderr and "(teacher_sha256 " in stderr, stderr  # the teacher itself, not its accuracy
    assert {f: f.read_bytes() for f in (tmp_path / "run").iterdir()} == before


def test_a_full_disk_while_resume_cuts_the_metrics_back_keeps_the_old_lines(tmp_path, monkeypatch):
    """Resuming rewrites metrics.jsonl without the epochs to be trained again: a write cut short must not lose it."""
    import errno

    from kdcli import KdcliError
    from kdcli.records import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2, 3)))
    before = path.read_text()

    def full(fd):  # where a full disk shows itself under delayed allocation: the write went to the page cache
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(KdcliError, match="cannot write .*metrics.jsonl: No space left on device"):
        truncate_metrics(path, 2)
    monkeypatch.undo()
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
    truncate_metrics(path, 2)
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1, 2]


def test_resuming_keeps_one_metrics_line_per_epoch_and_drops_what_is_no_epochs(tmp_path):
    """The summary sums the lines' seconds: a line repeated (a file concatenated with itself), an epoch 0, or bytes that
    are no UTF-8 (which gave a UnicodeDecodeError) must not reach it."""
    from kdcli.records import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"epoch": e, "seconds": 1.0}) for e in (1, 2, 3)]
    path.write_bytes("\n".join([*lines, *lines, json.dumps({"epoch": 0, "seconds": 100.0}), json.dumps({"epoch": True}), ""]).encode() + b"\xff\xfe\n")
    truncate_metrics(path, 2)
    assert path.read_text().splitlines() == lines[:2]


@pytest.mark.parametrize("metrics", ["", "garbage\n", '{"epoch": 2, "seconds": 1.0}\n', None], ids=["empty", "garbage", "last epoch missing", "deleted"])
def test_a_finished_checkpoint_whose_metrics_were_damaged_is_one_line_when_its_summary_is_written(tmp_path, data_dir, metrics):
    """A run whose checkpoint is finished but whose summary.json was deleted writes it from metrics.jsonl on --resume:
    that was an IndexError where the last epoch's line was missing."""
    from typer.testing import CliRunner

    from kdcli.cli import app

    args = ["train-teacher", "--model", "lenet5", "--epochs", "3", "--batch-size", "8", "--device", "cpu", "--quiet", "--no-download",
            "--data-dir", str(data_dir), "--out", str(tmp_path / "run")]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    (tmp_path / "run" / "summary.json").unlink()
    (tmp_path / "run" / "metrics.jsonl").unlink()
    if metrics is not None:
        (tmp_path / "run" / "metrics.jsonl").write_text(metrics)
    result = CliRunner().invoke(app, [*args, "--resume"])
    assert result.exit_code == 1 and "metrics.jsonl lacks epoch 3's line" in result.stderr and "--force" in result.stderr, result.output
