"""dump-logits end to end on the tiny data with a LeNet-5 teacher, on the CPU: the cached logits are
the teacher on the views rebuilt from the cached parameters, and a dump killed with SIGKILL resumes
to the very arrays of a dump never stopped."""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import TEST_IMAGES, record_progress_bars, sha256, write_lenet_teacher

from kdcli import Interrupted, KdcliError, augment, cache, dump
from kdcli.config import ConfigError, StudentConfig
from kdcli.data import load_cifar10
from kdcli.dump import DumpConfig, dump_logits
from kdcli.models import create_model
from kdcli.runs import claim_folder

ROOT = Path(__file__).resolve().parents[1]
E = 4


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return write_lenet_teacher(tmp_path_factory.mktemp("teacher"))


def config(tmp_path, teacher, data_dir, **options) -> DumpConfig:
    defaults = dict(epochs=E, dtype="float32", batch_size=64, device="cpu", download=False, quiet=True)
    return DumpConfig(teacher=str(teacher), data_dir=str(data_dir), out=str(tmp_path / "c.h5"), **{**defaults, **options})


@pytest.fixture(scope="module")
def reference(tmp_path_factory, teacher, data_dir):
    """An unbroken float32 dump (batch 64: the 200 images end in a partial batch); never modify it."""
    cfg = config(tmp_path_factory.mktemp("reference"), teacher, data_dir)
    summary = dump_logits(cfg, progress=False)
    return Path(cfg.out), summary


def contents(path) -> dict:
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in cache.DATASETS}


def assert_same_cache(path, reference_path, ignore=()):
    got, want = contents(path), contents(reference_path)
    for name in cache.DATASETS:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    a, b = cache.cache_info(path)["attrs"], cache.cache_info(reference_path)["attrs"]
    for volatile in ("created", "config", *ignore):
        a.pop(volatile, None), b.pop(volatile, None)
    assert a == b


@pytest.mark.parametrize("precision", ["fp16", "bf16", "off"])
def test_on_a_cpu_the_teacher_labels_the_test_set_once(tmp_path, teacher, data_dir, monkeypatch, precision):
    """Its accuracy, the number train-teacher and evaluate print, is counted on the logits the cache stores, which are
    evaluate's there whatever the teacher's --amp (a CPU computes in float32): a second pass over the 10,000 test
    images would take as long again (ResNet18: a minute on 2 cores). tests/test_cuda.py checks the GPU's pass of its own."""
    from kdcli.evaluate import evaluate, load_model, predict

    state = torch.load(teacher / "checkpoint.pt", weights_only=True)
    torch.save({**state, "config": {"amp": precision}}, tmp_path / "teacher.pt")
    images, model_from = [], dump.model_from

    def counted(*args):
        model = model_from(*args)
        model.register_forward_pre_hook(lambda module, inputs: images.append(len(inputs[0])))
        return model

    monkeypatch.setattr(dump, "model_from", counted)
    cfg = config(tmp_path, tmp_path / "teacher.pt", data_dir, epochs=2)
    summary = dump_logits(cfg, progress=False)
    assert sum(images) == 200 * (1 + 2) + TEST_IMAGES  # the training images un-augmented and in 2 epochs, the test images once
    assert summary["teacher_test_accuracy"] == evaluate(tmp_path / "teacher.pt", data_dir, "cpu", download=False)["test_accuracy"]
    model, _ = load_model(tmp_path / "teacher.pt", torch.device("cpu"))
    with cache.open_cache(cfg.out) as c:
        assert torch.allclose(c.test_logits, predict(model, load_cifar10(data_dir).test_images), atol=1e-5)  # batches of 64 here, 1,000 there


def test_cached_logits_are_the_teacher_on_the_rebuilt_views(reference, teacher, data_dir):
    path, _ = reference
    data = load_cifar10(data_dir, "cpu")
    model = create_model("lenet5")
    model.load_state_dict(torch.load(teacher / "checkpoint.pt")["model"])
    model.eval()
    with torch.no_grad(), cache.open_cache(path, data.fingerprint, data.num_classes) as c:
        assert c.epochs_complete == E
        for e in range(E):
            aug, logits = c.epoch(e)  # [N, 3] int8, [N, C]
            assert torch.equal(aug, augment.params(0, e, len(data.train_labels)))
            views = augment.apply(data.train_images, aug)  # how a student rebuilds them
            assert (model(augment.normalize(views)) - logits).abs().max() < 1e-4
        assert (model(augment.normalize(data.train_images)) - c.clean_logits).abs().max() < 1e-4
        assert (model(augment.normalize(data.test_images)) - c.test_logits).abs().max() < 1e-4
        assert torch.equal(c.labels, data.train_labels)
        assert c.test_logits.abs().max() > 1  # the logits are not trivially small: the bound above means something


def test_the_progress_bar_counts_each_batch_after_a_line_for_the_un_augmented_images(tmp_path, teacher, data_dir, monkeypatch, capsys):
    """On a CPU an epoch of the dump takes seconds, and the un-augmented images as long before it: neither silent."""
    bars = record_progress_bars(monkeypatch, dump)
    said_before_the_test_pass = []
    label = dump.teacher_logits

    def said_then_labelled(*args, **kwargs):  # the first pass: over the test set, as long as the line's own on a CPU
        said_before_the_test_pass.append(capsys.readouterr().err)
        return label(*args, **kwargs)

    monkeypatch.setattr(dump, "teacher_logits", said_then_labelled)
    dump_logits(config(tmp_path, teacher, data_dir, epochs=2, quiet=False))
    unaugmented, bar = bars
    test_images = len(load_cifar10(data_dir, "cpu").test_labels)
    assert (unaugmented.desc, unaugmented.total, sum(unaugmented.counts)) == ("un-augmented", test_images + 200, test_images + 200)  # counted too
    assert (bar.total, bar.counts) == (400, [64, 64, 64, 8] * 2)  # 200 images in batches of 64
    assert f"{tmp_path / 'c.h5'}: labelling the un-augmented training and test images first" in said_before_the_test_pass[0]


def test_metadata_and_summary(reference, teacher, data_dir):
    path, summary = reference
    data = load_cifar10(data_dir, "cpu")
    info = cache.cache_info(path)
    a = info["attrs"]
    assert a["teacher_model"] == "lenet5" and a["teacher_sha256"] == sha256(teacher / "checkpoint.pt")
    assert a["train_fingerprint"] == data.fingerprint and a["num_images"] == 200 and a["num_classes"] == 10
    assert (a["seed"], a["epochs"], a["dtype"], a["format_version"]) == (0, E, "float32", cache.FORMAT_VERSION)
    assert a["teacher_precision"] == "float32"  # on a CPU: no autocast (test_cuda.py checks the bf16 side)
    assert (a["resolved_device"], a["torch_version"], a["torch_threads"]) == ("cpu", torch.__version__, torch.get_num_threads())
    assert (a["augment_pad"], a["augment_crop"], a["augment_fill"], a["augment_flip"]) == (4, 32, 0, 0.5)
    assert a["augment_std"] == list(augment.STD) and a["config"]["batch_size"] == 64
    assert a["config"]["teacher"] == str(teacher.resolve())  # absolute: cache-info --verify finds it from anywhere
    datetime.fromisoformat(a["created"])
    with cache.open_cache(path) as c:
        accuracy = 100 * (c.test_logits.argmax(1) == data.test_labels).float().mean().item()
    assert a["teacher_test_accuracy"] == pytest.approx(accuracy, abs=1e-4) == summary["teacher_test_accuracy"]
    assert summary["epochs_written"] == E and summary["resumed_from"] == 0 and summary["images_per_s"] > 0
    assert summary["size_bytes"] == info["size_bytes"] and summary["path"] == str(path)


def test_float16_by_default_and_verify_cache(tmp_path, reference, teacher, data_dir):
    cfg = config(tmp_path, teacher, data_dir, epochs=2, dtype=DumpConfig.dtype)
    dump_logits(cfg, progress=False)
    assert cache.cache_info(cfg.out)["datasets"]["logits"] == {"shape": [2, 200, 10], "dtype": "float16"}
    verified = dump.verify_cache(cfg.out, teacher, k=64, device="cpu", data_dir=data_dir)
    assert verified["max_difference"] < 1e-2 and verified["entries"] == 64  # float16 rounding of ~5
    assert verified["max_relative"] < 1e-3 and verified["tolerance"] == 0.02  # float32 on both sides
    assert dump.verify_cache(reference[0], teacher, k=64, device="cpu", data_dir=data_dir)["max_difference"] < 1e-4
    assert dump.verify_cache(reference[0], k=64, device="cpu", data_dir=data_dir)["max_difference"] < 1e-4  # the teacher the dump was given
    with h5py.File(cfg.out, "r+") as f:  # a damaged cache fails
        f["logits"][1] = f["logits"][1] * 1.05
    with pytest.raises(KdcliError, match=r"c.h5 fails verification: over 64 entries, cached logits differ from the teacher's by up to [\d.]+ \(4.8% of"):
        dump.verify_cache(cfg.out, teacher, k=64, device="cpu", data_dir=data_dir)


@pytest.mark.parametrize("precision, tolerance", [("bfloat16", 0.10), ("float16", 0.10), (None, 0.10), ("float32", 0.02)])
def test_verify_allows_the_rounding_of_the_precision_the_dump_labelled_in(tmp_path, teacher, data_dir, precision, tolerance):
    """A GPU's bf16 cache checked on a CPU (in float32) differs by more than rounding to float16; None: a cache of
    before teacher_precision was recorded, whose --amp said bf16."""
    cfg = config(tmp_path, teacher, data_dir, epochs=1)
    dump_logits(cfg, progress=False)
    with h5py.File(cfg.out, "r+") as f:
        f.attrs.pop("teacher_precision") if precision is None else f.attrs.modify("teacher_precision", precision)
        f["logits"][0] = f["logits"][0] * 1.06  # 5.7% off: within the low precisions' tolerance, beyond float32's
    if precision == "float32":
        with pytest.raises(KdcliError, match="rounding stays under 2%"):
            dump.verify_cache(cfg.out, teacher, k=32, device="cpu", data_dir=data_dir)
    else:
        assert dump.verify_cache(cfg.out, teacher, k=32, device="cpu", data_dir=data_dir)["tolerance"] == tolerance


@pytest.mark.parametrize("precision, damage", [("float32", 1.03), ("bfloat16", 1.15)])
def test_verify_fails_damage_just_beyond_the_tolerance(tmp_path, teacher, data_dir, precision, damage):
    """3% off fails a float32 cache (tolerance 2%), 15% a bf16 one (10%): the tolerance is the bound, not a fraction of it."""
    cfg = config(tmp_path, teacher, data_dir, epochs=1)
    dump_logits(cfg, progress=False)
    with h5py.File(cfg.out, "r+") as f:
        f.attrs.modify("teacher_precision", precision)
        f["logits"][0] = f["logits"][0] * damage
    with pytest.raises(KdcliError, match="fails verification"):
        dump.verify_cache(cfg.out, teacher, k=32, device="cpu", data_dir=data_dir)


def test_a_teacher_checkpoint_replaced_during_the_dump_is_not_the_one_recorded(tmp_path, teacher, data_dir, monkeypatch):
    """A teacher still training saves a checkpoint every epoch; one saved while the dump loads its data must
    not give the cache the new file's sha256 for the old weights' logits (verify would call it damaged)."""
    folder = tmp_path / "teacher"
    shutil.copytree(teacher, folder)
    labelled_with = sha256(folder / "checkpoint.pt")
    load = dump.load_cifar10

    def load_while_the_teacher_saves(*args, **kwargs):
        state = torch.load(folder / "checkpoint.pt")
        state["model"] = {k: v + 1 for k, v in state["model"].items()}
        torch.save(state, folder / "checkpoint.pt")
        return load(*args, **kwargs)

    monkeypatch.setattr(dump, "load_cifar10", load_while_the_teacher_saves)
    cfg = config(tmp_path, folder / "checkpoint.pt", data_dir, epochs=1)  # the file: labelled with as it is
    dump_logits(cfg, progress=False)
    monkeypatch.undo()
    assert cache.cache_info(cfg.out)["attrs"]["teacher_sha256"] == labelled_with
    with pytest.raises(KdcliError, match="made by another teacher"):  # the file now holds other weights, and verify says so
        dump.verify_cache(cfg.out, folder, k=8, device="cpu", data_dir=data_dir)


@pytest.mark.parametrize("epoch, image", [(1, 123), (0, 1)])
def test_verify_checks_distinct_entries_and_every_one_when_asked_for_more(tmp_path, teacher, data_dir, epoch, image):
    cfg = config(tmp_path, teacher, data_dir, epochs=2)
    dump_logits(cfg, progress=False)
    with h5py.File(cfg.out, "r+") as f:  # one damaged entry of the 400: only a check of every entry is sure to find it
        f["logits"][epoch, image] = f["logits"][epoch, image] + 1
    with pytest.raises(KdcliError, match="fails verification: over 400 entries"):
        dump.verify_cache(cfg.out, teacher, k=10**6, device="cpu", data_dir=data_dir)


def test_verify_a_cache_of_the_first_images_of_a_folder(tmp_path, teacher, data_dir):
    """--subset N labels the first N images: verify compares the cache with those, not with every image of the folder."""
    cfg = config(tmp_path, teacher, data_dir, epochs=1, subset=50)
    dump_logits(cfg, progress=False)
    verified = dump.verify_cache(cfg.out, teacher, k=50, device="cpu", data_dir=data_dir)
    assert verified["entries"] == 50 and verified["max_difference"] < 1e-4


def test_the_seed_draws_the_views_and_verify_checks_them(tmp_path, teacher, data_dir):
    cfg = config(tmp_path, teacher, data_dir, epochs=2, seed=7)
    dump_logits(cfg, progress=False)
    with cache.open_cache(cfg.out) as c:
        assert c.attrs["seed"] == 7 and all(torch.equal(c.epoch(e)[0], augment.params(7, e, 200)) for e in range(2))
        assert not torch.equal(c.epoch(0)[0], augment.params(0, 0, 200))
    assert dump.verify_cache(cfg.out, teacher, k=64, device="cpu", data_dir=data_dir)["max_difference"] < 1e-4
    with h5py.File(cfg.out, "r+") as f:  # views that are not the seed's: the logits no longer say what they label
        f["aug"][1] = augment.params(8, 1, 200).numpy()
    with pytest.raises(KdcliError, match="the stored augmentation of epoch 1 is not augment.params"):
        dump.verify_cache(cfg.out, teacher, k=64, device="cpu", data_dir=data_dir)


def test_verify_refuses_another_teacher(tmp_path, reference, teacher, data_dir):
    other = tmp_path / "other"
    other.mkdir()
    state = torch.load(teacher / "checkpoint.pt")
    state["model"] = {k: v + 0.01 for k, v in state["model"].items()}
    torch.save(state, other / "checkpoint.pt")
    with pytest.raises(KdcliError, match=rf"was made by another teacher \(sha256 .{{8}}…\), not .*other: pass the one it was made with \(--teacher; its dump recorded {re.escape(str(teacher.resolve()))}\)$"):
        dump.verify_cache(reference[0], other, k=64, device="cpu", data_dir=data_dir)


@pytest.mark.parametrize("epoch,step", [(1, 0), (2, 3)], ids=["between-epochs", "mid-epoch"])
def test_a_teacher_that_has_not_finished_training_is_refused(tmp_path, teacher, data_dir, epoch, step):
    """Stopped by Ctrl-C, or still training: a run folder whose checkpoint is short of its epochs."""
    run = tmp_path / "run"
    run.mkdir()
    state = torch.load(teacher / "checkpoint.pt")
    torch.save({**state, "epoch": epoch, "step": step, "config": {"epochs": 3}}, run / "checkpoint.pt")
    where = f"stopped at epoch {epoch + 1} of 3, step {step}" if step else f"epoch {epoch} of 3"
    with pytest.raises(KdcliError, match=f"the teacher in .*run has not finished training \\({where}\\): resume it \\(kdcli train-teacher --out .*run --resume\\)"):
        dump_logits(config(tmp_path, run, data_dir, epochs=1))
    assert list(tmp_path.glob("c.h5*")) == []  # neither a cache nor its lock file
    with claim_folder(tmp_path / "starting"), pytest.raises(KdcliError, match="starting is still training, and has no checkpoint yet"):
        dump_logits(config(tmp_path, tmp_path / "starting", data_dir, epochs=1))  # its first epoch: a lock, no checkpoint
    with claim_folder(run), pytest.raises(KdcliError, match=f"the teacher in .*run is still training \\(its checkpoint: {where}\\): wait for it"):
        dump_logits(config(tmp_path, run, data_dir, epochs=1))  # another kdcli holds the run's lock: it trains there now
    with pytest.warns(UserWarning, match=f"checkpoint.pt is the checkpoint of a teacher that has not finished training \\({where}\\)"):
        dump_logits(config(tmp_path, run / "checkpoint.pt", data_dir, epochs=1))  # the file itself: the user's choice
    torch.save({**state, "epoch": 3, "step": 0, "config": {"epochs": 3}}, run / "checkpoint.pt")
    dump_logits(config(tmp_path, run, data_dir, epochs=1, force=True))  # finished
    torch.save({k: v for k, v in state.items() if k != "epoch"} | {"config": {"epochs": 3}}, run / "checkpoint.pt")
    dump_logits(config(tmp_path, run, data_dir, epochs=1, force=True))  # a checkpoint that does not say how far it trained


@pytest.mark.parametrize("checkpoint", [True, False], ids=["after-a-checkpoint", "before-any"])
def test_a_teacher_that_diverged_is_refused_with_what_to_lower_not_told_to_resume(tmp_path, teacher, data_dir, checkpoint):
    """Resumed, it would diverge again: the refusal is its run's own error, which says what to lower and to use --force."""
    run = tmp_path / "run"
    shutil.copytree(teacher, run)
    torch.save({**torch.load(teacher / "checkpoint.pt"), "epoch": 1, "step": 0, "config": {"epochs": 3}}, run / "checkpoint.pt")
    if not checkpoint:
        (run / "checkpoint.pt").unlink()
    error = f"loss is not finite at epoch 2, step 5 ({run}): lower --lr (now 0.1), and start over with --force; the last good checkpoint is kept"
    (run / "diverged.json").write_text(json.dumps({"error": error, "epoch": 2, "step": 5}))
    with pytest.raises(KdcliError, match="the teacher in .*run diverged and has not finished training: loss is not finite at epoch 2.*lower --lr") as refused:
        dump_logits(config(tmp_path, run, data_dir, epochs=1))
    assert "--resume" not in str(refused.value) and list(tmp_path.glob("c.h5*")) == []


def test_an_unfinished_student_as_teacher_is_resumed_as_a_student(tmp_path, teacher, data_dir):
    run = tmp_path / "student"
    run.mkdir()
    state = torch.load(teacher / "checkpoint.pt")
    torch.save({**state, "epoch": 1, "step": 0, "config": {"epochs": 3, "cache": "cache/logits.h5"}}, run / "checkpoint.pt")
    with pytest.raises(KdcliError, match=r"resume it \(kdcli train-student --out .*student --resume\)"):
        dump_logits(config(tmp_path, run, data_dir, epochs=1))


def test_the_teachers_accuracy_is_taken_before_its_logits_are_rounded(tmp_path, teacher, data_dir):
    """Logits 100 and 100.01 are one float16 number: stored, class 0 would win the tie; the teacher says class 1."""
    state = torch.load(teacher / "checkpoint.pt")
    state["model"]["fc3.weight"].zero_()
    state["model"]["fc3.bias"][:] = torch.tensor([100.0, 100.01] + [0.0] * 8)
    torch.save(state, tmp_path / "tie.pt")
    summary = dump_logits(config(tmp_path, tmp_path / "tie.pt", data_dir, epochs=1, dtype="float16"))
    labels = load_cifar10(data_dir).test_labels
    assert (labels == 1).float().mean() != (labels == 0).float().mean()  # the data tells the two apart
    assert summary["teacher_test_accuracy"] == pytest.approx(100 * (labels == 1).float().mean().item(), abs=1e-4)


def test_missing_teacher_refused(tmp_path, data_dir):
    with pytest.raises(KdcliError, match=r"no teacher at .*nowhere: run `kdcli train-teacher` first, or pass --teacher"):
        dump_logits(config(tmp_path, tmp_path / "nowhere", data_dir))


def test_complete_cache_refused_unless_forced(tmp_path, teacher, data_dir):
    cfg = config(tmp_path, teacher, data_dir, epochs=1)
    dump_logits(cfg, progress=False)
    with pytest.raises(KdcliError, match=r"c.h5 is complete \(1 epoch\); pass --force to recompute it, or --resume to keep it"):
        dump_logits(cfg, progress=False)
    before = contents(cfg.out)
    cfg.resume = True  # what make passes: the same settings, complete: kept as it is
    kept = dump_logits(cfg, progress=False)
    assert (kept["epochs_written"], kept["epochs_complete"], kept["images_per_s"]) == (0, 1, None)
    assert all(np.array_equal(contents(cfg.out)[k], v) for k, v in before.items())
    cfg.force = True  # even with --resume
    assert dump_logits(cfg, progress=False)["epochs_written"] == 1


def test_force_never_overwrites_a_file_that_is_not_a_cache(tmp_path, teacher, data_dir):
    """`--out runs/t/checkpoint.pt --force`, a slip of the tab key, must not destroy the teacher."""
    target = tmp_path / "checkpoint.pt"
    shutil.copy(teacher / "checkpoint.pt", target)
    before = target.read_bytes()
    with pytest.raises(KdcliError, match=r"checkpoint.pt is not an HDF5 file: pass another --out \(even --force"):
        cfg = config(tmp_path, teacher, data_dir, force=True)
        cfg.out = str(target)
        dump_logits(cfg, progress=False)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_a_teacher_of_other_images_is_warned_of_and_said_to_have_seen_none_of_these(tmp_path, data_dir, recwarn):
    """The teacher of the first 100 images (20 held out) labels all 200 of its data saying that it never saw 100
    of them, and the images of another folder with a warning: the cache must not say it trained on any of those."""
    from conftest import write_cifar_folder

    from kdcli.config import TeacherConfig
    from kdcli.train import train_teacher

    teacher = TeacherConfig(model="lenet5", epochs=1, batch_size=64, subset=100, val_size=20, device="cpu", quiet=True, data_dir=str(data_dir), out=str(tmp_path / "t"))
    train_teacher(teacher, progress=False)
    with pytest.warns(UserWarning, match=r"the teacher .*t trained on the first 100 of these 200 images: it labels 100 it never saw \(pass --subset 100"):
        dump_logits(config(tmp_path, tmp_path / "t", data_dir, epochs=1), progress=False)
    assert cache.cache_info(tmp_path / "c.h5")["attrs"]["teacher_train_images"] == 80
    recwarn.clear()
    dump_logits(config(tmp_path, tmp_path / "t", data_dir, epochs=1, subset=100, force=True), progress=False)
    assert not [w for w in recwarn if "never saw" in str(w.message)]  # its own images
    dump_logits(config(tmp_path, tmp_path / "t", data_dir, epochs=1, subset=50, force=True), progress=False)
    assert cache.cache_info(tmp_path / "c.h5")["attrs"]["teacher_train_images"] == 50  # of the 50 labelled, not 80
    other = write_cifar_folder(tmp_path / "other", seed=1)
    for subset in (None, 50):  # 50: fewer images than it trained on, compared all the same
        with pytest.warns(UserWarning, match=r"the teacher .*t trained on other images than those now in .*other: it labels images it never saw"):
            dump_logits(config(tmp_path, tmp_path / "t", other, epochs=1, subset=subset, force=True), progress=False)
        assert cache.cache_info(tmp_path / "c.h5")["attrs"]["teacher_train_images"] == 0


def test_cache_of_other_settings_refused(tmp_path, teacher, data_dir):
    dump_logits(config(tmp_path, teacher, data_dir, epochs=1), progress=False)
    with pytest.raises(KdcliError, match=r"other settings: epochs 1 \(now 2\), dtype float32 \(now float16\); pass --force"):
        dump_logits(config(tmp_path, teacher, data_dir, epochs=2, dtype="float16"), progress=False)


def test_unwritable_out_is_one_clear_error(tmp_path, teacher, data_dir):
    (tmp_path / "file").write_text("")
    with pytest.raises(KdcliError, match="cannot write .*file/c.h5"):
        dump_logits(config(tmp_path / "file", teacher, data_dir), progress=False)


@pytest.mark.parametrize("option", ["epochs", "batch_size", "subset"])
def test_bad_options_refused(tmp_path, teacher, data_dir, option):
    with pytest.raises(KdcliError, match="must be at least 1"):
        config(tmp_path, teacher, data_dir, **{option: 0})


def test_a_choice_that_is_not_one_is_refused(tmp_path, teacher, data_dir):
    with pytest.raises(ConfigError, match="--amp: must be one of bf16, fp16, off, got True"):
        config(tmp_path, teacher, data_dir, amp=True)  # bf16 before --amp took a precision: not silently float32 now
    with pytest.raises(ConfigError, match="--dtype: must be one of float16, float32, got 'bfloat16'"):
        config(tmp_path, teacher, data_dir, dtype="bfloat16")
    with pytest.raises(ConfigError, match="--device: must be one of auto, cuda, mps, cpu, got 'cuda:1': to use GPU 1, run with CUDA_VISIBLE_DEVICES=1 and --device cuda$"):
        config(tmp_path, teacher, data_dir, device="cuda:1")
    with pytest.raises(ConfigError, match="--epochs: must be an integer, got '3'"):  # a library caller's, not a TypeError
        config(tmp_path, teacher, data_dir, epochs="3")


def assert_resumes_to(reference, cfg, done):
    """The stopped dump at cfg.out kept `done` epochs, and finishes as the reference, never stopped."""
    assert cache.cache_info(cfg.out)["epochs_complete"] == done
    assert dump_logits(cfg, progress=False)["resumed_from"] == done
    assert_same_cache(cfg.out, reference[0])


@pytest.mark.parametrize("at", [0, 2, E - 1], ids=["first epoch", "epoch 2", "last epoch"])
def test_ctrl_c_keeps_every_epoch_labelled_before_it(tmp_path, reference, teacher, data_dir, monkeypatch, at):
    """Ctrl-C while the teacher labels epoch 2 (epoch 1 still being fsynced on the disk thread): the dump
    stops only once epoch 1 is on disk, and a resumed dump gives the cache of one never stopped. At the last
    epoch too: a cache one epoch short is no finished one. At the first, nothing was handed to the disk yet
    (a ResNet18 epoch is minutes on a CPU: the likeliest Ctrl-C); the dump stops with 0 epochs and resumes."""
    cfg = config(tmp_path, teacher, data_dir)
    label, epochs_labelled = dump.teacher_logits, []

    def interrupted_at_epoch(model, images, aug, *args, **kwargs):
        if aug is not None:  # (None: the un-augmented train and test sets, labelled first)
            if len(epochs_labelled) == at:
                os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, handled while epoch `at` is being labelled
            epochs_labelled.append(aug)
        return label(model, images, aug, *args, **kwargs)

    fsync = os.fsync
    monkeypatch.setattr(dump, "teacher_logits", interrupted_at_epoch)
    monkeypatch.setattr(os, "fsync", lambda fd: (time.sleep(0.2), fsync(fd)))  # the write of epoch at-1 is still going on
    with pytest.raises(Interrupted, match=rf"interrupted: .*c\.h5 holds {at} of 4 epochs"):
        dump_logits(cfg, progress=False)
    monkeypatch.undo()
    assert_resumes_to(reference, cfg, done=at)


def test_ctrl_c_while_an_epoch_is_written_keeps_a_cache_that_resumes(tmp_path, reference, teacher, data_dir, monkeypatch):
    """Ctrl-C during the disk thread's fsync of epoch 0, while the main thread labels epoch 2 or waits to
    hand epoch 1 over: the dump stops with every epoch labelled in full written, in order (2 or 3 of them,
    by the race), and says how many."""
    cfg, epoch, pressed = config(tmp_path, teacher, data_dir), 0, []
    sync = cache.CacheWriter._sync

    def ctrl_c_at_epoch(writer):
        if writer.epochs_complete == epoch and not pressed:  # once: a second Ctrl-C would quit at once
            pressed.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        sync(writer)

    monkeypatch.setattr(cache.CacheWriter, "_sync", ctrl_c_at_epoch)
    with pytest.raises(Interrupted) as stopped:
        dump_logits(cfg, progress=False)
    monkeypatch.undo()
    done = cache.cache_info(cfg.out)["epochs_complete"]
    assert f"holds {done} of {E} epochs" in str(stopped.value) and epoch < done < E
    assert_resumes_to(reference, cfg, done)


def test_ctrl_c_while_the_last_epoch_is_written_lets_the_dump_finish_and_says_so(tmp_path, teacher, data_dir, monkeypatch, capsys):
    cfg, write = config(tmp_path, teacher, data_dir, quiet=True), cache.CacheWriter.write_epoch

    def ctrl_c_at_the_last_epoch(writer, e, *args):
        if e == E - 1:  # every epoch is labelled: there is no safe point left to stop at
            os.kill(os.getpid(), signal.SIGINT)
        write(writer, e, *args)

    monkeypatch.setattr(cache.CacheWriter, "write_epoch", ctrl_c_at_the_last_epoch)
    assert dump_logits(cfg)["epochs_complete"] == E
    assert "c.h5: finished before the next safe point; nothing to resume" in capsys.readouterr().err


def test_an_unfinished_cache_of_an_older_kdcli_resumes(tmp_path, reference, teacher, data_dir, monkeypatch):
    """Caches made before teacher_precision, and what computed them, were recorded lack those: resuming them must not be refused for it."""
    cfg = config(tmp_path, teacher, data_dir, epochs=E)
    dump_logits(cfg, progress=False)
    recorded_later = ("teacher_precision", "resolved_device", "torch_version", "torch_threads")
    with h5py.File(cfg.out, "r+") as f:
        for name in recorded_later:
            del f.attrs[name]
        f["epochs_complete"][()] = 2
    fsync = os.fsync  # 4 fsyncs of 0.05 s: the summary's seconds, rounded to 0.01, are then off by 2.5% at most, not 25% (a 0.02 s dump)
    monkeypatch.setattr(os, "fsync", lambda fd: (time.sleep(0.05), fsync(fd)))
    resumed = dump_logits(cfg, progress=False)
    assert (resumed["resumed_from"], resumed["epochs_written"]) == (2, E - 2)
    assert resumed["images_per_s"] == pytest.approx(200 * 2 / resumed["seconds"], rel=0.25)  # of the epochs it wrote, not all 4
    assert_same_cache(cfg.out, reference[0], ignore=recorded_later)


def test_a_cache_started_on_another_machine_resumes_here(tmp_path, reference, teacher, data_dir):
    """What computed a dump is recorded, not compared: a dump started on a GPU, or under another torch, finishes here."""
    cfg = config(tmp_path, teacher, data_dir, epochs=E)
    dump_logits(cfg, progress=False)
    with h5py.File(cfg.out, "r+") as f:
        f.attrs.update(resolved_device="cuda: NVIDIA H100 80GB HBM3", torch_version="2.6.0")
        del f.attrs["torch_threads"]  # recorded on a CPU only
        f["epochs_complete"][()] = 2
    assert dump_logits(cfg, progress=False)["resumed_from"] == 2
    assert_same_cache(cfg.out, reference[0], ignore=("resolved_device", "torch_version", "torch_threads"))


def test_a_cache_the_disk_cannot_hold_is_refused_before_anything_is_written(tmp_path, teacher, data_dir):
    """A mistyped --epochs must not first fill the disk with HDF5's chunk index, in one call no signal interrupts."""
    cfg = config(tmp_path, teacher, data_dir, epochs=10**12)
    with pytest.raises(KdcliError, match=r"cannot write .*c\.h5: 1,000,000,000,000 epochs need [\d,.]+ GB and .* has [\d,.]+ [kMG]B free; pass fewer --epochs"):
        dump_logits(cfg, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5.lock"]


@pytest.mark.parametrize("room", [-1, 128 * 1024], ids=["a byte short", "128 kB to spare"])
def test_the_room_a_dump_asks_for_is_the_cache_it_writes(tmp_path, reference, teacher, data_dir, monkeypatch, room):
    """Never less than the file takes (HDF5 hit by a full disk while creating it can crash the process), and not much more."""
    size = reference[0].stat().st_size
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 0, size + room))
    cfg = config(tmp_path, teacher, data_dir)
    if room < 0:
        with pytest.raises(KdcliError, match="need"):
            dump_logits(cfg, progress=False)
    else:
        assert dump_logits(cfg, progress=False)["size_bytes"] == size


@pytest.mark.parametrize("full_at", [2, E - 1], ids=["mid-dump", "last epoch"])
def test_disk_full_mid_dump_is_one_clear_error_and_resumes(tmp_path, reference, teacher, data_dir, monkeypatch, full_at):
    """The disk thread's error reaches the caller as one line, also for the last epoch's write (no later epoch
    waits for it); the epochs before it stay usable."""
    cfg = config(tmp_path, teacher, data_dir)
    sync = cache.CacheWriter._sync

    def full_at_epoch(writer):
        if writer.epochs_complete == full_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        sync(writer)

    monkeypatch.setattr(cache.CacheWriter, "_sync", full_at_epoch)
    with pytest.raises(KdcliError, match=r"cannot write .*c\.h5: .*No space left on device"):
        dump_logits(cfg, progress=False)
    monkeypatch.undo()
    assert_resumes_to(reference, cfg, done=full_at)


# Runs a dump whose every fsync takes 0.3 s longer, so that the test can kill it between two epochs
# or between writing an epoch and counting it.
SLOW_DUMP = """
import json, os, sys, time
from kdcli.dump import DumpConfig, dump_logits
fsync = os.fsync
os.fsync = lambda fd: (fsync(fd), time.sleep(0.3))
dump_logits(DumpConfig(**json.loads(sys.argv[1])), progress=False)
"""


def test_dump_killed_mid_run_resumes_to_the_same_arrays(tmp_path, reference, teacher, data_dir):
    cfg = config(tmp_path, teacher, data_dir)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", SLOW_DUMP, json.dumps(vars(cfg))], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:  # poll through read-only opens until the first epoch is on disk
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline
            try:
                if cache.cache_info(cfg.out)["epochs_complete"] >= 1:
                    break
            except KdcliError:  # not created yet
                pass
            time.sleep(0.02)
        with pytest.raises(KdcliError, match="being written by another dump-logits"):
            dump_logits(cfg, progress=False)
        time.sleep(0.4)  # into the next epoch: its data written, not yet counted
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()  # waits, and closes its pipe
    done = cache.cache_info(cfg.out)["epochs_complete"]  # the killed dump left a readable file ...
    assert 1 <= done < E
    with cache.open_cache(cfg.out, allow_partial=True) as c, cache.open_cache(reference[0]) as ref:
        for e in range(done):  # ... whose complete epochs are right
            assert all(torch.equal(a, b) for a, b in zip(c.epoch(e), ref.epoch(e)))
    summary = dump_logits(cfg, progress=False)
    assert (summary["resumed_from"], summary["epochs_written"]) == (done, E - done)
    assert_same_cache(cfg.out, reference[0])


def test_the_view_labeller_traces_as_one_graph_without_warnings():
    """On CUDA the dump compiles augmentation, normalisation and teacher together: a graph break would
    split the fused kernels, and a dynamo warning would reach every user's terminal."""
    model = create_model("resnet8").eval()
    label = dump.view_labeller(model, None, False, 4)  # as a dump on a CPU
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # torch's advice to leave Python 3.13.0 (a CPython bug fixed in 3.13.1): of the interpreter, not of this graph
        warnings.filterwarnings("ignore", "Guards may run slower on Python 3.13.0", RuntimeWarning)
        with torch.inference_mode():
            explained = torch._dynamo.explain(label)(images, augment.params(0, 0, 4))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_a_batch_norm_teacher_labels_in_eval_mode(tmp_path, data_dir):
    """A ResNet teacher labels each view with its running statistics, not with those of the batch it is in."""
    torch.manual_seed(0)
    model = create_model("resnet8")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # far from a batch's own statistics, so the two modes differ
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    torch.save({"model": model.state_dict(), "model_name": "resnet8", "num_classes": 10}, tmp_path / "t.pt")
    dump_logits(DumpConfig(teacher=str(tmp_path / "t.pt"), epochs=1, dtype="float32", batch_size=64, out=str(tmp_path / "c.h5"),
                           data_dir=str(data_dir), download=False, device="cpu", quiet=True), progress=False)  # fmt: skip
    data = load_cifar10(data_dir, download=False)
    model.eval()
    with cache.open_cache(tmp_path / "c.h5") as c, torch.no_grad():
        aug, logits = c.epoch(0)
        torch.testing.assert_close(c.clean_logits, model(augment.normalize(data.train_images)), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(logits, model(augment.normalize(augment.apply(data.train_images, aug))), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- found by mutation testing (2026-11-27)


def test_verify_fails_a_cache_damaged_in_any_epoch_not_only_the_last_checked(tmp_path, teacher, data_dir):
    cfg = config(tmp_path, teacher, data_dir, epochs=2)
    dump_logits(cfg, progress=False)
    path = cfg.out
    with h5py.File(path, "r+") as f:
        f["logits"][0] = f["logits"][0] * 1.05  # epoch 0 of 2
    with pytest.raises(KdcliError, match="fails verification"):
        dump.verify_cache(path, teacher, k=400, device="cpu", data_dir=data_dir, download=False)


@pytest.mark.parametrize("dataset", ["logits", "clean_logits", "test_logits"])
def test_verify_fails_a_cache_holding_a_nan_logit(tmp_path, teacher, data_dir, dataset):
    """NaN compares as no difference at all (max(0, nan) is 0): a NaN must fail, not pass as "0.000 off"."""
    cfg = config(tmp_path, teacher, data_dir, epochs=2)
    dump_logits(cfg, progress=False)
    with h5py.File(cfg.out, "r+") as f:
        f[dataset][-1, 3] = np.nan  # the last epoch's (or image's) row
    with pytest.raises(KdcliError, match="not finite.*damaged"):
        dump.verify_cache(cfg.out, teacher, k=400, device="cpu", data_dir=data_dir, download=False)


@pytest.mark.parametrize("scale, refusal", [(1e7, "exceed float16's range .*: dump with --dtype float32"), (float("nan"), "not finite .*diverged")])
def test_a_teacher_whose_logits_float16_cannot_hold_is_refused_not_stored_as_inf(tmp_path, teacher, data_dir, scale, refusal):
    """Its students would read inf and be told the file was damaged; making it again would store the same."""
    state = torch.load(teacher / "checkpoint.pt")
    state["model"] = {k: v * scale if k.startswith("fc3") else v for k, v in state["model"].items()}
    (tmp_path / "big").mkdir()
    torch.save(state, tmp_path / "big" / "checkpoint.pt")
    with pytest.raises(KdcliError, match=refusal):
        dump_logits(config(tmp_path, tmp_path / "big", data_dir, dtype="float16", epochs=1), progress=False)
    if scale == 1e7:  # float32 holds them
        dump_logits(config(tmp_path / "f32", tmp_path / "big", data_dir, dtype="float32", epochs=1), progress=False)


def test_a_float32_cache_of_large_finite_logits_is_read_not_called_damaged(tmp_path, teacher, data_dir):
    """The dump stores them (its check sums in float64); 200 x 10 logits of 1e36 sum past float32's 3.4e38, so a
    reader that took a float32 sum for its check would call the file damaged, and making it again would store the same."""
    state = torch.load(teacher / "checkpoint.pt")
    state["model"]["fc3.bias"] = torch.full((10,), 1e36)
    (tmp_path / "big").mkdir()
    torch.save(state, tmp_path / "big" / "checkpoint.pt")
    cfg = config(tmp_path, tmp_path / "big", data_dir, dtype="float32", epochs=1)
    dump_logits(cfg, progress=False)
    with cache.open_cache(cfg.out) as c:
        assert c.epoch(0)[1].min() > 1e35
    dump.verify_cache(cfg.out, tmp_path / "big", k=50, device="cpu", data_dir=data_dir, download=False)  # its whole clean and test logits too


def test_an_epoch_whose_logits_float16_cannot_hold_is_refused(tmp_path, teacher, data_dir, monkeypatch):
    """The clean images' logits fit, an augmented epoch's do not: refused as it is labelled, not written."""
    labels = dump.teacher_logits

    def overflowing_views(labeller, images, aug, *args, **kwargs):
        logits = labels(labeller, images, aug, *args, **kwargs)
        return logits if aug is None else logits * 1e5

    monkeypatch.setattr(dump, "teacher_logits", overflowing_views)
    with pytest.raises(KdcliError, match="exceed float16's range"):
        dump_logits(config(tmp_path, teacher, data_dir, dtype="float16", epochs=2), progress=False)
    assert cache.cache_info(tmp_path / "c.h5")["epochs_complete"] == 0


def test_verify_reads_the_dumps_images_back_when_not_given(tmp_path, teacher, data_dir):
    cfg = config(tmp_path, teacher, data_dir, epochs=1)
    dump_logits(cfg, progress=False)
    path = cfg.out
    assert dump.verify_cache(path, teacher, k=8, device="cpu", download=False)["data_dir"] == str(data_dir)


def test_a_teacher_of_more_images_than_the_folder_holds_is_warned_of(tmp_path, data_dir):
    from conftest import write_cifar_folder

    from kdcli.config import TeacherConfig
    from kdcli.train import train_teacher

    train_teacher(TeacherConfig(model="lenet5", epochs=1, lr_milestones=(), batch_size=64, device="cpu", quiet=True,
                                data_dir=str(data_dir), out=str(tmp_path / "t")), progress=False)  # all 200 images  # fmt: skip
    fewer = write_cifar_folder(tmp_path / "fewer", seed=1, train_per_batch=10)  # 50 other images
    with pytest.warns(UserWarning, match="it labels images it never saw"):
        cfg = config(tmp_path, tmp_path / "t", fewer, epochs=1)
        dump_logits(cfg, progress=False)
    path = cfg.out
    assert cache.cache_info(path)["attrs"]["teacher_train_images"] == 0


def test_a_last_batch_of_a_single_image_is_labelled(tmp_path, reference, teacher, data_dir):
    """200 training images in batches of 199 (and 60 test images in batches of 59) end in a batch of one image:
    it must be labelled like every other, or the cache is one logit short of its labels (a student would then
    learn image i from the logits of another)."""
    cfg = config(tmp_path, teacher, data_dir, epochs=1, batch_size=199)
    dump_logits(cfg, progress=False)
    got, want = contents(cfg.out), contents(reference[0])
    for name in ("clean_logits", "test_logits"):
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(got["logits"][0], want["logits"][0], atol=1e-4)  # epoch 0: the same views


def test_compile_has_no_effect_off_cuda(tmp_path, teacher, data_dir, monkeypatch):
    """--compile (on by default) compiles for CUDA only: a dump on the CPU runs eagerly, as --help says, without
    torch.compile's start-up cost (tens of seconds) or its need of a working C compiler."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.compile called for a CPU dump")

    monkeypatch.setattr(torch, "compile", refuse)
    summary = dump_logits(config(tmp_path, teacher, data_dir, epochs=1, compile=True), progress=False)
    assert summary["epochs_written"] == 1


def test_a_compiled_labeller_compiles_once_and_labels_as_the_eager_one(tmp_path, teacher, data_dir, monkeypatch, reference):
    """On CUDA the dump compiles its labeller, once: the smaller last batches (here 200 = 3 x 64 + 8 training images,
    and the 60 test images) are padded to the full batch, and every batch meets the guards the first one set."""
    from torch._dynamo.utils import counters

    compile = torch.compile
    # Dynamo's tracing and guards as on CUDA; the "eager" backend runs the traced graph instead of generating kernels.
    monkeypatch.setattr(torch, "compile", lambda label, dynamic: compile(label, dynamic=dynamic, backend="eager"))
    monkeypatch.setattr(dump, "compiles", lambda config, device: True)
    torch._dynamo.reset()
    counters.clear()
    cfg = config(tmp_path, teacher, data_dir)
    dump_logits(cfg, progress=False)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    got, want = contents(cfg.out), contents(reference[0])
    for name in cache.DATASETS:  # a convolution may add in another order for another batch size
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_a_pass_padded_for_a_compiled_labeller_copies_nothing_from_the_host():
    """On CUDA a copy from the host (pageable memory, non_blocking=False) is a stream sync: made for the padding of a
    pass's last batch, it stopped the host once per epoch until every batch queued before it was labelled, while it
    should be collecting the previous epoch. Simulated on the 'meta' device, standing for the GPU: with the images
    and params there already, no tensor of the pass may come from the CPU; the padding is the unaugmented view."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class FromTheHost(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.copies = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = [a.device.type for a in args if isinstance(a, torch.Tensor)]
            if "cpu" in inputs and isinstance(out, torch.Tensor) and out.device.type == "meta":
                self.copies.append(str(func))
            return out

    seen = []

    def labeller(images, p):  # the compiled teacher's stand-in: one row of logits per view, on the device
        seen.append(p)
        return torch.empty(len(images), 10, device=images.device)

    images = torch.empty(200, 3, 32, 32, dtype=torch.uint8, device="meta")  # 4 x 48 + 8
    aug = torch.empty(200, 3, dtype=torch.int8, device="meta")
    with FromTheHost() as host:
        logits = dump.teacher_logits(dump.padded_to(48, labeller), images, aug, 48)
    assert host.copies == [] and logits.shape == (200, 10) and [len(p) for p in seen] == [48] * 5
    cpu_params = []
    dump.padded_to(48, lambda images, p: cpu_params.append(p) or torch.zeros(len(images), 10))(torch.zeros(8, 3, 32, 32, dtype=torch.uint8), augment.params(0, 0, 8))
    assert torch.equal(cpu_params[0][8:], augment.unaugmented(40))


@pytest.mark.parametrize("triton", [True, False], ids=["triton", "no triton"])
def test_where_torch_compile_cannot_serve_the_gpu_the_dump_labels_eagerly_and_says_so(tmp_path, teacher, data_dir, monkeypatch, triton):
    """On CUDA the dump compiles by default. Without Triton for the GPU (Windows, a P100) compiling would fail at the
    first batch: a default must not, so the dump labels eagerly with a warning (tests/test_cuda.py runs such a dump)."""
    monkeypatch.setattr("torch.utils._triton.has_triton", lambda: triton)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert dump.compiles(config(tmp_path, teacher, data_dir), torch.device("cuda")) is triton
        assert not dump.compiles(config(tmp_path, teacher, data_dir, compile=False), torch.device("cuda"))
        assert not dump.compiles(config(tmp_path, teacher, data_dir), torch.device("cpu"))
    assert [str(w.message).split(":")[0] for w in said] == ([] if triton else ["torch.compile finds no Triton for this GPU"])


def test_a_relative_teacher_is_recorded_as_an_absolute_path(tmp_path, teacher, data_dir, monkeypatch):
    """`--teacher runs/teacher` given relative to where dump-logits ran: the cache records it absolute, so that
    `cache-info --verify` (and a student's report) finds the teacher from any other folder."""
    monkeypatch.chdir(teacher.parent)
    cfg = config(tmp_path, Path(teacher.name), data_dir, epochs=1)  # relative to the folder holding it
    dump_logits(cfg, progress=False)
    assert cache.cache_info(cfg.out)["attrs"]["config"]["teacher"] == str(teacher.resolve())
    monkeypatch.chdir(tmp_path)  # elsewhere: the teacher is found all the same
    assert dump.verify_cache(cfg.out, k=8, device="cpu", data_dir=data_dir, download=False)["entries"] == 8


def test_a_dump_puts_the_signal_handlers_back(tmp_path, teacher, data_dir):
    """A dump handles Ctrl-C and SIGTERM itself only while it labels: once dump_logits returns (a script or a
    notebook calling it), Ctrl-C must interrupt again and SIGTERM end the process, not set a flag nobody reads."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    dump_logits(config(tmp_path, teacher, data_dir, epochs=1), progress=False)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_verify_reports_the_largest_difference_of_every_epoch_checked(tmp_path, teacher, data_dir):
    """cache-info --verify prints max_difference as the worst entry checked: a small difference in epoch 0 (under
    the tolerance, so the cache passes) must show even though epoch 1, checked last, matches exactly."""
    cfg = config(tmp_path, teacher, data_dir, epochs=2)
    dump_logits(cfg, progress=False)
    with h5py.File(cfg.out, "r+") as f:
        f["logits"][0, 0] = f["logits"][0, 0] + 0.01  # epoch 0, image 0: every class 0.01 off
    result = dump.verify_cache(cfg.out, teacher, k=400, device="cpu", data_dir=data_dir, download=False)
    assert result["entries"] == 400 and result["max_difference"] == pytest.approx(0.01, abs=1e-4)


def test_verify_measures_a_small_logit_entry_against_at_least_1(tmp_path, teacher, data_dir):
    """A difference is relative to an entry's largest |logit|, but never to less than 1: a barely trained teacher
    (logits all near 0) recomputed on another device differs by a few hundredths, which must not fail a sound
    cache as 'damaged' (while the same 0.015 on logits of ~5 would be far under the tolerance anyway)."""
    state = torch.load(teacher / "checkpoint.pt")
    state["model"]["fc3.weight"].zero_()
    state["model"]["fc3.bias"][:] = 0.1  # every logit 0.1
    torch.save(state, tmp_path / "flat.pt")
    cfg = config(tmp_path, tmp_path / "flat.pt", data_dir, epochs=1)
    dump_logits(cfg, progress=False)
    with h5py.File(cfg.out, "r+") as f:
        f["logits"][0, 0] = f["logits"][0, 0] + 0.015  # 1.5% of 1 (under float32's 2%), 15% of 0.1
    result = dump.verify_cache(cfg.out, tmp_path / "flat.pt", k=200, device="cpu", data_dir=data_dir, download=False)
    assert result["max_relative"] == pytest.approx(0.015, abs=1e-4)


# ---------------------------------------------------------------- found by mutation testing (2026-11-27, second round)


def test_logits_float16_holds_are_stored_and_read_even_where_their_sum_is_beyond_it(tmp_path, teacher, data_dir):
    """Logits of 1,000 fit float16 (up to 65,504); an epoch's sum of them does not: neither the dump's check nor a
    reader's may take that sum for an inf logit."""
    state = torch.load(teacher / "checkpoint.pt")
    state["model"]["fc3.weight"].zero_()
    state["model"]["fc3.bias"][:] = 1000.0
    torch.save(state, tmp_path / "large.pt")
    cfg = config(tmp_path, tmp_path / "large.pt", data_dir, epochs=1, dtype="float16")
    dump_logits(cfg, progress=False)
    with cache.open_cache(cfg.out) as c:
        assert (c.epoch(0)[1] == 1000).all() and (c.test_logits == 1000).all()


def test_test_set_logits_float16_cannot_hold_are_refused(tmp_path, teacher, data_dir, monkeypatch):
    """The training images' logits fit, the test images' do not: refused, not stored as inf."""
    labels = dump.teacher_logits

    def overflowing_test_set(labeller, images, aug, *args, **kwargs):
        logits = labels(labeller, images, aug, *args, **kwargs)
        return logits * 1e5 if len(images) == TEST_IMAGES else logits

    monkeypatch.setattr(dump, "teacher_logits", overflowing_test_set)
    with pytest.raises(KdcliError, match="exceed float16's range"):
        dump_logits(config(tmp_path, teacher, data_dir, dtype="float16", epochs=1), progress=False)


def test_a_quiet_dump_writes_nothing_to_stderr(tmp_path, teacher, data_dir, capsys):
    """No progress bar, no line before it, and no word of a Ctrl-C that never came."""
    dump_logits(config(tmp_path, teacher, data_dir, epochs=1))  # quiet, and not interrupted
    assert capsys.readouterr().err == ""


def test_a_teacher_of_before_val_size_is_said_to_have_seen_its_subset(tmp_path, teacher, data_dir):
    """Its checkpoint records no train_images: its --subset says how many of the first images it trained on."""
    state = torch.load(teacher / "checkpoint.pt")
    torch.save({**state, "config": {"subset": 50}}, tmp_path / "old.pt")
    dump_logits(config(tmp_path, tmp_path / "old.pt", data_dir, epochs=1), progress=False)
    assert cache.cache_info(tmp_path / "c.h5")["attrs"]["teacher_train_images"] == 50


def test_a_dump_into_folders_that_do_not_exist_yet_makes_them(tmp_path, teacher, data_dir):
    cfg = config(tmp_path / "new" / "nested", teacher, data_dir, epochs=1)
    dump_logits(cfg, progress=False)
    assert cache.cache_info(cfg.out)["epochs_complete"] == 1


def test_verify_without_the_teacher_says_to_pass_one(tmp_path, teacher, data_dir):
    folder = tmp_path / "teacher"
    shutil.copytree(teacher, folder)
    cfg = config(tmp_path, folder, data_dir, epochs=1)
    dump_logits(cfg, progress=False)
    shutil.rmtree(folder)
    with pytest.raises(KdcliError, match=r"no teacher at .*teacher to verify .*c.h5 with: pass --teacher"):
        dump.verify_cache(cfg.out, k=8, device="cpu", data_dir=data_dir, download=False)


def test_a_student_of_the_defaults_reads_the_cache_a_dump_of_the_defaults_writes():
    """`kdcli dump-logits`, then `kdcli train-student`, neither given --out, --cache or --epochs: the student reads the
    cache the dump wrote, each cached epoch once (a shorter cache is read again from its start, with a warning)."""
    assert (DumpConfig().out, DumpConfig().epochs) == (StudentConfig().cache, StudentConfig().epochs)


@pytest.mark.parametrize("k", [0, -1])
def test_verify_of_no_entries_is_refused_not_passed(tmp_path, teacher, data_dir, k):
    """A library caller's verify_cache(k=0) would say the cache is sound having compared nothing."""
    cfg = config(tmp_path, teacher, data_dir, epochs=1)
    dump_logits(cfg, progress=False)
    with pytest.raises(KdcliError, match=f"--verify {k}: must be at least 1 entry"):
        dump.verify_cache(cfg.out, teacher, k=k, device="cpu", data_dir=data_dir, download=False)


def test_verify_run_again_checks_the_same_entries(tmp_path, teacher, data_dir):
    """`cache-info --verify K` on the same cache answers the same each time: a bf16 cache near its tolerance must
    not pass once and fail the next time."""
    cfg = config(tmp_path, teacher, data_dir, epochs=2)
    dump_logits(cfg, progress=False)
    with h5py.File(cfg.out, "r+") as f:  # each image off by its own amount, under the tolerance: the largest says which were checked
        f["logits"][:] = f["logits"][:] + np.linspace(0, 0.01, 200, dtype=np.float32)[None, :, None]
    verified = [dump.verify_cache(cfg.out, teacher, k=8, device="cpu", data_dir=data_dir, download=False)["max_difference"] for _ in range(3)]
    assert verified[0] == verified[1] == verified[2]


# ---------------------------------------------------------------- found by mutation testing (third round)


def test_a_dump_without_progress_prints_nothing_even_when_ctrl_c_came_too_late(tmp_path, teacher, data_dir, monkeypatch, capsys):
    """dump_logits(progress=False), a library caller's: no word on stdout or stderr, as train_teacher(progress=False)
    (the "stopping at the next safe point" line is the signal handler's raw write to fd 2)."""
    write = cache.CacheWriter.write_epoch

    def ctrl_c_at_the_last_epoch(writer, e, *args):
        if e == E - 1:
            os.kill(os.getpid(), signal.SIGINT)
        write(writer, e, *args)

    monkeypatch.setattr(cache.CacheWriter, "write_epoch", ctrl_c_at_the_last_epoch)
    assert dump_logits(config(tmp_path, teacher, data_dir, quiet=False), progress=False)["epochs_complete"] == E
    assert capsys.readouterr() == ("", "")


def test_verify_measures_each_entry_against_its_own_largest_logit(tmp_path, teacher, data_dir):
    """3% off on the entry of the smallest logits fails a float32 cache (tolerance 2%), though it is under 2% of the
    largest logit of its epoch: measured against the epoch's, damage to small-logit entries would hide behind large ones."""
    cfg = config(tmp_path, teacher, data_dir, epochs=1)
    dump_logits(cfg, progress=False)
    with h5py.File(cfg.out, "r+") as f:
        logits = f["logits"][0]  # [N, C]
        largest = np.abs(logits).max(1)
        i = int(largest.argmin())
        assert largest[i] * 0.03 < 0.02 * largest.max()  # the premise: under the tolerance relative to the epoch's largest
        f["logits"][0, i] = logits[i] * 1.03
    with pytest.raises(KdcliError, match="fails verification"):
        dump.verify_cache(cfg.out, teacher, k=200, device="cpu", data_dir=data_dir, download=False)


@pytest.mark.parametrize("target", ["a cache", "no file yet"])
def test_a_dump_into_a_link_writes_the_file_it_links_to_and_keeps_the_link(tmp_path, teacher, data_dir, reference, target):
    """cache/logits.h5 linked to a cache on a larger disk: the new file was renamed over the link, and the linked
    file kept the old logits, which its other readers went on reading."""
    (tmp_path / "disk").mkdir()
    real, link = tmp_path / "disk" / "c.h5", tmp_path / "link.h5"
    if target == "a cache":
        shutil.copy(reference[0], real)
    link.symlink_to(real)
    summary = dump_logits(replace(config(tmp_path, teacher, data_dir, epochs=2, force=True), out=str(link)), progress=False)
    assert link.is_symlink() and link.resolve() == real and summary["path"] == str(real)
    assert cache.cache_info(real)["epochs"] == 2  # the new cache, where the link points
    assert (tmp_path / "disk" / "c.h5.lock").exists() and not (tmp_path / "link.h5.lock").exists()  # one lock, whichever name is given
