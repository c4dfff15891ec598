"""The Makefile's `logits` rule, which decides between resuming, keeping and remaking the cache from files
alone: a stage stopped at any moment and `make logits` run again must end with the current teacher's
complete cache, never stuck on an error. make runs kdcli as `python -m kdcli` on the tiny data."""

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import torch
from conftest import sha256

from kdcli.cache import cache_info
from kdcli.dump import DumpConfig, dump_logits
from kdcli.models import create_model

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


@pytest.fixture
def tmp_path(tmp_path):
    """make splits a variable's value at whitespace: VENV, TEACHER or CACHE under a TMPDIR with a space in its name would
    be two paths, and make would run `python -m venv` on the first half. Such a folder cannot be handed to make at all."""
    if any(c.isspace() for c in str(tmp_path)):
        pytest.skip(f"make cannot be given a path with whitespace: {tmp_path}")
    return tmp_path


def make_teacher_run(folder, seed):
    """A finished teacher run folder as make sees one: checkpoint.pt, then summary.json."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    state = {"model": create_model("lenet5").state_dict(), "model_name": "lenet5", "num_classes": 10, "epoch": 1, "config": {"epochs": 1}}
    torch.save(state, folder / "checkpoint.pt")
    time.sleep(0.01)  # after any cache file of before: make and the rule compare modification times
    (folder / "summary.json").write_text("{}")
    return folder


def make_logits(tmp_path, data_dir, teacher="teacher"):
    venv = tmp_path / "venv"
    (venv / ".installed").parent.mkdir(exist_ok=True)
    (venv / ".installed").touch()
    variables = [f"VENV={venv}", f"KDCLI={sys.executable} -m kdcli", f"TEACHER={tmp_path / teacher}", f"CACHE={tmp_path / 'c.h5'}",
                 "CACHE_EPOCHS=2", f"DATA={data_dir}", "DEVICE=cpu", "ARGS=--dtype float32 --batch-size 64 --quiet --no-download"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LC_ALL": "C"}  # make's own words ("Nothing to be done") untranslated: LANGUAGE=de
    return subprocess.run(["make", "-C", str(ROOT), "logits", *variables], capture_output=True, text=True, env=env, timeout=300)


def dump(tmp_path, data_dir, epochs=2, **options):
    config = DumpConfig(teacher=str(tmp_path / "teacher"), epochs=epochs, out=str(tmp_path / "c.h5"), dtype="float32", batch_size=64,
                        data_dir=str(data_dir), device="cpu", download=False, quiet=True, **options)  # fmt: skip
    return dump_logits(config, progress=False)


def made_by(tmp_path):
    info = cache_info(tmp_path / "c.h5")
    return info["attrs"]["teacher_sha256"], info["epochs_complete"]


def test_a_complete_cache_without_its_done_file_is_kept(tmp_path, data_dir):
    """The dump finished, and make was stopped before its touch: run again, it keeps the cache."""
    teacher = make_teacher_run(tmp_path / "teacher", seed=0)
    dump(tmp_path, data_dir)
    before = (tmp_path / "c.h5").stat().st_mtime_ns
    result = make_logits(tmp_path, data_dir)
    assert result.returncode == 0, result.stderr
    assert "complete already" in result.stdout and (tmp_path / "c.h5.done").exists()
    assert (tmp_path / "c.h5").stat().st_mtime_ns == before
    assert made_by(tmp_path) == (sha256(teacher / "checkpoint.pt"), 2)


def test_a_new_teachers_cache_is_remade_even_after_a_stop_before_the_dump_wrote(tmp_path, data_dir):
    """A newer teacher, and `make logits` stopped after its rm of the .done file, before the dump began."""
    make_teacher_run(tmp_path / "teacher", seed=0)
    assert make_logits(tmp_path, data_dir).returncode == 0
    (tmp_path / "c.h5.done").unlink()  # what the stopped run left: the old teacher's complete cache, no .done
    new = make_teacher_run(tmp_path / "teacher", seed=1)
    result = make_logits(tmp_path, data_dir)
    assert result.returncode == 0, result.stderr
    assert made_by(tmp_path) == (sha256(new / "checkpoint.pt"), 2)


def test_a_cache_deleted_after_it_was_made_is_made_again(tmp_path, data_dir):
    """Deleted by hand (to free space, say), its .done file left: make must not take the stage for done."""
    teacher = make_teacher_run(tmp_path / "teacher", seed=0)
    assert make_logits(tmp_path, data_dir).returncode == 0
    (tmp_path / "c.h5").unlink()
    result = make_logits(tmp_path, data_dir)
    assert result.returncode == 0, result.stderr
    assert made_by(tmp_path) == (sha256(teacher / "checkpoint.pt"), 2)


def test_another_teacher_older_than_the_cache_is_not_given_its_logits(tmp_path, data_dir):
    """`make student TEACHER=runs/other` with the default CACHE, made since from runs/teacher: the other teacher's
    summary.json is older than the cache, yet the cache is not its own and must not pass for done."""
    make_teacher_run(tmp_path / "other", seed=1)
    teacher = make_teacher_run(tmp_path / "teacher", seed=0)
    assert make_logits(tmp_path, data_dir).returncode == 0
    result = make_logits(tmp_path, data_dir, teacher="other")
    assert result.returncode != 0 and "made with other settings: teacher_sha256" in result.stderr
    assert made_by(tmp_path) == (sha256(teacher / "checkpoint.pt"), 2)  # refused, not overwritten
    result = make_logits(tmp_path, data_dir, teacher="teacher/")  # its own teacher again, however spelled: kept
    assert result.returncode == 0 and "complete already" in result.stdout, result.stderr


def test_a_done_of_an_earlier_kdcli_or_of_the_teacher_through_a_link_is_up_to_date(tmp_path, data_dir):
    """An empty .done (written before it named the teacher) and a TEACHER that is a link to the one named: make has
    nothing to do, and runs no dump, which would also be handed ARGS meant for the student."""
    make_teacher_run(tmp_path / "teacher", seed=0)
    assert make_logits(tmp_path, data_dir).returncode == 0
    (tmp_path / "link").symlink_to(tmp_path / "teacher")
    result = make_logits(tmp_path, data_dir, teacher="link")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout, result.stdout + result.stderr
    (tmp_path / "c.h5.done").write_text("")
    result = make_logits(tmp_path, data_dir)
    assert result.returncode == 0 and "Nothing to be done" in result.stdout, result.stdout + result.stderr


def test_the_new_teachers_unfinished_cache_resumes(tmp_path, data_dir):
    """A newer teacher, and `make logits` stopped once the new cache had one epoch: run again, it resumes."""
    make_teacher_run(tmp_path / "teacher", seed=0)
    assert make_logits(tmp_path, data_dir).returncode == 0
    new = make_teacher_run(tmp_path / "teacher", seed=1)
    (tmp_path / "c.h5.done").unlink()
    dump(tmp_path, data_dir, force=True, epochs=2)  # stands in for the stopped one; then cut back to one epoch:
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        f["epochs_complete"][()] = 1
    result = make_logits(tmp_path, data_dir)
    assert result.returncode == 0, result.stderr
    assert "resumed at epoch 2" in result.stdout
    assert made_by(tmp_path) == (sha256(new / "checkpoint.pt"), 2)


def test_make_runs_this_checkouts_kdcli_whatever_the_venv_installed(tmp_path, data_dir):
    """A VENV shared by two checkouts: its bin/kdcli runs the one its editable install points at, not this one."""
    make_teacher_run(tmp_path / "teacher", seed=0)
    bin = tmp_path / "venv" / "bin"
    bin.mkdir(parents=True)
    (bin / "python").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    (bin / "kdcli").write_text("#!/bin/sh\necho another checkout\\'s kdcli >&2; exit 3\n")
    for script in bin.iterdir():
        script.chmod(0o755)
    (tmp_path / "venv" / ".installed").touch()
    variables = [f"VENV={tmp_path / 'venv'}", f"TEACHER={tmp_path / 'teacher'}", f"CACHE={tmp_path / 'c.h5'}", "CACHE_EPOCHS=2",
                 f"DATA={data_dir}", "DEVICE=cpu", "ARGS=--dtype float32 --batch-size 64 --quiet --no-download"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user runs it: only the folder make runs in
    result = subprocess.run(["make", "-C", str(ROOT), "logits", *variables], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert made_by(tmp_path)[1] == 2


def test_install_after_a_pyproject_change_keeps_the_venvs_python(tmp_path):
    """pyproject.toml changed (a pull) since the install, and PYTHON another python than the one that made VENV
    (made with PYTHON=python3.10): reinstalling must not make the venv anew over the first python's."""
    bin = tmp_path / "venv" / "bin"
    bin.mkdir(parents=True)
    for name in ("python", "pip"):
        (bin / name).write_text(f"#!/bin/sh\necho {name} \"$@\" >> {tmp_path / 'ran'}\n")
        (bin / name).chmod(0o755)
    other = tmp_path / "python3.13"
    other.write_text(f"#!/bin/sh\necho python3.13 \"$@\" >> {tmp_path / 'ran'}\n")
    other.chmod(0o755)
    (tmp_path / "venv" / ".installed").touch()
    os.utime(tmp_path / "venv" / ".installed", (0, 0))  # older than pyproject.toml
    result = subprocess.run(["make", "-C", str(ROOT), "install", f"VENV={tmp_path / 'venv'}", f"PYTHON={other}"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ran").read_text() == "pip install -q -e .[dev]\n"


def test_install_after_a_venv_stopped_before_its_pip_gets_its_pip(tmp_path):
    """`python -m venv` links bin/python first, then runs ensurepip for seconds: a Ctrl-C there leaves a venv without
    pip. Run again, make install must give it one (as a second `python -m venv` did), not fail on bin/pip forever."""
    bin = tmp_path / "venv" / "bin"
    bin.mkdir(parents=True)
    ran = tmp_path / "ran"
    # The venv's python makes bin/pip when asked to install pip, as ensurepip does; either pip records its call.
    pip = f"#!/bin/sh\necho pip \"$@\" >> {ran}\n"
    (bin / "python").write_text(f"#!/bin/sh\necho python \"$@\" >> {ran}\nprintf '{pip}' > {bin / 'pip'}; chmod +x {bin / 'pip'}\n")
    (bin / "python").chmod(0o755)
    other = tmp_path / "python3"
    other.write_text(f"#!/bin/sh\necho python3 \"$@\" >> {ran}\nprintf '{pip}' > {bin / 'pip'}; chmod +x {bin / 'pip'}\n")
    other.chmod(0o755)
    result = subprocess.run(["make", "-C", str(ROOT), "install", f"VENV={tmp_path / 'venv'}", f"PYTHON={other}"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ran.read_text().splitlines()[-1] == "pip install -q -e .[dev]"
    assert "python3" not in ran.read_text()  # the venv's own python: another would add its site-packages beside


def test_demo_runs_the_pipelines_own_targets_shrunk(tmp_path, data_dir):
    """`make demo` is `make sweep` with small settings, so it remakes its cache for a new teacher as `make logits` does."""
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed").touch()
    demo = ["DEMO=" + str(tmp_path / "demo"), "DEMO_CACHE=" + str(tmp_path / "demo.h5")]
    result = subprocess.run(["make", "-C", str(ROOT), "-n", "demo", f"VENV={venv}", "KDCLI=kdcli", f"DATA={data_dir}", *demo],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    commands = " ".join(result.stdout.replace("\\\n", " ").split())
    assert f"kdcli train-teacher --model resnet8 --epochs 5 --scheduler onecycle --eval-every 5 --out {tmp_path / 'demo' / 'teacher'}" in commands
    assert "--subset 5000" in commands.split("kdcli dump-logits")[1].split("kdcli sweep")[0]
    assert f"kdcli sweep --cache {tmp_path / 'demo.h5'} --temperatures '1,30' --seeds '1,2' --epochs 5" in commands


def test_make_alone_lists_the_targets():
    result = subprocess.run(["make", "-C", str(ROOT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    listed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("  make ")]
    assert {"demo", "teacher", "logits", "student", "sweep", "reproduce", "test"} <= set(listed)
    variables = result.stdout.split("variables, with their defaults")[1].split()  # README sends users to `make` for them
    assert {"EPOCHS=300", "TEACHER_MODEL=resnet18", "SUBSET=", "DATA=", "T=30", "ARGS=", "DEMO_EPOCHS=5"} <= set(variables)


def test_make_sweep_takes_lists_written_with_spaces(tmp_path):
    """SEEDS="777, 10", as the README writes seeds in prose: kdcli reads it, if make passes it as one argument."""
    result = subprocess.run(["make", "-n", "-C", str(ROOT), "sweep", "SEEDS=777, 10", "TEMPERATURES=1, 30", f"CACHE={tmp_path / 'c.h5'}"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    command = shlex.split(result.stdout.split(" sweep ")[-1].replace("\\\n", " "))
    assert command[command.index("--seeds") + 1] == "777, 10" and command[command.index("--temperatures") + 1] == "1, 30"


def test_make_student_writes_into_STUDENT(tmp_path):
    """Two students of two caches need two folders: the second would be refused as another cache's run."""
    result = subprocess.run(["make", "-n", "-C", str(ROOT), "student", f"STUDENT={tmp_path / 'mine'}", f"CACHE={tmp_path / 'c.h5'}"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"--out {tmp_path / 'mine'} " in result.stdout


@pytest.mark.parametrize("target, variable, name, what", [("clean", "VENV", "my folder", "whitespace"), ("student", "DATA", "my folder", "whitespace"),
                                                      ("logits", "CACHE", "my folder", "whitespace"), ("student", "TEACHER", "12:00", "a colon")])
def test_a_path_make_cannot_take_is_refused_before_any_rule_runs(tmp_path, target, variable, name, what):
    """make splits a value at whitespace: `make clean VENV="my venvs/k"` would be `rm -rf my venvs/k`, two folders.
    A colon in a target's name reads as a rule's, and make's own error says nothing of the variable."""
    result = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), target, f"{variable}={tmp_path / name}"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0 and result.stdout == "", result.stdout
    assert f'{variable}="{tmp_path / name}": make cannot take a path with {what}' in result.stderr, result.stderr
