"""kdcli.train and kdcli.group: run folders, determinism, exact resume, stacked students, evaluation, bad losses.

Every run is LeNet-5 on the 200-image session data on the CPU: 4 steps of 64 images per epoch.
"""

import copy
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import fields
from types import SimpleNamespace
from unittest.mock import ANY

import numpy as np
import pytest
import torch
from conftest import dead_pid, record_progress_bars, write_cifar_folder

import kdcli.group as group_module
import kdcli.train as train_module
from kdcli import KdcliError, __version__, augment
from kdcli.checkpoint import CHECKPOINT, load_checkpoint
from kdcli.config import ConfigError, StudentConfig, TeacherConfig
from kdcli.data import DATA_DIR, load_cifar10, recorded_data_dir
from kdcli.device import autocast_dtype, autocast_to
from kdcli.evaluate import evaluate, evaluate_stack, load_model, predict, recorded_precision, top1
from kdcli.group import TrainingInterrupted
from kdcli.locks import warn_cannot_lock
from kdcli.losses import distillation_loss
from kdcli.models import create_model
from kdcli.optimizer import learning_rate
from kdcli.records import as_recorded_now
from kdcli.resume import MAY_DIFFER
from kdcli.runs import LOCK, DrawnAugmentation, Run, claim_folder, git_commit
from kdcli.signals import StopOnSignal
from kdcli.stack import ModelStack, split_optimizer_state, stack_optimizer_states
from kdcli.train import train_runs, train_student, train_teacher

STEPS = 4  # ceil(200 / 64)
METRICS = {"epoch", "lr", "train_loss", "train_accuracy", "test_accuracy", "seconds", "images_per_s", "trained_together"}
TIMING = {"seconds", "images_per_s"}  # the only metrics that may differ between identical runs


def config(root, name, data_dir, cls=TeacherConfig, **options):
    """A tiny CPU run in root/name; `options` override the defaults."""
    defaults = dict(model="lenet5", epochs=3, batch_size=64, device="cpu", data_dir=str(data_dir), download=False,
                    lr_milestones=(), out=str(root / name), quiet=True)
    return cls(**{**defaults, **options})


def teach(cfg):
    return train_teacher(cfg, progress=False)


def weights(run_dir):
    return load_checkpoint(run_dir)["model"]


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if atol:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timing(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def call_on_step(monkeypatch, step, action, *more):
    """Pass the loss of global training step `step` (1-based) through `action` (to interrupt or break it);
    `more`: further (step, action) pairs."""
    calls, actions = [0], dict([(step, action), *zip(more[::2], more[1::2])])

    def loss(*args, **kwargs):
        calls[0] += 1
        value = distillation_loss(*args, **kwargs)
        return actions[calls[0]](value) if calls[0] in actions else value

    monkeypatch.setattr(group_module, "distillation_loss", loss)


def press_ctrl_c(value):
    os.kill(os.getpid(), signal.SIGINT)
    return value


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A finished 3-epoch teacher run: the reference that resumed runs must equal."""
    root = tmp_path_factory.mktemp("finished")
    summary = teach(config(root, "run", data_dir))
    return root / "run", summary


# ---------------------------------------------------------------- the run folder


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_recorded_commit_is_kdclis_own_and_says_when_its_files_differ(tmp_path):
    def git(*args, cwd):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True)

    for repo, package in [(tmp_path / "checkout", "kdcli"), (tmp_path / "project", ".venv/site-packages/kdcli")]:
        (repo / package).mkdir(parents=True)
        (repo / package / "__init__.py").write_text("")
        git("init", "-q", cwd=repo)
        git("add", "-A", cwd=repo)
        git("commit", "-qm", "one", cwd=repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path / "checkout", capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path / "checkout" / "kdcli") == head
    (tmp_path / "checkout" / "kdcli" / "__init__.py").write_text("# changed")
    git_commit.cache_clear()  # asked once per process
    assert git_commit(tmp_path / "checkout" / "kdcli") == head + "-dirty"
    assert git_commit(tmp_path / "project" / ".venv/site-packages/kdcli") is None  # a user's repository around an installed kdcli
    assert git_commit(tmp_path) is None  # no repository at all


def test_run_folder(tmp_path, data_dir):
    cfg = config(tmp_path, "run", data_dir, epochs=2, lr_milestones=(1,))
    summary = teach(cfg)
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK, CHECKPOINT, "config.json", "metrics.jsonl", "summary.json"])

    recorded = json.loads((out / "config.json").read_text())
    assert {f.name for f in fields(TeacherConfig)} <= recorded.keys()
    assert {"kdcli_version", "git_commit", "train_fingerprint"} <= recorded.keys()
    assert recorded["kdcli_version"] == __version__ and recorded["lr"] == cfg.lr and recorded["lr_milestones"] == [1]
    assert recorded["train_fingerprint"] == load_cifar10(data_dir).fingerprint

    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2] and all(r.keys() == METRICS for r in rows)
    assert [r["lr"] for r in rows] == pytest.approx([0.1, 0.01])  # multistep at milestone 1
    assert all(r["images_per_s"] > 0 and 0 <= r["test_accuracy"] <= 100 for r in rows)

    state = load_checkpoint(out)
    assert state["epoch"] == 2 and state["step"] == 0 and state["model_name"] == "lenet5"
    assert state["config"]["out"] == str(out)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["test_accuracy"] == rows[-1]["test_accuracy"] == state["test_accuracy"]
    assert summary["epochs"] == 2 and summary["trained_together"] == 1 and summary["git_commit"] == recorded["git_commit"]

    # What computed it, beside what was asked: its --amp says fp16, which a CPU ran in float32.
    ran = {"resolved_device": "cpu", "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(), "precision": "float32"}
    assert recorded["amp"] == "fp16" and {k: recorded.get(k) for k in ran} == ran == {k: summary.get(k) for k in ran}


def test_a_folder_another_kdcli_trains_in_is_left_alone(tmp_path, data_dir, finished):
    shutil.copytree(finished[0], tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with claim_folder(tmp_path / "run"):  # as a second process would find it: the lock conflicts within one process too
        with pytest.raises(KdcliError, match=r"run is in use by another kdcli training there \(it holds .*run/.kdcli.lock\): wait for it to end, or pass another --out"):
            teach(config(tmp_path, "run", data_dir, force=True))
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before  # --force deleted nothing
    teach(config(tmp_path, "run", data_dir, force=True))  # released


def test_a_filesystem_without_locks_trains_with_one_warning(tmp_path, data_dir, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    warn_cannot_lock.cache_clear()  # once per process: this test must see it
    with pytest.warns(UserWarning, match=r"cannot lock files on this filesystem \(No locks available\): a second kdcli writing into the same --out would not be refused") as warned:
        teach(config(tmp_path, "run", data_dir, epochs=1))
        teach(config(tmp_path, "other", data_dir, epochs=1))  # a second folder, as in a sweep: no second line
    assert sum("cannot lock" in str(w.message) for w in warned) == 1
    assert (tmp_path / "run" / "summary.json").exists() and (tmp_path / "other" / "summary.json").exists()


def test_a_run_on_a_filesystem_without_locks_is_not_taken_for_one_in_use_when_run_again(tmp_path, data_dir, finished, monkeypatch):
    """Its lock file is there now: a lock that cannot be asked about is no lock held."""
    shutil.copytree(finished[0], tmp_path / "run")

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one line about the filesystem: the test above
        assert teach(config(tmp_path, "run", data_dir, resume=True))["kept"]


def test_running_out_of_file_descriptors_while_claiming_says_so(tmp_path, monkeypatch):
    def no_more_files(*args, **kwargs):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "open", no_more_files)
    with pytest.raises(KdcliError, match=r"too many open files to hold the lock of .*run: raise the limit \(ulimit -n\)"):
        with claim_folder(tmp_path / "run"):
            pass


def test_the_lock_of_a_killed_kdcli_is_gone_with_it(tmp_path):
    code = f"from kdcli.runs import claim_folder; c = claim_folder({str(tmp_path / 'run')!r}); c.__enter__(); print('held', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(KdcliError, match="in use"):
            with claim_folder(tmp_path / "run"):
                pass
    finally:
        holder.kill()
        holder.communicate()  # waits, and closes its pipes
    with claim_folder(tmp_path / "run"):
        pass
    assert [p.name for p in (tmp_path / "run").iterdir()] == [LOCK]  # an empty file; its lock died with its holder


def test_eval_every_leaves_gaps_but_always_tests_the_last_epoch(tmp_path, data_dir):
    teach(config(tmp_path, "run", data_dir, eval_every=2))
    assert [r["test_accuracy"] is None for r in metrics(tmp_path / "run")] == [True, False, False]


def test_same_seed_same_run(tmp_path, data_dir, finished):
    run_dir, _ = finished
    teach(config(tmp_path, "again", data_dir))
    assert_same_weights(weights(tmp_path / "again"), weights(run_dir))
    assert without_timing(metrics(tmp_path / "again")) == without_timing(metrics(run_dir))
    teach(config(tmp_path, "other-seed", data_dir, seed=1))
    assert not torch.equal(weights(tmp_path / "other-seed")["fc3.weight"], weights(run_dir)["fc3.weight"])


def test_a_validation_split_trains_on_the_other_images_and_reports_accuracy_on_its_own(tmp_path, data_dir):
    summary = teach(config(tmp_path, "held", data_dir, val_size=50, eval_every=2))
    teach(config(tmp_path, "alone", data_dir, subset=150, eval_every=2))  # the same 150 images, nothing held out
    assert_same_weights(weights(tmp_path / "held"), weights(tmp_path / "alone"))
    held = metrics(tmp_path / "held")
    assert [{k: v for k, v in r.items() if k != "val_accuracy"} for r in without_timing(held)] == without_timing(metrics(tmp_path / "alone"))
    assert [r["val_accuracy"] is None for r in held] == [True, False, False]  # evaluated with the test set, at its epochs

    data = load_cifar10(data_dir)  # the held-out images are the last 50 of the 200
    model, state = load_model(tmp_path / "held", torch.device("cpu"))
    hits = (predict(model, data.train_images[150:]).argmax(1) == data.train_labels[150:]).float().mean().item()
    assert summary["val_accuracy"] == held[-1]["val_accuracy"] == state["val_accuracy"] == pytest.approx(100 * hits, abs=1e-4)
    recorded = json.loads((tmp_path / "held" / "config.json").read_text())
    assert recorded["val_size"] == 50 and recorded["train_fingerprint"] == data.fingerprint  # the images a cache labels
    result = evaluate(tmp_path / "held", data_dir, device="cpu", download=False)  # finds the held-out images from the checkpoint
    assert (result["val_accuracy"], result["val_size"], result["test_accuracy"]) == (summary["val_accuracy"], 50, summary["test_accuracy"])
    assert "val_accuracy" not in evaluate(tmp_path / "alone", data_dir, device="cpu", download=False)


def test_evaluate_finds_the_held_out_images_of_a_run_on_a_subset(tmp_path, data_dir):
    """--subset 150 --val-size 30 holds out images 120-149, not the last 30 of all 200."""
    summary = teach(config(tmp_path, "run", data_dir, epochs=1, subset=150, val_size=30))
    data = load_cifar10(data_dir)
    model, _ = load_model(tmp_path / "run", torch.device("cpu"))
    hits = (predict(model, data.train_images[120:150]).argmax(1) == data.train_labels[120:150]).float().mean().item()
    result = evaluate(tmp_path / "run", data_dir, device="cpu", download=False)
    assert result["val_accuracy"] == summary["val_accuracy"] == pytest.approx(100 * hits, abs=1e-4)
    assert result["val_size"] == 30
    other = write_cifar_folder(tmp_path / "other", seed=1)  # its held-out images would be other images
    for given in (tmp_path / "run", tmp_path / "copy.pt"):  # the checkpoint records them: a copy elsewhere is checked too
        shutil.copy(tmp_path / "run" / CHECKPOINT, tmp_path / "copy.pt")
        with pytest.warns(UserWarning, match=r"was trained on other images than those now in .*other, so its test set may be another too \(its held-out accuracy is left out\)"):
            elsewhere = evaluate(given, other, device="cpu", download=False)
        assert "val_accuracy" not in elsewhere and elsewhere["test_accuracy"] >= 0
    fewer = write_cifar_folder(tmp_path / "fewer", train_per_batch=10)  # 50 training images: fewer than its --subset 150
    with pytest.warns(UserWarning, match="was trained on other images than those now in .*fewer"):
        assert "val_accuracy" not in evaluate(tmp_path / "run", fewer, device="cpu", download=False)


def test_a_run_without_a_validation_split_reports_no_validation_accuracy(finished):
    run_dir, summary = finished
    assert "val_accuracy" not in summary and all("val_accuracy" not in r for r in metrics(run_dir))


# ---------------------------------------------------------------- resume


def test_a_run_whose_ctrl_c_is_ignored_keeps_ignoring_it(tmp_path, data_dir, monkeypatch):
    """A background job of a script starts with SIGINT ignored, so that Ctrl-C in the terminal spares it: as Python does."""
    call_on_step(monkeypatch, 2, press_ctrl_c)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        summary = teach(config(tmp_path, "run", data_dir))
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert summary["epochs"] == 3 and (tmp_path / "run" / "summary.json").exists()


def test_the_progress_bar_counts_images_step_by_step_and_a_resumed_run_starts_where_it_stopped(tmp_path, data_dir, monkeypatch):
    """An epoch of ResNet18 takes half an hour on a CPU: a bar counting epochs would stand still that long."""
    bars = record_progress_bars(monkeypatch, train_module)
    call_on_step(monkeypatch, STEPS + 2, press_ctrl_c)  # epoch 2, step 2
    with pytest.raises(TrainingInterrupted):
        train_teacher(config(tmp_path, "run", data_dir, epochs=2, quiet=False))
    assert (bars[0].total, bars[0].counts) == (400, [64, 64, 64, 8, 64, 64])  # 200 images, batches of 64
    train_teacher(config(tmp_path, "run", data_dir, epochs=2, quiet=False, resume=True))
    assert (bars[1].total, bars[1].n, bars[1].counts) == (400, 400, [64, 8])  # from 200 + 2 x 64, its steps 3 and 4
    assert bars[1].desc.startswith("epoch 2/2")


def test_a_run_stopped_after_an_epochs_last_step_resumes_at_that_epochs_end(tmp_path, data_dir, monkeypatch, capsys):
    """Its steps are all done, its evaluation is not: there is no step STEPS + 1 to resume at, nor images past the epoch's.
    A stop lands there often where the last, smaller batch is the slow step (a CPU sizing its kernels for it)."""
    bars = record_progress_bars(monkeypatch, train_module)
    call_on_step(monkeypatch, STEPS, press_ctrl_c)
    with pytest.raises(TrainingInterrupted, match=f"interrupted at epoch 1, step {STEPS} of {STEPS}"):
        train_teacher(config(tmp_path, "run", data_dir, epochs=2, quiet=False))
    capsys.readouterr()
    train_teacher(config(tmp_path, "run", data_dir, epochs=2, quiet=False, resume=True))
    assert f"resuming {tmp_path / 'run'} at the end of epoch 1 (its steps done)\n" in capsys.readouterr().err
    assert (bars[1].total, bars[1].n, bars[1].counts) == (400, 400, [64, 64, 64, 8])  # from 200: epoch 2's steps alone


@pytest.mark.parametrize("stop_at", [1, 4, 6], ids=["first-step", "end-of-epoch-1", "mid-epoch-2"])
def test_resume_after_ctrl_c_equals_an_uninterrupted_run(tmp_path, data_dir, finished, monkeypatch, stop_at):
    run_dir, summary = finished
    handler = signal.getsignal(signal.SIGINT)
    call_on_step(monkeypatch, stop_at, press_ctrl_c)
    epoch, step = (stop_at - 1) // STEPS, (stop_at - 1) % STEPS + 1  # epochs complete, steps into the next
    with pytest.raises(TrainingInterrupted, match=f"interrupted at epoch {epoch + 1}, step {step} of {STEPS}"):
        teach(config(tmp_path, "run", data_dir))
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C works normally again
    state = load_checkpoint(tmp_path / "run")
    assert (state["epoch"], state["step"]) == (epoch, step)
    assert not (tmp_path / "run" / "summary.json").exists()

    monkeypatch.undo()
    resumed = teach(config(tmp_path, "run", data_dir, resume=True))
    assert_same_weights(weights(tmp_path / "run"), weights(run_dir))
    rows = metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert without_timing(rows) == without_timing(metrics(run_dir))
    assert resumed["test_accuracy"] == summary["test_accuracy"]


def press_ctrl_c_while_evaluating(monkeypatch):
    evaluate = group_module.evaluate_stack

    def evaluate_and_press_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(group_module, "evaluate_stack", evaluate_and_press_ctrl_c)


def test_ctrl_c_while_an_epoch_evaluates_stops_before_another_step(tmp_path, data_dir, finished, monkeypatch):
    """A step of ResNet18 costs seconds on a CPU: after the evaluation it waited for, the run stops at once, and
    saves the epoch even where --save-every would not have."""
    run_dir, _ = finished
    steps, loss = [], group_module.distillation_loss
    monkeypatch.setattr(group_module, "distillation_loss", lambda *a, **kw: steps.append(1) or loss(*a, **kw))
    press_ctrl_c_while_evaluating(monkeypatch)
    with pytest.raises(TrainingInterrupted, match="interrupted after epoch 1 of 3; checkpoint saved in "):
        teach(config(tmp_path, "run", data_dir, save_every=2))
    assert len(steps) == STEPS  # epoch 1's, and not one of epoch 2
    state = load_checkpoint(tmp_path / "run")
    assert (state["epoch"], state["step"]) == (1, 0)
    monkeypatch.undo()
    teach(config(tmp_path, "run", data_dir, save_every=2, resume=True))
    assert_same_weights(weights(tmp_path / "run"), weights(run_dir))


def test_ctrl_c_before_the_first_step_says_nothing_was_trained(tmp_path, data_dir, monkeypatch):
    create = group_module.create_model

    def create_and_press_ctrl_c(*args, **kwargs):  # while the group is set up, after the handler is in place
        os.kill(os.getpid(), signal.SIGINT)
        return create(*args, **kwargs)

    monkeypatch.setattr(group_module, "create_model", create_and_press_ctrl_c)
    with pytest.raises(TrainingInterrupted, match=r"interrupted before the first step: nothing trained yet in .*run$"):
        teach(config(tmp_path, "run", data_dir))
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_ctrl_c_while_the_last_epoch_evaluates_lets_the_run_finish_and_says_so(tmp_path, data_dir, monkeypatch, capsys):
    press_ctrl_c_while_evaluating(monkeypatch)
    summary = train_teacher(config(tmp_path, "run", data_dir, epochs=1), progress=True)
    assert summary["epochs"] == 1 and (tmp_path / "run" / "summary.json").exists()
    assert "run: finished before the next safe point; nothing to resume" in capsys.readouterr().err


def test_a_run_trained_without_progress_prints_nothing_even_when_ctrl_c_came_too_late(tmp_path, data_dir, monkeypatch, capsys):
    press_ctrl_c_while_evaluating(monkeypatch)
    assert train_teacher(config(tmp_path, "run", data_dir, epochs=1), progress=False)["epochs"] == 1
    assert capsys.readouterr() == ("", "")  # the "stopping at the next safe point" line is a raw write to fd 2


def files_synced(monkeypatch) -> list:
    """The names of the files os.fsync is called on from now on, in order."""
    synced, fsync = [], os.fsync

    def recording_fsync(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return synced


def test_each_epochs_metrics_line_is_on_disk_before_its_checkpoint(tmp_path, data_dir, monkeypatch):
    """A power cut after a checkpoint must not lose the metrics line of an epoch that checkpoint counts."""
    synced = files_synced(monkeypatch)
    teach(config(tmp_path, "run", data_dir, epochs=2))
    files = [name for name in synced if name == "metrics.jsonl" or name.startswith(f".{CHECKPOINT}.tmp")]
    assert [name == "metrics.jsonl" for name in files] == [True, False, True, False], synced


def test_summary_and_config_are_on_disk_before_they_are_renamed_into_place(tmp_path, data_dir, monkeypatch):
    """A power cut after the rename must not leave an empty summary.json: the run would pass for finished
    (--resume keeps it) yet be unreadable, and only --force, a retraining, would get past it."""
    synced = files_synced(monkeypatch)
    teach(config(tmp_path, "run", data_dir, epochs=1))
    assert {name.split(".tmp-")[0] for name in synced} >= {".summary.json", ".config.json"}, synced


def recorded_step_losses(monkeypatch) -> list:
    """The loss of each training step, appended as the steps run."""
    step_losses = []

    def recorded(*args, **kwargs):
        loss = distillation_loss(*args, **kwargs)
        step_losses.append(loss.item())
        return loss

    monkeypatch.setattr(group_module, "distillation_loss", recorded)
    return step_losses


def test_train_loss_is_the_mean_over_images(tmp_path, data_dir, monkeypatch):
    """Steps of 64, 64, 64 and 8 images: the last step's loss weighs 8/200, not 1/4."""
    step_losses = recorded_step_losses(monkeypatch)
    teach(config(tmp_path, "run", data_dir, epochs=1))
    expected = sum(loss * n for loss, n in zip(step_losses, (64, 64, 64, 8))) / 200
    assert metrics(tmp_path / "run")[0]["train_loss"] == pytest.approx(expected, abs=1e-5)
    assert abs(sum(step_losses) / 4 - expected) > 1e-4  # the unweighted mean would differ


def test_train_accuracy_is_the_share_of_images_classified_right(tmp_path, data_dir, monkeypatch):
    """Hits counted over the 200 images of an epoch, the last batch of 8 included."""
    hits = []

    def recorded(student, labels, *args, **kwargs):
        hits.append((student.argmax(-1) == labels).sum().item())
        return distillation_loss(student, labels, *args, **kwargs)

    monkeypatch.setattr(group_module, "distillation_loss", recorded)
    summary = teach(config(tmp_path, "run", data_dir, epochs=1))
    assert len(hits) == STEPS and metrics(tmp_path / "run")[0]["train_accuracy"] == pytest.approx(100 * sum(hits) / 200, abs=1e-4)
    assert summary["train_accuracy"] == pytest.approx(100 * sum(hits) / 200, abs=1e-4)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_every_step_uses_the_scheduled_learning_rate_and_the_optimizer_asked_for(tmp_path, data_dir, monkeypatch, optimizer):
    seen, make = [], group_module.make_optimizer

    def recorded(*args, **kwargs):
        made = make(*args, **kwargs)
        step = made.step

        def stepped(*a, **k):
            seen.append((type(made).__name__, dict(made.param_groups[0])))
            return step(*a, **k)

        made.step = stepped
        return made

    monkeypatch.setattr(group_module, "make_optimizer", recorded)
    options = dict(lr=0.05, weight_decay=1e-3) | (dict(momentum=0.8, nesterov=True) if optimizer == "sgd" else {})
    cfg = config(tmp_path, "run", data_dir, epochs=2, scheduler="onecycle", optimizer=optimizer, **options)
    teach(cfg)
    assert [group["lr"] for _, group in seen] == [learning_rate(cfg, e + i / STEPS) for e in range(2) for i in range(STEPS)]
    assert {name for name, _ in seen} == {"SGD" if optimizer == "sgd" else "Adam"}
    assert all(group[k] == v for _, group in seen for k, v in options.items() if k != "lr")


def test_resume_after_a_crash_retrains_from_the_last_checkpoint(tmp_path, data_dir, monkeypatch):
    """A crash (not Ctrl-C) in epoch 4 with checkpoints every 2 epochs: epoch 3's metrics line is trained again."""
    reference = teach(config(tmp_path, "reference", data_dir, epochs=4))

    def crash(value):
        raise RuntimeError("killed")

    call_on_step(monkeypatch, 3 * STEPS + 2, crash)
    with pytest.raises(RuntimeError, match="killed"):
        teach(config(tmp_path, "run", data_dir, epochs=4, save_every=2))
    assert load_checkpoint(tmp_path / "run")["epoch"] == 2 and len(metrics(tmp_path / "run")) == 3

    monkeypatch.undo()
    resumed = teach(config(tmp_path, "run", data_dir, epochs=4, save_every=2, resume=True))
    assert_same_weights(weights(tmp_path / "run"), weights(tmp_path / "reference"))
    assert without_timing(metrics(tmp_path / "run")) == without_timing(metrics(tmp_path / "reference"))
    assert resumed["test_accuracy"] == reference["test_accuracy"]


def interrupt(tmp_path, data_dir, monkeypatch, step=STEPS + 2, **options):
    """An unfinished run in tmp_path/run: Ctrl-C at global step `step`."""
    with monkeypatch.context() as patch:
        call_on_step(patch, step, press_ctrl_c)
        with pytest.raises(TrainingInterrupted):
            teach(config(tmp_path, "run", data_dir, **options))


def test_a_run_holding_out_images_resumes_with_the_same_validation_accuracies(tmp_path, data_dir, monkeypatch):
    summary = teach(config(tmp_path, "reference", data_dir, val_size=50, eval_every=2))
    interrupt(tmp_path, data_dir, monkeypatch, step=5, val_size=50, eval_every=2)  # epoch 2 of 3 steps each, after a val-less epoch 1
    assert teach(config(tmp_path, "run", data_dir, val_size=50, eval_every=2, resume=True)) == {**summary, "train_seconds": ANY}
    assert without_timing(metrics(tmp_path / "run")) == without_timing(metrics(tmp_path / "reference"))


@pytest.mark.parametrize("killed", ["another process", "this process"])  # a container's next kdcli often has the PID of the killed one
def test_resume_deletes_the_temporary_files_of_a_run_killed_while_writing(tmp_path, data_dir, monkeypatch, killed):
    """A kill between writing a file's temporary copy and renaming it leaves `.<name>.tmp-<pid>`: its checkpoint's,
    config.json's or summary.json's. The next kdcli in the folder deletes them."""
    interrupt(tmp_path, data_dir, monkeypatch)
    pid = dead_pid() if killed == "another process" else os.getpid()
    stale = [tmp_path / "run" / f".{name}.tmp-{pid}" for name in (CHECKPOINT, "config.json", "summary.json")]
    for path in stale:
        path.write_bytes(b"torn")
    teach(config(tmp_path, "run", data_dir, resume=True))
    assert not any(path.exists() for path in stale)


def test_finished_run_is_refused_without_force(tmp_path, data_dir, finished):
    run_dir, summary = finished
    shutil.copytree(run_dir, tmp_path / "run")
    with pytest.raises(KdcliError, match="holds a finished run.*--force"):  # "finished run" alone matches "unfinished run"
        teach(config(tmp_path, "run", data_dir))
    assert teach(config(tmp_path, "run", data_dir, resume=True)) == {**summary, "kept": True}  # nothing left to train


def test_unfinished_run_is_refused_without_resume(tmp_path, data_dir, monkeypatch):
    interrupt(tmp_path, data_dir, monkeypatch)
    with pytest.raises(KdcliError, match="unfinished run.*--resume"):
        teach(config(tmp_path, "run", data_dir))


def test_unfinished_run_with_a_damaged_checkpoint_is_refused_without_resume_as_unfinished(tmp_path, data_dir, monkeypatch):
    """The checkpoint is read to tell a teacher's run from a student's; one it cannot read is still an unfinished
    run, which only --force starts over: said so, not as a damaged file (which --resume would then report)."""
    interrupt(tmp_path, data_dir, monkeypatch)
    (tmp_path / "run" / CHECKPOINT).write_bytes(b"cut short")
    with pytest.raises(KdcliError, match="holds an unfinished run: pass --resume to continue it, or --force to start over"):
        teach(config(tmp_path, "run", data_dir))
    assert (tmp_path / "run" / CHECKPOINT).read_bytes() == b"cut short"


def test_resume_of_a_run_killed_before_its_summary(tmp_path, data_dir, finished):
    run_dir, summary = finished
    shutil.copytree(run_dir, tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()
    resumed = teach(config(tmp_path, "run", data_dir, resume=True))
    assert resumed["test_accuracy"] == summary["test_accuracy"]
    assert resumed["train_accuracy"] == summary["train_accuracy"]


def test_force_starts_over(tmp_path, data_dir, finished):
    run_dir, _ = finished
    shutil.copytree(run_dir, tmp_path / "run")
    summary = teach(config(tmp_path, "run", data_dir, epochs=1, force=True))
    assert summary["epochs"] == 1 and [r["epoch"] for r in metrics(tmp_path / "run")] == [1]
    assert load_checkpoint(tmp_path / "run")["epoch"] == 1


def test_force_keeps_the_old_run_when_the_new_one_is_refused_for_its_amp(tmp_path, data_dir, finished, monkeypatch):
    """--force --amp bf16 on a GPU without bf16 (simulated: autocast_dtype refuses it as it would there) is refused
    before the finished run in --out is deleted, not after."""
    shutil.copytree(finished[0], tmp_path / "run")

    def no_bf16(amp, device):
        if amp == "bf16":
            raise KdcliError("this GPU does not support bf16")
        return autocast_dtype(amp, device)

    for module in (train_module, group_module):
        monkeypatch.setattr(module, "autocast_dtype", no_bf16)
    with pytest.raises(KdcliError, match="does not support bf16"):
        teach(config(tmp_path, "run", data_dir, epochs=1, force=True, amp="bf16"))
    assert (tmp_path / "run" / "summary.json").exists() and load_checkpoint(tmp_path / "run")["epoch"] == 3


def test_resume_with_other_options_is_refused(tmp_path, data_dir, finished, monkeypatch):
    interrupt(tmp_path, data_dir, monkeypatch)
    with pytest.raises(KdcliError, match="--lr 0.05"):
        teach(config(tmp_path, "run", data_dir, resume=True, lr=0.05))
    with pytest.raises(KdcliError, match="--val-size 10"):  # other training images
        teach(config(tmp_path, "run", data_dir, resume=True, val_size=10))
    # Options that cannot change the result may differ.
    teach(config(tmp_path, "run", data_dir, resume=True, eval_every=3, save_every=3, quiet=False, download=True))
    assert_same_weights(weights(tmp_path / "run"), weights(finished[0]))


def test_resume_of_a_finished_run_with_other_options_is_refused(tmp_path, data_dir, finished):
    shutil.copytree(finished[0], tmp_path / "run")
    with pytest.raises(KdcliError, match="--lr 0.05"):
        teach(config(tmp_path, "run", data_dir, resume=True, lr=0.05))


def test_resume_on_other_images_is_refused(tmp_path, data_dir, monkeypatch):
    interrupt(tmp_path, data_dir, monkeypatch)
    other = write_cifar_folder(tmp_path / "other", seed=1)
    with pytest.raises(KdcliError, match="not the training images given now .*pass its --data-dir and --subset"):
        teach(config(tmp_path, "run", other, resume=True))


def test_resume_from_a_checkpoint_of_something_else_is_refused(tmp_path, data_dir, monkeypatch):
    interrupt(tmp_path, data_dir, monkeypatch)
    with pytest.raises(KdcliError, match=r"holds a lenet5, not a resnet8 \(--model\); give the run's own \(--resume takes them where left out\), --force"):
        teach(config(tmp_path, "run", data_dir, resume=True, model="resnet8"))
    with pytest.raises(KdcliError, match="holds a teacher's run, not a student's: pass another --out"):  # a student would finish it as its own
        train_student(config(tmp_path, "run", data_dir, cls=StudentConfig, resume=True, distillation_weight=0.0), progress=False)
    torch.save({"model": create_model("lenet5").state_dict(), "model_name": "lenet5"}, tmp_path / "run" / CHECKPOINT)  # weights only
    with pytest.raises(KdcliError, match="is not a checkpoint of a run to resume .*lacks optimizer, epoch, step, partial, config"):
        teach(config(tmp_path, "run", data_dir, resume=True))


def test_resume_without_a_checkpoint_starts_fresh(tmp_path, data_dir, finished):
    teach(config(tmp_path, "run", data_dir, resume=True))
    assert_same_weights(weights(tmp_path / "run"), weights(finished[0]))


# ---------------------------------------------------------------- options and schedules


@pytest.mark.parametrize(
    "cls,option,value",
    [
        (TeacherConfig, "epochs", 0),
        (TeacherConfig, "batch_size", 0),
        (TeacherConfig, "lr", -1.0),
        (TeacherConfig, "lr", float("nan")),
        (TeacherConfig, "subset", 0),
        (TeacherConfig, "eval_every", 0),  # else a ZeroDivisionError (epoch % eval_every) after the first of several epochs
        (TeacherConfig, "model", "nope"),  # before any data is loaded, not when the model is made
        (StudentConfig, "save_every", 0),
        (TeacherConfig, "val_size", -1),
        (TeacherConfig, "amp", True),  # bf16 before --amp took a precision: not silently float32 now
        (StudentConfig, "amp", "FP16"),
        (TeacherConfig, "scheduler", "onecylce"),  # a library caller's typo would train at a constant lr
        (TeacherConfig, "optimizer", "adamw"),  # ... or with SGD
        (StudentConfig, "device", "gpu"),
        (StudentConfig, "temperature", 0.0),
        (StudentConfig, "temperature", -1.0),
        (StudentConfig, "temperature", float("nan")),
        (StudentConfig, "temperature", float("inf")),
        (StudentConfig, "temperature", 1e30),  # T^2 overflows float32: the loss would be inf and blame --lr
        (StudentConfig, "distillation_weight", -0.1),
        (StudentConfig, "distillation_weight", float("nan")),
        (StudentConfig, "hard_weight", float("inf")),
        (TeacherConfig, "lr", 0.0),  # trains nothing
        (TeacherConfig, "momentum", 1.0),  # past gradients never fade
        (TeacherConfig, "lr_milestones", (2, 2)),  # the lr would drop by gamma^2 there
        (TeacherConfig, "lr_gamma", 0.0),
        (TeacherConfig, "lr_gamma", float("nan")),
        # A library caller's wrong type, refused as the config is built, not as a TypeError mid-run:
        (TeacherConfig, "epochs", "3"),
        (TeacherConfig, "epochs", 1.5),  # would train 2 epochs and record 1.5
        (TeacherConfig, "batch_size", 64.0),  # a TypeError in the first step, after the run folder is made
        (TeacherConfig, "lr", "0.1"),
        (TeacherConfig, "lr_milestones", 150),
        (TeacherConfig, "seed", None),
        (TeacherConfig, "quiet", "no"),  # truthy: would be quiet
        (StudentConfig, "out", None),
        (StudentConfig, "temperature", "30"),
        (StudentConfig, "subset", 2.5),
        (TeacherConfig, "subset", True),  # a bool is an int to Python: would train on 1 image
        (StudentConfig, "temperature", True),
    ],
)
def test_bad_options_name_their_flag(tmp_path, data_dir, cls, option, value):
    with pytest.raises(ConfigError) as error:
        config(tmp_path, "run", data_dir, cls=cls, **{option: value})
    assert error.value.option == "--" + option.replace("_", "-")


def test_paths_lists_and_numpy_numbers_are_taken_as_the_command_line_gives_them(tmp_path, data_dir):
    """A script's Path, list or numpy integer is stored as str, tuple and int: config.json records them as JSON."""
    # The default milestones as a list: "none" ignores them, and ignored milestones the user gave would be warned of.
    cfg = TeacherConfig(model="lenet5", epochs=1, device="cpu", download=False, quiet=True, data_dir=data_dir, out=tmp_path / "run", scheduler="none",
                        lr_milestones=[150, 225], batch_size=np.int64(64))  # fmt: skip
    assert (cfg.data_dir, cfg.out, cfg.lr_milestones, type(cfg.batch_size)) == (str(data_dir), str(tmp_path / "run"), (150, 225), int)
    assert teach(cfg)["epochs"] == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_dir"] == str(data_dir)


@pytest.mark.parametrize("option, value", [("optimizer", "Adam"), ("epochs", 0), ("scheduler", "onecylce")])
def test_a_field_set_after_the_config_was_built_is_checked_as_training_starts(tmp_path, data_dir, option, value):
    """A script's cfg.optimizer = "Adam" trained with SGD unremarked (and recorded "Adam"); epochs = 0 and a mistyped
    scheduler ended in a FileNotFoundError and a KeyError, each leaving a run folder behind."""
    cfg = config(tmp_path, "run", data_dir, epochs=1)
    setattr(cfg, option, value)
    with pytest.raises(ConfigError) as error:
        teach(cfg)
    assert error.value.option == "--" + option
    assert not (tmp_path / "run").exists()


def test_a_path_set_after_the_config_was_built_is_taken_as_one_given_to_it(tmp_path, data_dir):
    cfg = config(tmp_path, "other", data_dir, epochs=1)
    cfg.out, cfg.data_dir = tmp_path / "run", data_dir  # was a TypeError as config.json was written
    assert teach(cfg)["epochs"] == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["out"] == str(tmp_path / "run")


@pytest.mark.parametrize(
    "cls,options,flag",
    [
        (TeacherConfig, dict(nesterov=True, momentum=0.0), "--nesterov"),
        (StudentConfig, dict(distillation_weight=0.0, hard_weight=0.0), "--distillation-weight/--hard-weight"),
    ],
)
def test_options_that_cannot_go_together(tmp_path, data_dir, cls, options, flag):
    with pytest.raises(ConfigError) as error:
        config(tmp_path, "run", data_dir, cls=cls, **options)
    assert error.value.option == flag


def test_milestones_beyond_the_last_epoch_warn(tmp_path, data_dir):
    with pytest.warns(UserWarning, match="never apply"):
        config(tmp_path, "run", data_dir, epochs=10, lr_milestones=(5, 10)).warn_ineffective()


@pytest.mark.parametrize("options, said", [(dict(nesterov=True), "--nesterov does"), (dict(momentum=0.5), "--momentum does"),
                                           (dict(momentum=0.5, nesterov=True), "--momentum and --nesterov do")])  # fmt: skip
def test_sgds_options_with_adam_warn(tmp_path, data_dir, options, said):
    with pytest.warns(UserWarning, match=f"^{said} nothing with --optimizer adam"):
        config(tmp_path, "run", data_dir, optimizer="adam", **options).warn_ineffective()


def test_adam_with_the_default_momentum_is_not_warned(tmp_path, data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config(tmp_path, "run", data_dir, optimizer="adam").warn_ineffective()


# ---------------------------------------------------------------- students trained together


def baseline_run(root, data_dir, seed, num_images):
    cfg = config(root, f"seed{seed}", data_dir, cls=StudentConfig, epochs=2, seed=seed, distillation_weight=0.0)
    return Run(cfg, DrawnAugmentation(seed, num_images))


def test_stacked_students_equal_students_trained_one_by_one(tmp_path, data_dir):
    data = load_cifar10(data_dir)
    seeds, n = (1, 2, 3), len(data.train_labels)
    together = train_runs([baseline_run(tmp_path / "together", data_dir, s, n) for s in seeds], data, torch.device("cpu"), progress=False)
    alone = [train_runs([baseline_run(tmp_path / "alone", data_dir, s, n)], data, torch.device("cpu"), progress=False)[0] for s in seeds]
    assert [s["trained_together"] for s in together] == [3, 3, 3] and [s["trained_together"] for s in alone] == [1, 1, 1]
    for seed in seeds:
        a, b = tmp_path / "together" / f"seed{seed}", tmp_path / "alone" / f"seed{seed}"
        assert_same_weights(weights(a), weights(b), atol=1e-5)
        for row_a, row_b in zip(metrics(a), metrics(b)):
            assert row_a["train_loss"] == pytest.approx(row_b["train_loss"], rel=1e-4)
    first = weights(tmp_path / "together" / "seed1")
    assert not torch.equal(first["fc3.weight"], weights(tmp_path / "together" / "seed2")["fc3.weight"])


def test_stacked_students_resume_from_their_own_checkpoints(tmp_path, data_dir, monkeypatch):
    data = load_cifar10(data_dir)
    seeds, n, cpu = (1, 2), len(data.train_labels), torch.device("cpu")
    train_runs([baseline_run(tmp_path / "reference", data_dir, s, n) for s in seeds], data, cpu, progress=False)
    call_on_step(monkeypatch, 6, press_ctrl_c)
    with pytest.raises(TrainingInterrupted):
        train_runs([baseline_run(tmp_path / "run", data_dir, s, n) for s in seeds], data, cpu, progress=False)
    monkeypatch.undo()
    runs = [baseline_run(tmp_path / "run", data_dir, s, n) for s in seeds]
    for r in runs:
        r.config.resume = True
    train_runs(runs, data, cpu, progress=False)
    for seed in seeds:
        assert_same_weights(weights(tmp_path / "run" / f"seed{seed}"), weights(tmp_path / "reference" / f"seed{seed}"))


def test_stacked_students_stopped_mid_epoch_resume_in_other_groups(tmp_path, data_dir, monkeypatch):
    """Four students stacked, Ctrl-C mid-epoch 2, resumed as a pair and two singles (a sweep resumed with
    another --parallel, or on a CPU): each ends as it would have, its metrics its own."""
    data = load_cifar10(data_dir)
    seeds, n, cpu = (1, 2, 3, 4), len(data.train_labels), torch.device("cpu")
    train_runs([baseline_run(tmp_path / "reference", data_dir, s, n) for s in seeds], data, cpu, progress=False)
    call_on_step(monkeypatch, STEPS + 2, press_ctrl_c)
    with pytest.raises(TrainingInterrupted):
        train_runs([baseline_run(tmp_path / "run", data_dir, s, n) for s in seeds], data, cpu, progress=False)
    monkeypatch.undo()
    for group in ((1, 2), (3,), (4,)):
        runs = [baseline_run(tmp_path / "run", data_dir, s, n) for s in group]
        for r in runs:
            r.config.resume = True
        train_runs(runs, data, cpu, progress=False)
    for seed in seeds:
        run, reference = tmp_path / "run" / f"seed{seed}", tmp_path / "reference" / f"seed{seed}"
        assert_same_weights(weights(run), weights(reference), atol=1e-5)  # stacked or alone: float sums in another order
        for a, b in zip(metrics(run), metrics(reference), strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4) and a["train_accuracy"] == b["train_accuracy"], seed


def test_a_mid_epoch_checkpoint_of_the_older_format_resumes_in_a_group_of_its_size(tmp_path, data_dir, finished, monkeypatch):
    """Before per-run columns, a checkpoint held its whole group's [steps, S] table of sums."""
    interrupt(tmp_path, data_dir, monkeypatch)
    path = tmp_path / "run" / CHECKPOINT
    state = load_checkpoint(path)
    for key in ("losses", "correct"):
        state["partial"][key] = state["partial"][key][:, None]  # [steps] -> [steps, 1], as a group of one saved it
    torch.save(state, path)
    teach(config(tmp_path, "run", data_dir, resume=True))
    assert_same_weights(weights(tmp_path / "run"), weights(finished[0]))
    assert without_timing(metrics(tmp_path / "run")) == without_timing(metrics(finished[0]))

    interrupt(tmp_path / "again", data_dir, monkeypatch)
    path = tmp_path / "again" / "run" / CHECKPOINT
    state = load_checkpoint(path)
    for key in ("losses", "correct"):
        state["partial"][key] = state["partial"][key][:, None].expand(-1, 2).clone()  # a group of two
    torch.save(state, path)
    with pytest.raises(KdcliError, match="stopped mid-epoch by an older kdcli in a group of 2 runs: resume it with the same --parallel"):
        teach(config(tmp_path / "again", "run", data_dir, resume=True))


def test_a_checkpoint_from_before_val_size_resumes_only_without_it(tmp_path, data_dir, finished, monkeypatch):
    interrupt(tmp_path, data_dir, monkeypatch)
    path = tmp_path / "run" / CHECKPOINT
    state = load_checkpoint(path)
    del state["config"]["val_size"], state["val_accuracy"]  # as kdcli saved it before the option existed
    torch.save(state, path)
    with pytest.raises(KdcliError, match=r"--val-size 10 \(run has 0\)"):  # it trained on every image
        teach(config(tmp_path, "run", data_dir, resume=True, val_size=10))
    teach(config(tmp_path, "run", data_dir, resume=True))
    assert_same_weights(weights(tmp_path / "run"), weights(finished[0]))


def test_a_run_resumes_under_another_precision_and_old_runs_record_amp_as_a_flag(tmp_path, data_dir, finished, monkeypatch):
    """--amp is how a run computes, like --device: a run recorded with amp true (bf16, before --amp took a
    precision) resumes under this kdcli's default; and that old record reads as bf16."""
    interrupt(tmp_path, data_dir, monkeypatch)
    path = tmp_path / "run" / CHECKPOINT
    state = load_checkpoint(path)
    state["config"]["amp"] = True
    del state["loss_scale"]  # as kdcli saved it before fp16
    torch.save(state, path)
    teach(config(tmp_path, "run", data_dir, resume=True))  # TeacherConfig's default: fp16
    assert_same_weights(weights(tmp_path / "run"), weights(finished[0]))  # on a CPU autocast is off either way
    assert [as_recorded_now({"amp": amp})["amp"] for amp in (True, False, "fp16")] == ["bf16", "off", "fp16"]


def test_a_run_started_on_another_machine_resumes_and_reports_with_runs_that_record_no_machine(tmp_path, data_dir, monkeypatch):
    """What computed a run is recorded, never compared: a run begun on a GPU, under another torch, resumes here (and is
    kept by --resume once its checkpoint is deleted), and shares a report row with a run of a kdcli that recorded none."""
    from kdcli.report import report

    interrupt(tmp_path, data_dir, monkeypatch)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    del recorded["torch_threads"]  # recorded on a CPU only
    recorded.update(resolved_device="cuda: NVIDIA H100 80GB HBM3", torch_version="2.6.0", precision="bfloat16")
    (tmp_path / "run" / "config.json").write_text(json.dumps(recorded))
    summary = teach(config(tmp_path, "run", data_dir, resume=True))
    assert (summary["resolved_device"], summary["torch_version"]) == ("cpu", torch.__version__)  # what finished it
    (tmp_path / "run" / CHECKPOINT).unlink()  # to save space: --resume then compares its config.json
    assert teach(config(tmp_path, "run", data_dir, resume=True))["kept"]

    teach(config(tmp_path, "old", data_dir, seed=1))
    for name in ("config.json", "summary.json"):  # as kdcli wrote them before it recorded the machine
        old = json.loads((tmp_path / "old" / name).read_text())
        (tmp_path / "old" / name).write_text(json.dumps({k: v for k, v in old.items() if k not in ("resolved_device", "torch_version", "torch_threads", "precision")}))
    assert "| lenet5 | baseline | 0 | 2 |" in report([tmp_path / "run", tmp_path / "old"], tmp_path / "report")


def test_a_checkpoint_from_another_device_resumes_with_this_devices_optimizer(tmp_path, data_dir, monkeypatch):
    """A GPU checkpoint records fused SGD: loaded on a CPU (or a CPU one on a GPU), the optimizer keeps the
    kernel choice and the lr made for this device, not the saving device's."""
    interrupt(tmp_path, data_dir, monkeypatch)
    state = load_checkpoint(tmp_path / "run")
    state["optimizer"]["param_groups"][0].update(fused=True, foreach=None)  # as torch.optim.SGD(fused=True) saves it on CUDA
    state["optimizer"]["param_groups"][0]["lr"] = 0.05  # not this run's lr: else only float32 rounding tells the two apart
    data = load_cifar10(data_dir)
    run = Run(config(tmp_path, "run", data_dir, resume=True), DrawnAugmentation(777, len(data.train_labels)))
    group = group_module.Group([run], data, torch.device("cpu"))
    made_here = dict(group.optimizer.param_groups[0])
    group.load([state])
    loaded = group.optimizer.param_groups[0]
    assert (loaded["fused"], loaded["foreach"], loaded["lr"]) == (made_here["fused"], made_here["foreach"], made_here["lr"])


def test_optimizer_state_takes_the_layout_of_this_devices_weights(tmp_path, data_dir, monkeypatch):
    """A CUDA run alone keeps its weights channels_last; a checkpoint saved elsewhere holds contiguous momentum,
    which the fused SGD kernel refuses next to channels_last weights. Loading gives each buffer its weight's layout."""
    interrupt(tmp_path, data_dir, monkeypatch)
    data = load_cifar10(data_dir)
    run = Run(config(tmp_path, "run", data_dir, resume=True), DrawnAugmentation(777, len(data.train_labels)))
    group = group_module.Group([run], data, torch.device("cpu"))
    group.stack.to(memory_format=torch.channels_last)  # as Group does on CUDA
    group.load([load_checkpoint(tmp_path / "run")])
    for p, state in group.optimizer.state.items():
        assert state["momentum_buffer"].stride() == p.stride()
    conv = group.stack.single.conv1.weight
    assert not conv.is_contiguous() and conv.is_contiguous(memory_format=torch.channels_last)


def test_a_compiled_run_compiles_once_also_across_a_resume(tmp_path, data_dir, monkeypatch):
    """--compile on CUDA: every full batch of every epoch, resumed or not, meets the guards the first one set, so a run
    compiles once. Checked on the CPU with dynamo's "eager" backend, which traces and guards as on CUDA but makes no kernels."""
    from torch._dynamo.utils import counters

    init = group_module.Group.__init__

    def compiled(self, *args, **kwargs):  # as Group compiles a run on CUDA
        init(self, *args, **kwargs)
        self.forward = torch.compile(self.stack, backend="eager")

    monkeypatch.setattr(group_module.Group, "__init__", compiled)
    torch._dynamo.reset()
    counters.clear()
    call_on_step(monkeypatch, STEPS + 2, press_ctrl_c)  # epoch 2, step 2
    with pytest.raises(TrainingInterrupted):
        teach(config(tmp_path, "run", data_dir, model="resnet8", epochs=2))
    teach(config(tmp_path, "run", data_dir, model="resnet8", epochs=2, resume=True))
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


def test_model_stack_forward_and_member_state():
    torch.manual_seed(0)
    models = [create_model("lenet5") for _ in range(3)]
    stack = ModelStack(models)
    x = torch.randn(3, 5, 3, 32, 32)
    out = stack(x)
    assert out.shape == (3, 5, 10)
    for s, model in enumerate(models):
        torch.testing.assert_close(out[s], model(x[s]))
        assert_same_weights(stack.member_state(s), model.state_dict())
    stack.load_member_state(1, models[0].state_dict())
    torch.testing.assert_close(stack(x)[1], models[0](x[1]))


def test_a_stacked_students_share_of_adam_steps_it_as_its_own_optimizer_would():
    """A stacked student's checkpoint holds its own rows of the optimizer state and Adam's step count (a 0-dim
    tensor, every member's): loaded alone, it takes the step it would have taken in the stack, and the shares
    stacked again are the stack's state."""
    torch.manual_seed(0)
    stack = ModelStack([create_model("lenet5") for _ in range(3)])
    optimizer = torch.optim.Adam(stack.parameters(), lr=0.01)
    x = torch.randn(3, 4, 3, 32, 32)
    for _ in range(2):
        optimizer.zero_grad()
        stack(x).square().sum().backward()
        optimizer.step()
    state = optimizer.state_dict()
    shares = [split_optimizer_state(state, 3, s) for s in range(3)]
    for i, per_param in stack_optimizer_states(shares)["state"].items():
        for k, v in per_param.items():
            assert torch.equal(v, state["state"][i][k]), (i, k)
    alone = create_model("lenet5")
    alone.load_state_dict(stack.member_state(1))
    alone_optimizer = torch.optim.Adam(alone.parameters(), lr=0.01)
    alone_optimizer.load_state_dict(copy.deepcopy(shares[1]))  # as its checkpoint holds it: Adam's step tensor is the stack's own
    optimizer.zero_grad()
    stack(x).square().sum().backward()
    optimizer.step()
    alone(x[1]).square().sum().backward()
    alone_optimizer.step()
    assert_same_weights(alone.state_dict(), stack.member_state(1), atol=1e-5)  # stacked or alone: float sums in another order


def test_models_with_batch_norm_cannot_be_stacked():
    with pytest.raises(KdcliError, match="batch norm"):
        ModelStack([create_model("resnet18"), create_model("resnet18")])


def test_students_with_dropout_are_trained_one_at_a_time(monkeypatch):
    """vmap refuses random ops: a registered student with dropout (no buffers) must not be stacked."""
    from kdcli import models, sweep

    dropout_net = lambda num_classes: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(3072, num_classes))  # noqa: E731
    monkeypatch.setitem(models.MODELS, "dropout_net", dropout_net)
    with pytest.raises(KdcliError, match="dropout"):
        ModelStack([dropout_net(10), dropout_net(10)])
    config = sweep.SweepConfig(model="dropout_net", parallel=4)
    assert sweep.students_at_once(config, torch.device("cuda")) == 1
    assert sweep.students_at_once(sweep.SweepConfig(parallel=4), torch.device("cuda")) == 4  # lenet5 stacks


# ---------------------------------------------------------------- evaluation


def test_evaluate(finished, data_dir):
    run_dir, summary = finished
    result = evaluate(run_dir, data_dir, device="cpu", download=False)
    assert result["model"] == "lenet5" and result["epoch"] == 3
    assert result["test_accuracy"] == summary["test_accuracy"]  # the same number as the training loop's
    data = load_cifar10(data_dir)
    model, _ = load_model(run_dir, torch.device("cpu"))
    pred = predict(model, data.test_images).argmax(1)
    assert len(result["per_class"]) == 10
    for c, accuracy in enumerate(result["per_class"]):
        mine = data.test_labels == c
        assert accuracy == pytest.approx(100 * (pred[mine] == c).float().mean().item(), abs=0.01)
    assert result["test_accuracy"] == pytest.approx(100 * (pred == data.test_labels).float().mean().item(), abs=1e-4)


def test_evaluate_refuses_a_missing_checkpoint(tmp_path, data_dir):
    with pytest.raises(KdcliError, match="no checkpoint"):
        evaluate(tmp_path / "nothing", data_dir, device="cpu", download=False)


def test_evaluate_refuses_an_unknown_device_in_one_line(finished, data_dir):
    with pytest.raises(KdcliError, match="^--device gpu: must be one of auto, cuda, mps, cpu$"):
        evaluate(finished[0], data_dir, device="gpu", download=False)


def test_evaluate_leaves_the_callers_random_numbers_alone(finished, data_dir):
    """The model it loads weights into is initialised first: a script seeding torch must draw what it would without it."""
    torch.manual_seed(0)
    evaluate(finished[0], data_dir, device="cpu", download=False)
    drawn = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(drawn, torch.rand(3))


# ---------------------------------------------------------------- a loss that is not finite


def test_diverging_run_stops_with_its_epoch_and_step(tmp_path, data_dir):
    with pytest.raises(KdcliError, match=r"not finite at epoch 1, step \d+.*--lr.*; no checkpoint was written before it$"):
        teach(config(tmp_path, "run", data_dir, epochs=1, lr=1e30))
    assert not (tmp_path / "run" / "summary.json").exists()


def blow_up_on_step(monkeypatch, step, member=None):
    """After global training step `step` (1-based), set a weight of the stack (of its member `member`) to inf."""
    train_step, calls = group_module.Group.train_step, [0]

    def train_step_then_blow_up(self, *args):
        result = train_step(self, *args)
        calls[0] += 1
        if calls[0] == step:
            with torch.no_grad():
                weight = next(self.stack.parameters())
                (weight if member is None else weight[member]).fill_(float("inf"))
        return result

    monkeypatch.setattr(group_module.Group, "train_step", train_step_then_blow_up)


def test_weights_blown_up_by_the_last_step_are_refused_not_saved(tmp_path, data_dir, monkeypatch):
    """A step's loss comes before its update: an lr that blows up the weights in the very last step leaves every
    loss finite, and would end with rc 0, a summary and a checkpoint of inf weights."""
    blow_up_on_step(monkeypatch, STEPS)
    with pytest.raises(KdcliError, match=rf"^weights are not finite after epoch 1 \({re.escape(str(tmp_path / 'run'))}\): lower --lr .*no checkpoint was written before it$"):
        teach(config(tmp_path, "run", data_dir, epochs=1))
    assert not (tmp_path / "run" / "summary.json").exists() and not (tmp_path / "run" / CHECKPOINT).exists()


def test_a_stacked_run_whose_weights_blow_up_is_named_alone_and_the_last_good_checkpoint_kept(tmp_path, data_dir, monkeypatch):
    data, cpu = load_cifar10(data_dir), torch.device("cpu")
    blow_up_on_step(monkeypatch, 2 * STEPS, member=1)  # the second epoch's last step
    with pytest.raises(KdcliError, match=rf"weights are not finite after epoch 2 \({re.escape(str(tmp_path / 'seed2'))}\).*the last good checkpoint is kept$"):
        train_runs([baseline_run(tmp_path, data_dir, s, len(data.train_labels)) for s in (1, 2)], data, cpu, progress=False)
    for seed in (1, 2):
        state = load_checkpoint(tmp_path / f"seed{seed}")
        assert state["epoch"] == 1 and all(torch.isfinite(w).all() for w in state["model"].values())
    record = json.loads((tmp_path / "seed2" / "diverged.json").read_text())
    assert (record["epoch"], record["step"]) == (2, STEPS) and not (tmp_path / "seed1" / "diverged.json").exists()  # the step that blew them up


@pytest.mark.parametrize("save_every", [1, 3], ids=["saved", "not-saved"])
def test_an_epoch_whose_weights_blew_up_is_not_logged(tmp_path, data_dir, monkeypatch, save_every):
    """Its line would hold the accuracy of inf weights, a guess, as an epoch trained: like one whose loss was not
    finite, it is left out, and diverged.json says where the run stopped. Also an epoch not saved: found only by
    the next epoch's loss, its line would stay, and the divergence be put an epoch late."""
    blow_up_on_step(monkeypatch, 2 * STEPS)  # epoch 2's last step
    with pytest.raises(KdcliError, match=r"^weights are not finite after epoch 2 "):
        teach(config(tmp_path, "run", data_dir, save_every=save_every))
    logged = [json.loads(line)["epoch"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    record = json.loads((tmp_path / "run" / "diverged.json").read_text())
    assert logged == [1] and (record["epoch"], record["step"]) == (2, STEPS)


def test_weights_blown_up_just_before_a_ctrl_c_are_refused_at_the_step_not_saved(tmp_path, data_dir, monkeypatch):
    """Ctrl-C saves mid-epoch: weights the step before it blew up would replace epoch 1's good checkpoint, and resume into inf."""
    blow_up_on_step(monkeypatch, STEPS + 2)
    call_on_step(monkeypatch, STEPS + 2, press_ctrl_c)
    with pytest.raises(KdcliError, match=r"^weights are not finite after epoch 2, step 2 .*the last good checkpoint is kept$"):
        teach(config(tmp_path, "run", data_dir))
    record = json.loads((tmp_path / "run" / "diverged.json").read_text())
    assert (record["epoch"], record["step"]) == (2, 2) and load_checkpoint(tmp_path / "run")["epoch"] == 1


def test_a_run_resumed_from_its_last_good_checkpoint_no_longer_records_that_it_diverged(tmp_path, data_dir, monkeypatch):
    """--resume trains it again (a GPU's transient, say): it ends finished, which the report must not call diverged."""
    with monkeypatch.context() as patch:
        blow_up_on_step(patch, 2 * STEPS)  # epoch 2's last step: epoch 1's checkpoint is kept
        with pytest.raises(KdcliError, match="weights are not finite after epoch 2"):
            teach(config(tmp_path, "run", data_dir))
    assert (tmp_path / "run" / "diverged.json").exists()
    teach(config(tmp_path, "run", data_dir, resume=True))
    assert not (tmp_path / "run" / "diverged.json").exists() and (tmp_path / "run" / "summary.json").exists()


def test_ctrl_c_after_a_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    """Ctrl-C one step after the loss went nan: saving then would replace the last good weights with nan ones."""
    call_on_step(monkeypatch, STEPS + 2, lambda value: value * float("nan"), STEPS + 3, press_ctrl_c)
    with pytest.raises(KdcliError, match="epoch 2, step 2"):
        teach(config(tmp_path, "run", data_dir))
    state = load_checkpoint(tmp_path / "run")
    assert (state["epoch"], state["step"]) == (1, 0) and all(torch.isfinite(w).all() for w in state["model"].values())


def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path, data_dir, finished, monkeypatch):
    call_on_step(monkeypatch, STEPS + 2, lambda value: value * float("nan"))
    with pytest.raises(KdcliError, match="epoch 2, step 2.*; the last good checkpoint is kept$") as error:
        teach(config(tmp_path, "run", data_dir))
    assert "\n" not in str(error.value)
    state = load_checkpoint(tmp_path / "run")
    assert state["epoch"] == 1 and all(torch.isfinite(w).all() for w in state["model"].values())
    assert [r["epoch"] for r in metrics(tmp_path / "run")] == [1]
    monkeypatch.undo()  # the checkpoint is good: resuming from it ends where a run never broken ends
    teach(config(tmp_path, "run", data_dir, resume=True))
    assert_same_weights(weights(tmp_path / "run"), weights(finished[0]))


def test_a_finished_run_is_refused_as_finished_even_without_its_checkpoint(tmp_path, data_dir, finished):
    """summary.json alone marks a run finished (its checkpoint deleted to save space): it is not trained over."""
    run_dir, _ = finished
    shutil.copytree(run_dir, tmp_path / "run")
    (tmp_path / "run" / CHECKPOINT).unlink()
    before = (tmp_path / "run" / "summary.json").read_bytes()
    with pytest.raises(KdcliError, match="holds a finished run: pass --force"):
        teach(config(tmp_path, "run", data_dir))
    assert (tmp_path / "run" / "summary.json").read_bytes() == before


def test_every_epoch_draws_a_new_batch_order(tmp_path, data_dir, monkeypatch):
    """SGD must not see the same batches every epoch (a fixed order would be deterministic, so resume tests pass it)."""
    labels = []

    def loss(s, y, *args, **kwargs):
        labels.append(y.flatten().tolist())
        return distillation_loss(s, y, *args, **kwargs)

    monkeypatch.setattr(group_module, "distillation_loss", loss)
    teach(config(tmp_path, "run", data_dir, epochs=2))
    steps = len(labels) // 2
    first, second = sum(labels[:steps], []), sum(labels[steps:], [])
    assert sorted(first) == sorted(second) and first != second  # every image once per epoch, in another order


def test_evaluating_a_batch_norm_model_changes_nothing_in_it(tmp_path, data_dir):
    """An evaluation between epochs neither uses batch statistics nor updates batch norm's running ones: the
    weights cannot depend on --eval-every."""
    teach(config(tmp_path, "every", data_dir, model="resnet8", epochs=2, eval_every=1))
    teach(config(tmp_path, "last", data_dir, model="resnet8", epochs=2, eval_every=2))
    assert_same_weights(weights(tmp_path / "every"), weights(tmp_path / "last"))


def test_the_summary_is_the_last_epochs(tmp_path, data_dir):
    summary = teach(config(tmp_path, "run", data_dir, epochs=3, lr=0.05))
    rows = metrics(tmp_path / "run")
    assert rows[0]["train_accuracy"] != rows[-1]["train_accuracy"]  # else this test could not tell
    assert (summary["train_accuracy"], summary["test_accuracy"]) == (rows[-1]["train_accuracy"], rows[-1]["test_accuracy"])


# ---------------------------------------------------------------- found by mutation testing (2026-11-27)


# G07 G08 G19 G20 G23: a stacked group keeps each run's own accuracies
def test_stacked_runs_log_save_and_resume_their_own_accuracies(tmp_path, data_dir):
    data, cpu = load_cifar10(data_dir, val_size=50), torch.device("cpu")
    seeds = (1, 5)  # of other test and other validation accuracies on the tiny data

    def runs():
        made = [baseline_run(tmp_path, data_dir, s, len(data.train_labels)) for s in seeds]
        for r in made:
            r.config.val_size, r.config.resume = 50, True
        return made

    first = train_runs(runs(), data, cpu, progress=False)
    assert len({s["test_accuracy"] for s in first}) == len({s["val_accuracy"] for s in first}) == 2  # else this test could not tell
    for seed, summary in zip(seeds, first):
        row, state = metrics(tmp_path / f"seed{seed}")[-1], load_checkpoint(tmp_path / f"seed{seed}")
        assert row["test_accuracy"] == state["test_accuracy"] == summary["test_accuracy"]
        assert row["val_accuracy"] == state["val_accuracy"] == summary["val_accuracy"]
        (tmp_path / f"seed{seed}" / "summary.json").unlink()  # killed after the last checkpoint, before its summary
    again = train_runs(runs(), data, cpu, progress=False)
    assert [(s["test_accuracy"], s["val_accuracy"]) for s in again] == [(s["test_accuracy"], s["val_accuracy"]) for s in first]


def test_ctrl_c_in_the_step_whose_loss_is_not_finite_keeps_the_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    call_on_step(monkeypatch, STEPS + 2, lambda value: press_ctrl_c(value * float("nan")))
    # The loss, the first thing that went wrong: the stop checks that of the step it came in too, not only the weights it saves.
    with pytest.raises(KdcliError, match="^loss is not finite at epoch 2, step 2 "):
        teach(config(tmp_path, "run", data_dir))
    state = load_checkpoint(tmp_path / "run")
    assert (state["epoch"], state["step"]) == (1, 0) and all(torch.isfinite(w).all() for w in state["model"].values())


def test_an_epoch_stopped_twice_counts_all_its_seconds(tmp_path, data_dir, monkeypatch):
    """A fake clock: 10 s a step, nothing else takes time. Epoch 2 is stopped at its steps 1 and 3."""
    clock = [0.0]
    monkeypatch.setattr(group_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    step = group_module.Group.train_step

    def tick(*args, **kwargs):
        clock[0] += 10.0
        return step(*args, **kwargs)

    monkeypatch.setattr(group_module.Group, "train_step", tick)
    for stop_at in (STEPS + 1, 2):  # global step 5 (epoch 2, step 1); then the 2nd step after resuming (epoch 2, step 3)
        with monkeypatch.context() as patch:
            call_on_step(patch, stop_at, press_ctrl_c)
            with pytest.raises(TrainingInterrupted):
                teach(config(tmp_path, "run", data_dir, resume=True))
    summary = teach(config(tmp_path, "run", data_dir, resume=True))
    assert [r["seconds"] for r in metrics(tmp_path / "run")] == [10.0 * STEPS] * 3
    assert summary["train_seconds"] == 30.0 * STEPS


def test_the_logged_lr_is_the_last_steps_under_a_continuous_schedule(tmp_path, data_dir):
    cfg = config(tmp_path, "run", data_dir, epochs=2, scheduler="cosine")
    teach(cfg)
    assert [r["lr"] for r in metrics(tmp_path / "run")] == pytest.approx([learning_rate(cfg, e + 1 - 1 / STEPS) for e in range(2)])


def test_a_run_crashed_before_its_first_checkpoint_resumes_with_one_line_per_epoch(tmp_path, data_dir, monkeypatch):
    def crash(value):
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        call_on_step(patch, STEPS + 1, crash)  # epoch 1 logged, its checkpoint due at epoch 2 only
        with pytest.raises(RuntimeError):
            teach(config(tmp_path, "run", data_dir, save_every=2))
    assert not (tmp_path / "run" / CHECKPOINT).exists() and len(metrics(tmp_path / "run")) == 1
    teach(config(tmp_path, "run", data_dir, save_every=2, resume=True))
    assert [r["epoch"] for r in metrics(tmp_path / "run")] == [1, 2, 3]


def test_a_teachers_views_are_drawn_from_its_own_seed(tmp_path, data_dir, monkeypatch):
    drawn, inputs = [], group_module.Group.epoch_inputs

    def recorded(self):
        aug, soft, order = inputs(self)
        drawn.append(aug[0].clone())
        return aug, soft, order

    monkeypatch.setattr(group_module.Group, "epoch_inputs", recorded)
    teach(config(tmp_path, "run", data_dir, epochs=1, seed=1))
    assert torch.equal(drawn[0], augment.params(1, 0, 200))


def test_quiet_prints_the_last_epoch_even_off_the_eval_every_grid(tmp_path, data_dir, capsys):
    train_teacher(config(tmp_path, "run", data_dir, epochs=3, eval_every=2, quiet=True), progress=True)
    assert [line.split()[1] for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")] == ["2/3", "3/3"]


def test_negative_momentum_is_refused_and_the_largest_temperature_accepted(tmp_path, data_dir):
    with pytest.raises(ConfigError) as error:
        config(tmp_path, "run", data_dir, momentum=-0.5)
    assert error.value.option == "--momentum"
    assert config(tmp_path, "run", data_dir, cls=StudentConfig, temperature=10_000.0).temperature == 10_000.0


def test_evaluate_checks_the_images_of_an_old_checkpoint_by_its_config_json(tmp_path, data_dir):
    teach(config(tmp_path, "run", data_dir, epochs=1, val_size=20))
    state = load_checkpoint(tmp_path / "run")
    del state["train_fingerprint"]  # as kdcli saved it before 2026-11-27: config.json beside it records them
    torch.save(state, tmp_path / "run" / CHECKPOINT)
    other = write_cifar_folder(tmp_path / "other", seed=1)
    with pytest.warns(UserWarning, match="was trained on other images than those now in"):
        assert "val_accuracy" not in evaluate(tmp_path / "run", other, device="cpu", download=False)


def test_only_a_stage_that_recorded_no_data_dir_gets_the_default_to_download_into(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/ here
    assert recorded_data_dir({}, "the run x") == DATA_DIR
    with pytest.raises(KdcliError, match="--data-dir data, as the run x recorded, is not a folder here"):
        recorded_data_dir({"data_dir": DATA_DIR}, "the run x")  # its `data` was another folder: the one it ran in
    (tmp_path / DATA_DIR).mkdir()
    assert recorded_data_dir({"data_dir": DATA_DIR}, "the run x") == DATA_DIR


@pytest.mark.parametrize(
    "stops",
    [((1, STEPS + 1), (2, STEPS + 3)), ((1, 1), (2, STEPS + 1)), ((1, 1),)],  # global steps: epoch 2's steps 1 and 3; step 1 of epochs 1 and 2
    ids=["other-steps", "other-epochs", "one-not-started"],  # the last: seed 2 never trained
)
def test_runs_at_other_resume_points_are_not_trained_together(tmp_path, data_dir, monkeypatch, stops):
    data, cpu = load_cifar10(data_dir), torch.device("cpu")
    for seed, step in stops:
        with monkeypatch.context() as patch:
            call_on_step(patch, step, press_ctrl_c)
            with pytest.raises(TrainingInterrupted):
                train_runs([baseline_run(tmp_path, data_dir, seed, len(data.train_labels))], data, cpu, progress=False)
    runs = [baseline_run(tmp_path, data_dir, s, len(data.train_labels)) for s in (1, 2)]
    for r in runs:
        r.config.resume = True
    with pytest.raises(KdcliError, match="must all be at the same epoch and step"):
        train_runs(runs, data, cpu, progress=False)


def test_resume_with_another_seed_is_refused(tmp_path, data_dir, finished, monkeypatch):
    """--seed draws a run's initial weights, batch order and views: a run resumed under another seed would be half
    one run and half another, and match neither a run of this seed nor of its own; refused like --lr."""
    interrupt(tmp_path, data_dir, monkeypatch)
    with pytest.raises(KdcliError, match=r"was trained with other options: --seed 1 \(run has 777\)"):
        teach(config(tmp_path, "run", data_dir, resume=True, seed=1))


# Another value of each option that changes what a teacher's run computes (the run's: model lenet5, epochs 3, ...).
OTHER_RECIPE = {"model": "resnet8", "epochs": 4, "batch_size": 32, "lr": 0.05, "optimizer": "adam", "momentum": 0.8, "nesterov": True,
                "weight_decay": 1e-3, "scheduler": "cosine", "lr_milestones": (2,), "lr_gamma": 0.5, "subset": 100, "val_size": 10, "seed": 1}  # fmt: skip


def test_resume_refuses_another_value_of_every_option_that_changes_the_run(tmp_path, data_dir, monkeypatch):
    """Each option outside MAY_DIFFER is the run's own: resumed with another value, the run would be half one recipe and
    half another. Every such option of TeacherConfig is tried here, so that a new one must be classed."""
    assert set(OTHER_RECIPE) | MAY_DIFFER >= {f.name for f in fields(TeacherConfig)}
    interrupt(tmp_path, data_dir, monkeypatch)
    before = {f.name: f.read_bytes() for f in (tmp_path / "run").iterdir() if f.is_file()}
    for option, value in OTHER_RECIPE.items():
        said = "holds a lenet5, not a resnet8" if option == "model" else f"other options: --{option.replace('_', '-')} "
        with pytest.raises(KdcliError, match=said):
            teach(config(tmp_path, "run", data_dir, resume=True, **{option: value}))
    assert {f.name: f.read_bytes() for f in (tmp_path / "run").iterdir() if f.is_file()} == before


def test_a_finished_run_without_its_checkpoint_is_kept_on_resume(tmp_path, data_dir, finished):
    """A finished run whose checkpoint.pt was deleted (to save space: summary.json holds its results) is done:
    --resume, which make always passes, must keep it, not train it again from scratch over its summary."""
    shutil.copytree(finished[0], tmp_path / "run")
    (tmp_path / "run" / "checkpoint.pt").unlink()
    assert teach(config(tmp_path, "run", data_dir, resume=True)) == {**finished[1], "kept": True}
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # nothing was trained


def test_a_finished_run_without_its_checkpoint_is_kept_only_for_its_own_options(tmp_path, data_dir, finished):
    """Its config.json still says how it was trained: --resume with other options must not pass its old results
    off as theirs (a sweep checks its students so too)."""
    shutil.copytree(finished[0], tmp_path / "run")
    (tmp_path / "run" / "checkpoint.pt").unlink()
    with pytest.raises(KdcliError, match=r"was trained with other options: --lr 0.05 \(run has 0.1\)"):
        teach(config(tmp_path, "run", data_dir, resume=True, lr=0.05))


def test_a_finished_run_of_an_older_kdcli_is_kept_on_resume(tmp_path, data_dir, finished):
    """A finished run whose checkpoint predates the keys a resume needs (kdcli before Ctrl-C mid-epoch recorded
    no step, no partial epoch) has nothing left to resume: --resume (make passes it always) must keep it, not
    refuse it as 'not a checkpoint of a run to resume'."""
    shutil.copytree(finished[0], tmp_path / "run")
    state = load_checkpoint(tmp_path / "run")
    torch.save({k: v for k, v in state.items() if k not in ("step", "partial")}, tmp_path / "run" / "checkpoint.pt")
    assert teach(config(tmp_path, "run", data_dir, resume=True)) == {**finished[1], "kept": True}


def test_a_run_is_not_started_inside_a_finished_run_that_kept_only_its_summary(tmp_path, data_dir, finished):
    """A finished run is its summary.json as much as its checkpoint (deleted to save space, the run is still there):
    a run started inside its folder would mix its files into that run's, and the report would pool them."""
    shutil.copytree(finished[0], tmp_path / "run")
    (tmp_path / "run" / "checkpoint.pt").unlink()
    with pytest.raises(KdcliError, match=r"inner is inside the folder of another run( or sweep)? \(.*run\)"):
        teach(config(tmp_path / "run", "inner", data_dir))


# ---------------------------------------------------------------- found by mutation testing of train, group and checkpoint (2026-11-27, second round)


def test_a_finished_run_and_an_unfinished_one_are_not_trained_together(tmp_path, data_dir):
    """One run of the group finished (--resume keeps it), the other not started: one clear refusal, not a crash."""
    data, cpu = load_cifar10(data_dir), torch.device("cpu")
    train_runs([baseline_run(tmp_path, data_dir, 1, len(data.train_labels))], data, cpu, progress=False)
    runs = [baseline_run(tmp_path, data_dir, s, len(data.train_labels)) for s in (1, 2)]
    for r in runs:
        r.config.resume = True
    with pytest.raises(KdcliError, match="must all be at the same epoch and step"):
        train_runs(runs, data, cpu, progress=False)
    assert not (tmp_path / "seed2" / CHECKPOINT).exists()


def test_training_leaves_the_global_rng_as_it_was(tmp_path, data_dir):
    """Each model is initialised from its run's seed inside a forked RNG: a caller's own draws do not depend on training."""
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    teach(config(tmp_path, "run", data_dir, epochs=1, seed=5))
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("bad", [1, 0], ids=["second", "first"])
def test_a_diverging_run_of_a_group_is_named_alone(tmp_path, data_dir, monkeypatch, bad):
    """Whichever run of the group it is: the runs are told apart by their columns of the losses, not by the steps."""
    data, cpu = load_cifar10(data_dir), torch.device("cpu")
    seeds = (1, 2)

    def one_run_diverges(loss):  # loss [S]: run `bad`'s turns nan at step 2
        return loss * torch.tensor([float("nan") if s == bad else 1.0 for s in range(len(seeds))])

    call_on_step(monkeypatch, 2, one_run_diverges)
    with pytest.raises(KdcliError, match=rf"not finite at epoch 1, step 2 \({re.escape(str(tmp_path / f'seed{seeds[bad]}'))}\)") as error:
        train_runs([baseline_run(tmp_path, data_dir, s, len(data.train_labels)) for s in seeds], data, cpu, progress=False)
    # Its folder alone records it: the other run stopped with it, unfinished, and resumes as such.
    assert json.loads((tmp_path / f"seed{seeds[bad]}" / "diverged.json").read_text()) == {"error": str(error.value), "epoch": 1, "step": 2}
    good = seeds[1 - bad]
    assert not (tmp_path / f"seed{good}" / "diverged.json").exists() and (tmp_path / f"seed{good}" / "config.json").exists()


def test_every_diverging_run_of_a_group_records_it(tmp_path, data_dir, monkeypatch):
    """Not only the first: one left unrecorded would be trained again, by a sweep, into the same divergence."""
    data, cpu = load_cifar10(data_dir), torch.device("cpu")
    call_on_step(monkeypatch, 2, lambda loss: loss * torch.tensor([float("nan"), 1.0, float("nan")]))
    with pytest.raises(KdcliError, match=rf"not finite at epoch 1, step 2 \({re.escape(str(tmp_path / 'seed1'))}, {re.escape(str(tmp_path / 'seed3'))}\)"):
        train_runs([baseline_run(tmp_path, data_dir, s, len(data.train_labels)) for s in (1, 2, 3)], data, cpu, progress=False)
    assert [(tmp_path / f"seed{s}" / "diverged.json").exists() for s in (1, 2, 3)] == [True, False, True]


def test_stacked_runs_log_each_runs_own_images_per_second(tmp_path, data_dir):
    """images_per_s is one run's throughput (its 200 images in its epoch's seconds), whatever the group's size."""
    data, cpu = load_cifar10(data_dir), torch.device("cpu")
    train_runs([baseline_run(tmp_path, data_dir, s, len(data.train_labels)) for s in (1, 2)], data, cpu, progress=False)
    for row in metrics(tmp_path / "seed1") + metrics(tmp_path / "seed2"):
        assert row["images_per_s"] == pytest.approx(200 / row["seconds"], rel=0.01)


def test_a_stopped_epochs_checkpoint_holds_its_own_runs_sums_alone(tmp_path, data_dir, monkeypatch):
    """A column of the group's [steps, S] table is saved as its own tensor, not as a view of the whole table."""
    data, cpu = load_cifar10(data_dir), torch.device("cpu")
    call_on_step(monkeypatch, 2, press_ctrl_c)
    with pytest.raises(TrainingInterrupted):
        train_runs([baseline_run(tmp_path, data_dir, s, len(data.train_labels)) for s in (1, 2, 3)], data, cpu, progress=False)
    for seed in (1, 2, 3):
        partial = load_checkpoint(tmp_path / f"seed{seed}")["partial"]
        for key in ("losses", "correct"):
            assert partial[key].shape == (STEPS,) and partial[key].untyped_storage().nbytes() == STEPS * partial[key].element_size()


def test_a_sweep_speaks_for_its_students(tmp_path, data_dir, monkeypatch, capsys):
    """in_sweep: the sweep warns about the options once (not once per group) and says itself how a Ctrl-C during
    a group's last evaluation ends (it stops between groups: "nothing to resume" would be wrong for the sweep)."""
    data = load_cifar10(data_dir)
    press_ctrl_c_while_evaluating(monkeypatch)
    run = baseline_run(tmp_path, data_dir, 1, len(data.train_labels))
    run.config.epochs, run.config.scheduler, run.config.lr_milestones = 1, "multistep", (5,)  # a milestone that never applies
    stop = StopOnSignal()
    try:
        with claim_folder(run.dir), warnings.catch_warnings():  # a sweep holds its students' folders
            warnings.simplefilter("error")
            train_runs([run], data, torch.device("cpu"), progress=True, in_sweep=True, stop=stop)
    finally:
        stop.restore()
    assert stop.requested and "nothing to resume" not in capsys.readouterr().err


def test_ctrl_c_while_a_run_stopped_mid_epoch_resumes_stops_it_again_mid_epoch(tmp_path, data_dir, monkeypatch):
    """A run stopped at epoch 1, step 2 has trained: a Ctrl-C while its resume sets up is not "before the first
    step"; it stops at the next step boundary, saved as such."""
    interrupt(tmp_path, data_dir, monkeypatch, step=2)
    create = group_module.create_model

    def create_and_press_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return create(*args, **kwargs)

    monkeypatch.setattr(group_module, "create_model", create_and_press_ctrl_c)
    with pytest.raises(TrainingInterrupted, match=f"interrupted at epoch 1, step 3 of {STEPS}"):
        teach(config(tmp_path, "run", data_dir, resume=True))
    state = load_checkpoint(tmp_path / "run")
    assert (state["epoch"], state["step"]) == (0, 3)


def test_the_quiet_log_line_of_a_group_counts_the_images_of_all_its_runs(tmp_path, data_dir, monkeypatch, capsys):
    """A fake clock: 10 s a step. Two runs stacked train 2 x 200 images in an epoch of 40 s: 10 img/s."""
    clock, step = [0.0], group_module.Group.train_step
    monkeypatch.setattr(group_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(group_module.Group, "train_step", lambda *a, **kw: clock.__setitem__(0, clock[0] + 10.0) or step(*a, **kw))
    data = load_cifar10(data_dir)
    train_runs([baseline_run(tmp_path, data_dir, s, len(data.train_labels)) for s in (1, 2)], data, torch.device("cpu"), progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and all(line.endswith(f"{10.0 * STEPS:.2f}s  10 img/s") for line in lines), lines


def test_an_epoch_off_the_eval_every_grid_logs_no_accuracy_not_the_last_evaluations(tmp_path, data_dir):
    teach(config(tmp_path, "run", data_dir, epochs=4, eval_every=2, val_size=50))
    rows = metrics(tmp_path / "run")
    assert [(r["test_accuracy"] is None, r["val_accuracy"] is None) for r in rows] == [(True, True), (False, False), (True, True), (False, False)]


# ---------------------------------------------------------------- found by mutation testing of runs, config, optimizer and evaluate


def test_a_baseline_student_trains_as_a_teacher_of_its_model_does(tmp_path, data_dir):
    """Without soft targets the loss is the cross-entropy of weight 1, for a teacher as for a baseline student
    (--hard-weight 1): the same seed and options train the same weights."""
    teach(config(tmp_path, "teacher", data_dir, epochs=2))
    train_student(config(tmp_path, "student", data_dir, cls=StudentConfig, epochs=2, distillation_weight=0.0), progress=False)
    assert_same_weights(weights(tmp_path / "teacher"), weights(tmp_path / "student"))


def test_a_diverging_teacher_is_not_told_of_a_kd_term_it_does_not_have(tmp_path, data_dir):
    """A diverging student is pointed at --distillation-weight and --temperature too; a teacher has neither."""
    with pytest.raises(KdcliError, match="not finite") as error:
        teach(config(tmp_path, "run", data_dir, epochs=1, lr=1e30))
    assert "--lr" in str(error.value) and "--distillation-weight" not in str(error.value) and "--temperature" not in str(error.value)


@pytest.mark.parametrize("lr, gamma, blamed", [(1e30, 0.1, False), (0.01, 1e30, True), (1e30, 10, False)], ids=["falling", "rising", "before its rise"])
def test_a_run_diverging_after_a_milestone_that_raised_its_lr_is_pointed_at_lr_gamma(tmp_path, data_dir, lr, gamma, blamed):
    """--lr-gamma above 1 raises the lr at each milestone: where that blows the run up, lowering --lr is not the only
    way out. A gamma below 1 is not blamed (a divergence under it comes from --lr), nor one above 1 in an epoch
    before its first milestone (--lr 1e30 diverges in epoch 1; the milestone is at epoch 1, the start of the second)."""
    with pytest.raises(KdcliError, match="not finite") as error:
        teach(config(tmp_path, "run", data_dir, epochs=2, lr=lr, lr_gamma=gamma, lr_milestones=(1,)))
    assert (f"--lr-gamma (now {gamma:g}: it raises the lr at each milestone)" in str(error.value)) == blamed, error.value


def test_a_sweep_resumed_says_nothing_of_each_student_it_starts_afresh(tmp_path, data_dir, capsys):
    """A sweep run again with --resume (as make runs it) starts the students it never started: that is no mistyped
    --out, and a "nothing to resume" line per student would bury the sweep's own lines."""
    data = load_cifar10(data_dir)
    run = baseline_run(tmp_path, data_dir, 1, len(data.train_labels))
    run.config.epochs, run.config.resume = 1, True
    with claim_folder(run.dir):  # a sweep holds its students' folders
        train_runs([run], data, torch.device("cpu"), progress=True, in_sweep=True)
    assert "nothing to resume" not in capsys.readouterr().err


def test_weights_blown_up_in_the_epoch_before_a_milestone_do_not_blame_lr_gamma(tmp_path, data_dir, monkeypatch):
    """Checked when epoch 1 is saved, at the milestone (1): the step that blew them up was epoch 1's, before the lr
    rose, so a lower --lr-gamma would not have helped."""
    blow_up_on_step(monkeypatch, STEPS)  # epoch 1's last step
    with pytest.raises(KdcliError, match=r"^weights are not finite after epoch 1 ") as error:
        teach(config(tmp_path, "run", data_dir, epochs=2, lr_gamma=10.0, lr_milestones=(1,)))
    assert "--lr-gamma" not in str(error.value), error.value


def test_a_run_resumes_from_its_images_in_another_folder(tmp_path, data_dir, finished, monkeypatch):
    """--data-dir says where the images are (check_same_inputs compares the images themselves): a copy, or the
    folder moved, resumes the run."""
    interrupt(tmp_path, data_dir, monkeypatch)
    moved = shutil.copytree(data_dir, tmp_path / "moved")
    teach(config(tmp_path, "run", moved, resume=True))
    assert_same_weights(weights(tmp_path / "run"), weights(finished[0]))


def test_milestones_are_not_warned_of_under_a_schedule_that_does_not_read_them(tmp_path, data_dir):
    """Only multistep reads --lr-milestones: a short cosine run is not told that the default ones never apply."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config(tmp_path, "run", data_dir, epochs=10, scheduler="cosine", lr_milestones=(150, 225)).warn_ineffective()


def test_the_ends_of_each_options_range_are_accepted(tmp_path, data_dir):
    """No weight decay, no momentum, milestone 1, the largest seed and the smallest temperature are settings, not typos."""
    teacher = config(tmp_path, "run", data_dir, weight_decay=0.0, momentum=0.0, lr_milestones=(1,), seed=2**63 - 1)
    student = config(tmp_path, "run", data_dir, cls=StudentConfig, temperature=0.001, distillation_weight=0.0, seed=0)
    assert (teacher.weight_decay, teacher.momentum, teacher.lr_milestones, teacher.seed, student.temperature) == (0.0, 0.0, (1,), 2**63 - 1, 0.001)


def test_a_checkpoint_of_weights_alone_evaluates_without_a_warning(tmp_path, data_dir):
    """A checkpoint that records neither its class count nor its images (made by hand, or by another program) is
    one of CIFAR-10's 10 classes, and gives nothing to warn of."""
    (tmp_path / "hand").mkdir()
    torch.save({"model": create_model("lenet5").state_dict(), "model_name": "lenet5"}, tmp_path / "hand" / CHECKPOINT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate(tmp_path / "hand", data_dir, device="cpu", download=False)
    assert result["model"] == "lenet5" and len(result["per_class"]) == 10
    assert not [w for w in caught if "trained on other images" in str(w.message)]


def test_a_run_is_evaluated_in_the_precision_it_recorded_even_as_an_old_flag():
    """What evaluate and dump-logits reproduce a run's accuracy in: --amp as recorded, true (before 2026-11-27) being bf16."""
    assert [recorded_precision({"config": {"amp": amp}}) for amp in (True, False, "fp16")] == ["bf16", "off", "fp16"]
    assert recorded_precision({"config": {}}) == "bf16"  # kdcli before --amp autocast in bf16


def test_runs_trained_together_are_kept_or_resumed_only_with_their_own_options(tmp_path, data_dir):
    """train_runs checks each run in its folder under the lock, whoever calls it (not only train-teacher's and
    train-student's early check): a finished run asked for with another --lr is refused, not kept as if it were that run."""
    data, cpu = load_cifar10(data_dir), torch.device("cpu")
    train_runs([baseline_run(tmp_path, data_dir, 1, len(data.train_labels))], data, cpu, progress=False)
    other = config(tmp_path, "seed1", data_dir, cls=StudentConfig, epochs=2, seed=1, distillation_weight=0.0, lr=0.05, resume=True)
    with pytest.raises(KdcliError, match=r"--lr 0.05 \(run has 0.1\)"):
        train_runs([Run(other, DrawnAugmentation(1, len(data.train_labels)))], data, cpu, progress=False)


def test_runs_in_folders_named_like_a_sweeps_students_are_no_sweep(tmp_path, data_dir):
    """Only a folder holding a sweep's lock is a sweep: runs trained one by one into T4/seed1 and the like leave
    their parent a folder of runs, where another run may go."""
    teach(config(tmp_path / "runs" / "T4", "seed1", data_dir, epochs=1))
    teach(config(tmp_path / "runs", "other", data_dir, epochs=1))
    assert (tmp_path / "runs" / "other" / "summary.json").exists()


def test_per_class_accuracy_is_each_classs_own(tmp_path, data_dir):
    """A model that answers "truck" to every image: 100% on the trucks, 0% on every other class, the trucks' share overall."""
    model = create_model("lenet5")
    with torch.no_grad():
        model.fc3.weight.zero_()
        model.fc3.bias.copy_(torch.arange(10.0))  # the largest logit: class 9's
    (tmp_path / "truck").mkdir()
    torch.save({"model": model.state_dict(), "model_name": "lenet5", "num_classes": 10}, tmp_path / "truck" / CHECKPOINT)
    result = evaluate(tmp_path / "truck", data_dir, device="cpu", download=False)
    assert result["per_class"] == [0.0] * 9 + [100.0]
    assert result["test_accuracy"] == pytest.approx(100 * (load_cifar10(data_dir).test_labels == 9).float().mean().item(), abs=1e-4)


def test_a_run_of_more_images_than_the_folder_holds_is_warned_of_without_its_record_of_them(tmp_path, data_dir):
    """A checkpoint of a kdcli from before 2026-11-27 (it recorded its images beside it, in config.json) copied alone:
    a --subset larger than the folder's is enough to say so, and no held-out accuracy is made of images not there."""
    (tmp_path / "old").mkdir()
    state = {"model": create_model("lenet5").state_dict(), "model_name": "lenet5", "config": {"subset": 300, "val_size": 50}}
    torch.save(state, tmp_path / "old" / CHECKPOINT)
    with pytest.warns(UserWarning, match="was trained on other images than those now in"):
        assert "val_accuracy" not in evaluate(tmp_path / "old", data_dir, device="cpu", download=False)


def test_predict_gives_the_logits_of_the_images_normalized_as_in_training(finished, data_dir):
    """In batches (7 does not divide the 60 test images) of the images normalized as the training loop does."""
    model, _ = load_model(finished[0], torch.device("cpu"))
    images = load_cifar10(data_dir).test_images
    with torch.no_grad():
        expected = model(augment.normalize(images))
    torch.testing.assert_close(predict(model, images, batch_size=7), expected)


def test_a_group_evaluated_in_batches_counts_each_image_against_its_own_label(data_dir):
    """A group's test accuracy comes in batches of 1,000 (the 10,000 test images are 10): each batch's predictions
    are compared with that batch's labels. Batches of 7 (not dividing the 60 test images) against labels that model 0
    predicts itself: 100% for it, and model 1 as predict and top1 score it."""
    torch.manual_seed(0)
    models = [create_model("lenet5") for _ in range(2)]
    stack, images = ModelStack(models), load_cifar10(data_dir).test_images
    labels = predict(models[0], images).argmax(1)
    assert len(labels.unique()) > 1  # else any batch's labels would do
    accuracy = evaluate_stack(stack, images, labels, autocast_to(None), batch_size=7)
    assert accuracy == pytest.approx([100.0, top1(predict(models[1], images), labels)], abs=1e-3)
    assert accuracy[1] < 50  # model 1 is another model: its column is not model 0's


def test_predict_keeps_no_autograd_graph(finished, data_dir):
    """evaluate and dump-logits predict over all 10,000 test images: with each batch's graph kept for a backward that
    never comes, a ResNet18 would hold ~5 GB per 1,000 images (measured on a CPU), more than a machine has."""
    model, _ = load_model(finished[0], torch.device("cpu"))
    assert not predict(model, load_cifar10(data_dir).test_images).requires_grad


def test_a_loaded_model_is_in_eval_mode(tmp_path):
    """Batch norm with its running statistics: a resumed dump-logits labels with the model as loaded, before any predict."""
    torch.save({"model": create_model("resnet8").state_dict(), "model_name": "resnet8"}, tmp_path / CHECKPOINT)
    model, _ = load_model(tmp_path, torch.device("cpu"))
    assert not any(m.training for m in model.modules())


# ---------------------------------------------------------------- found by mutation testing (2026-11-27, night)


def test_a_checkpoint_beside_a_config_json_of_no_object_evaluates_unchecked(tmp_path, data_dir):
    """A checkpoint that records no images, beside a config.json that is JSON but not an object (another program's):
    nothing to check its images by, as with no config.json at all, not an AttributeError."""
    (tmp_path / "hand").mkdir()
    torch.save({"model": create_model("lenet5").state_dict(), "model_name": "lenet5"}, tmp_path / "hand" / CHECKPOINT)
    (tmp_path / "hand" / "config.json").write_text("[1, 2]")
    assert evaluate(tmp_path / "hand", data_dir, device="cpu", download=False)["model"] == "lenet5"


def test_predict_uses_a_model_in_training_mode_as_evaluated_and_leaves_its_statistics_alone(data_dir):
    """A library caller's model fresh from create_model (training mode): batch norm with its running statistics,
    not the batch's, and no update of them, as evaluate's own loaded model gets."""
    torch.manual_seed(0)
    model, images = create_model("resnet8"), load_cifar10(data_dir).test_images[:8]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logits = predict(model, images)
    assert_same_weights(model.state_dict(), before)
    with torch.no_grad():
        torch.testing.assert_close(logits, model.eval()(augment.normalize(images)))


def test_a_stacked_students_checkpoint_holds_its_own_tensors_not_the_whole_stacks(tmp_path, data_dir):
    """torch.save of a view writes the storage under it: a student's slice of the stacked weights and momentum
    buffers saved as they are would make each checkpoint hold every stack-mate's tensors too (S times the size)."""
    data = load_cifar10(data_dir)
    train_runs([baseline_run(tmp_path, data_dir, s, len(data.train_labels)) for s in (1, 2, 3)], data, torch.device("cpu"), progress=False)
    state = load_checkpoint(tmp_path / "seed2")
    tensors = [*state["model"].values(), *(v for per_param in state["optimizer"]["state"].values() for v in per_param.values())]
    assert len(tensors) > len(state["model"])  # the momentum buffers are there
    assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in tensors)


# ---------------------------------------------------------------- found by mutation testing (fourth round: stack, group, losses, augment, report, cache)


def test_a_stacked_or_lone_model_with_one_weight_not_finite_is_not_finite():
    """A diverging step may blow up a few entries only: one inf or nan in one member's weights marks that member alone."""
    torch.manual_seed(0)
    models = [create_model("lenet5") for _ in range(3)]
    stack, alone = ModelStack(models), ModelStack(models[:1])
    assert stack.finite() == [True, True, True] and alone.finite() == [True]
    state = copy.deepcopy(models[1].state_dict())
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    stack.load_member_state(1, state)
    assert stack.finite() == [True, False, True]
    state["conv1.weight"][0, 0, 0, 0] = 0.0
    state["fc3.bias"][3] = float("inf")
    alone.load_member_state(0, state)
    assert alone.finite() == [False]


def test_an_epoch_of_full_batches_only_has_no_empty_last_step_and_counts_every_step(tmp_path, data_dir, monkeypatch):
    """200 images in batches of 100: two full steps, each weighing half of the epoch's loss (no last batch of 0 images)."""
    step_losses = recorded_step_losses(monkeypatch)
    teach(config(tmp_path, "run", data_dir, epochs=1, batch_size=100))
    assert len(step_losses) == 2
    assert metrics(tmp_path / "run")[0]["train_loss"] == pytest.approx(sum(step_losses) / 2, abs=1e-5)


# ---------------------------------------------------------------- found by mutation testing (2026-11-28: locks, runs, resume, config, train, cli)


def test_a_run_resumed_mid_epoch_says_the_epoch_and_step_it_goes_on_at(tmp_path, data_dir, monkeypatch, capsys):
    interrupt(tmp_path, data_dir, monkeypatch, step=STEPS + 2)  # stopped after epoch 2's second step
    capsys.readouterr()
    train_teacher(config(tmp_path, "run", data_dir, resume=True))
    assert f"resuming {tmp_path / 'run'} at epoch 2, step 3\n" in capsys.readouterr().err


def test_a_finished_run_is_refused_by_the_library_before_any_data_is_loaded(tmp_path, finished):
    """train_teacher itself, not only the CLI: a missing --data-dir must not hide that the run is finished already."""
    shutil.copytree(finished[0], tmp_path / "run")
    with pytest.raises(KdcliError, match="holds a finished run: pass --force"):
        teach(config(tmp_path, "run", tmp_path / "no-data-here"))


def test_train_runs_refuses_a_folder_inside_another_run_as_the_commands_do(tmp_path, data_dir, finished):
    """Its callers (the benchmark, a script) skip check_can_start: the folder is checked again once claimed."""
    shutil.copytree(finished[0], tmp_path / "run")
    cfg = config(tmp_path / "run", "inner", data_dir, epochs=1)
    data = load_cifar10(data_dir)
    with pytest.raises(KdcliError, match=r"inner is inside the folder of another run or sweep \(.*run\)"):
        train_runs([Run(cfg, DrawnAugmentation(cfg.seed, len(data.train_labels)))], data, torch.device("cpu"), progress=False)
    assert not (tmp_path / "run" / "inner").exists()


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode, lambda: torch.set_grad_enabled(False)])
def test_a_run_trains_where_the_caller_turned_gradients_off(tmp_path, data_dir, mode):
    """A notebook's torch.no_grad() (or inference_mode, or set_grad_enabled(False) left on) made the first step a
    RuntimeError; the run trains as in a fresh process, and the caller's mode is its own again after."""
    expected = teach(config(tmp_path, "fresh", data_dir, epochs=1))
    with mode():
        summary = teach(config(tmp_path, "run", data_dir, epochs=1))
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
    assert summary["test_accuracy"] == expected["test_accuracy"]
    assert_same_weights(weights(tmp_path / "run"), weights(tmp_path / "fresh"))


def test_a_float64_default_dtype_changes_neither_training_nor_evaluation(tmp_path, data_dir):
    """A notebook's torch.set_default_dtype(torch.float64) trained float64 weights unremarked (other numbers, recorded
    as float32), and made evaluating a float32 checkpoint a RuntimeError."""
    expected = teach(config(tmp_path, "fresh", data_dir, epochs=1))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        augment._mean_std.cache_clear()  # as in a process whose first kdcli call comes after the caller's float64
        summary = teach(config(tmp_path, "run", data_dir, epochs=1))
        evaluated = evaluate(tmp_path / "fresh", data_dir=str(data_dir), device="cpu", download=False)
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(previous)
        augment._mean_std.cache_clear()
    assert summary["test_accuracy"] == expected["test_accuracy"] == evaluated["test_accuracy"]
    assert_same_weights(weights(tmp_path / "run"), weights(tmp_path / "fresh"))


def test_a_stop_mid_epoch_counts_the_wait_for_the_steps_queued_on_the_device(tmp_path, data_dir, monkeypatch):
    """check_finite waits for the device (on CUDA, for the steps queued since the last sync): that wait is the epoch's
    time, as the synchronize before an epoch's end is, and must be in the seconds the stop saves."""
    check_finite = group_module.Group.check_finite

    def waiting_for_the_device(self, losses):
        time.sleep(0.5)  # as the steps still queued on a GPU would take
        return check_finite(self, losses)

    monkeypatch.setattr(group_module.Group, "check_finite", waiting_for_the_device)
    interrupt(tmp_path, data_dir, monkeypatch, step=2)
    assert load_checkpoint(tmp_path / "run")["partial"]["seconds"] >= 0.5
