"""GPU-only checks (skipped without CUDA): the fast paths compute what the plain ones do.

Run on a GPU machine with `python -m pytest tests/test_cuda.py`. Without one, `KDCLI_TEST_DEVICE=cpu` runs the file
on the CPU to find tests that no longer fit the code (9 of 25 pass there; the others fail for want of CUDA, fp16 or
Inductor). CI does not: on a CPU a graphed step is an eager one, so what passes there shows nothing of the GPU.
"""

import contextlib
import functools
import json
import os
import signal
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from conftest import write_lenet_teacher

import kdcli.group as group_module
from kdcli import KdcliError, augment
from kdcli.checkpoint import save_atomic
from kdcli.config import StudentConfig, TeacherConfig
from kdcli.data import load_cifar10
from kdcli.dump import DumpConfig, dump_logits, teacher_logits, verify_cache, view_labeller
from kdcli.evaluate import load_model, model_from, predict, top1
from kdcli.group import Group, TrainingInterrupted
from kdcli.losses import distillation_loss
from kdcli.models import create_model
from kdcli.runs import DrawnAugmentation, Run
from kdcli.train import train_runs, train_student, train_teacher

DEVICE = os.environ.get("KDCLI_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


def train(tmp_path, name, config_class, seeds, data_dir, device=DEVICE, **options):
    data = load_cifar10(data_dir, device, options.get("subset"))
    runs = [
        Run(config_class(out=str(tmp_path / f"{name}{s}"), seed=s, device=device, data_dir=str(data_dir), **options), DrawnAugmentation(s, len(data.train_labels)))
        for s in seeds
    ]
    train_runs(runs, data, torch.device(device), progress=False)
    return [torch.load(r.dir / "checkpoint.pt", weights_only=True)["model"] for r in runs]


@pytest.fixture(autouse=True)
def deterministic_cudnn(monkeypatch):
    """cuDNN's default backward kernels add with atomics in any order: two eager runs differ by ~1e-5 too."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


@contextlib.contextmanager
def ctrl_c_at_step(n, monkeypatch):
    """Ctrl-C during eager step n (counted by the loss it computes; a CUDA graph computes none in Python)."""
    calls = [0]

    def loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGINT)
        return distillation_loss(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(group_module, "distillation_loss", loss)
        yield


def assert_close_weights(a, b, atol):
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=atol), (key, (a[key].float() - b[key].float()).abs().max())


@pytest.mark.parametrize("seeds", [(1,), (1, 2, 3)], ids=["one", "stacked"])
def test_cuda_graph_steps_equal_eager_steps(tmp_path, data_dir, seeds):
    options = dict(model="lenet5", epochs=2, batch_size=32, data_dir=data_dir, distillation_weight=0.0, amp="off")
    graphed = train(tmp_path, "graph", StudentConfig, seeds, cuda_graphs=True, **options)
    eager = train(tmp_path, "eager", StudentConfig, seeds, cuda_graphs=False, **options)
    for g, e in zip(graphed, eager):
        assert_close_weights(g, e, atol=1e-5)


@pytest.mark.parametrize("cuda_graphs", [True, False], ids=["graphed", "eager"])
def test_the_scheduled_lr_reaches_the_optimizer_on_cuda_also_after_a_resume(tmp_path, data_dir, cuda_graphs):
    """On CUDA the lr is a device tensor that the fused optimizer and the graph read, re-linked after loading a
    checkpoint: a schedule that missed it would train at 0.1 throughout. Here the lr drops to ~0 after epoch 1."""
    options = dict(model="lenet5", batch_size=32, data_dir=data_dir, distillation_weight=0.0, amp="off", cuda_graphs=cuda_graphs,
                   lr_milestones=(1,), lr_gamma=1e-12)  # fmt: skip
    (one,) = train(tmp_path, "one", StudentConfig, (1,), epochs=1, **options)
    (two,) = train(tmp_path, "two", StudentConfig, (1,), epochs=2, **options)
    assert_close_weights(two, one, atol=1e-6)  # epoch 2 moved nothing
    state = torch.load(tmp_path / "one1" / "checkpoint.pt", weights_only=True)
    state["config"]["epochs"] = 2  # now the checkpoint of a 2-epoch run stopped after its first epoch
    save_atomic(state, tmp_path / "one1" / "checkpoint.pt")
    started = json.loads((tmp_path / "one1" / "config.json").read_text())
    (tmp_path / "one1" / "config.json").write_text(json.dumps({**started, "epochs": 2}))  # which resume checks it against
    (tmp_path / "one1" / "summary.json").unlink()
    (resumed,) = train(tmp_path, "one", StudentConfig, (1,), epochs=2, resume=True, **options)
    assert_close_weights(resumed, one, atol=1e-6)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_graph_teacher_with_batch_norm_equals_eager(tmp_path, data_dir, amp):
    """fp16 adds the loss scale: its overflow check and skipped steps must happen inside the graph too."""
    options = dict(model="resnet18", epochs=1, batch_size=32, data_dir=data_dir, amp=amp, subset=160)
    graphed = train(tmp_path, "graph", TeacherConfig, (7,), cuda_graphs=True, **options)
    eager = train(tmp_path, "eager", TeacherConfig, (7,), cuda_graphs=False, **options)
    assert_close_weights(graphed[0], eager[0], atol=1e-2)  # autocast: cuDNN may pick other kernels


def test_a_compiled_teacher_compiles_once_and_trains_like_an_eager_one(tmp_path, data_dir):
    """--compile: one compile for the run (the smaller last batch, 200 = 6 x 32 + 8, runs eagerly), the same training."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    options = dict(model="resnet8", epochs=2, batch_size=32, lr=0.01, data_dir=data_dir, amp="off")
    compiled = train(tmp_path, "compiled", TeacherConfig, (7,), compile=True, **options)
    graphs = dict(counters["stats"])
    eager = train(tmp_path, "eager", TeacherConfig, (7,), compile=False, **options)
    assert graphs["unique_graphs"] == 1, graphs
    assert_close_weights(compiled[0], eager[0], atol=1e-2)  # H100: 1.2e-3 apart (fused kernels add in another order; 3.6e-2 at lr 0.1)


def test_fp16_loss_scale_is_checkpointed_and_resumed(tmp_path, data_dir, monkeypatch):
    """An fp16 run stopped by Ctrl-C mid-epoch resumes with the loss scale it had, not a fresh 65,536."""
    options = dict(model="resnet8", epochs=2, batch_size=32, data_dir=data_dir, amp="fp16", lr_milestones=(), cuda_graphs=False)  # a graph calls no Python loss
    with pytest.raises(TrainingInterrupted), ctrl_c_at_step(9, monkeypatch):  # epoch 2, step 2 of 7 (200 images, batch 32)
        train(tmp_path, "run", TeacherConfig, (7,), **options)
    path = tmp_path / "run7" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    assert state["step"] == 2 and set(state["loss_scale"]) >= {"scale", "_growth_tracker"}
    state["loss_scale"].update(scale=1024.0, _growth_tracker=100)  # marked, to be recognised after the resume
    torch.save(state, path)
    train(tmp_path, "run", TeacherConfig, (7,), resume=True, **options)
    resumed = torch.load(path, weights_only=True)["loss_scale"]
    assert (resumed["scale"], resumed["_growth_tracker"]) == (1024.0, 105)  # 5 more steps, none overflowing at 1024
    recorded = json.loads((tmp_path / "run7" / "config.json").read_text())
    assert (recorded["resolved_device"], recorded["precision"]) == (f"cuda: {torch.cuda.get_device_name()}", "float16") and "torch_threads" not in recorded


def test_an_fp16_step_skipped_for_overflow_leaves_weights_and_momentum_as_they_were(tmp_path, data_dir, monkeypatch):
    """A loss scale of 2^100 overflows every step of the epoch: each is skipped. Fused SGD allocates its momentum
    on its first step; skipped, that memory would stay unwritten, and every later step would build on it."""
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, init_scale=2.0**100))
    options = dict(model="resnet8", epochs=1, batch_size=32, data_dir=data_dir, amp="fp16", lr_milestones=())
    train(tmp_path, "run", TeacherConfig, (7,), **options)
    state = torch.load(tmp_path / "run7" / "checkpoint.pt", weights_only=True)
    torch.manual_seed(7)
    initial = create_model("resnet8").state_dict()
    for key, value in initial.items():
        if "running" not in key and "num_batches" not in key:  # batch norm's statistics do move in a skipped step's forward
            assert torch.equal(state["model"][key].cpu(), value), key
    momentum = [s["momentum_buffer"] for s in state["optimizer"]["state"].values()]
    assert momentum and all(not m.any() for m in momentum)
    assert state["loss_scale"]["scale"] < 2.0**100  # it did overflow, 7 times


def dump(tmp_path, data_dir, name, **options):
    """A 2-epoch cache of an untrained ResNet8 teacher; its path."""
    teacher = tmp_path / "teacher" / "checkpoint.pt"
    if not teacher.exists():
        torch.manual_seed(0)
        teacher.parent.mkdir()
        save_atomic({"model": create_model("resnet8").state_dict(), "model_name": "resnet8", "num_classes": 10}, teacher)
    out = tmp_path / f"{name}.h5"
    config = DumpConfig(teacher=str(teacher), epochs=2, dtype="float32", batch_size=48, out=str(out), data_dir=str(data_dir),
                        download=False, device=DEVICE, quiet=True, **options)  # fmt: skip
    dump_logits(config, progress=False)
    return out


def test_compiled_dump_compiles_once_and_equals_eager(tmp_path, data_dir):
    """One compile for the dump: the last batches (200 = 4 x 48 + 8 training images, 60 test images) are padded to 48."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = dump(tmp_path, data_dir, "compiled", amp="off", compile=True)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    eager = dump(tmp_path, data_dir, "eager", amp="off", compile=False)
    with h5py.File(compiled) as a, h5py.File(eager) as b:
        for key in ("logits", "clean_logits", "test_logits"):
            np.testing.assert_allclose(a[key][()], b[key][()], atol=1e-3, err_msg=key)  # fused kernels add in another order


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
def test_a_labelling_pass_never_waits_for_the_device(data_dir, compiled):
    """The dump queues epoch e+1 on the GPU while the host collects epoch e: a host sync inside a pass stops the host
    until every batch queued before it is labelled. Compiled, the last batch (200 = 4 x 48 + 8) is padded to 48;
    its padding's params once came from the host, a sync per epoch. CUDA's sync debug mode raises on any."""
    data = load_cifar10(data_dir, DEVICE)
    torch.manual_seed(0)
    model = model_from({"model_name": "resnet8", "model": create_model("resnet8").state_dict()}, torch.device(DEVICE), "resnet8")
    label = view_labeller(model, torch.bfloat16, compiled, 48)
    aug = augment.params(0, 0, len(data.train_labels)).to(DEVICE)  # on the device already: the pass's own copy is its one sync
    torch._dynamo.reset()
    warm = teacher_logits(label, data.train_images, aug, 48)  # compiles; cuDNN and Inductor may wait for the device here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        logits = teacher_logits(label, data.train_images, aug, 48)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.equal(logits, warm)


@pytest.mark.parametrize("model, seeds, amp, cuda_graphs", [("lenet5", (1, 2), "bf16", True), ("lenet5", (1,), "bf16", False), ("resnet8", (7,), "fp16", True)],
                         ids=["stacked-graphed", "eager", "fp16-graphed"])  # fmt: skip
def test_the_steps_of_an_epoch_never_wait_for_the_device(tmp_path, data_dir, model, seeds, amp, cuda_graphs):
    """No host sync between an epoch's steps (README: losses and hits stay on the GPU, the lr is a device tensor),
    the smaller last batch's eager step included: watched by CUDA's sync debug mode in epoch 2, from the end of its
    first step to its last, after epoch 1 captured the graph. A check added inside the loop would fail here."""
    config_class, extra = (TeacherConfig, {}) if model == "resnet8" else (StudentConfig, {"distillation_weight": 0.0})
    data = load_cifar10(data_dir, DEVICE)
    runs = [
        Run(config_class(model=model, seed=s, batch_size=32, amp=amp, cuda_graphs=cuda_graphs, out=str(tmp_path / f"r{s}"), **extra), DrawnAugmentation(s, len(data.train_labels)))
        for s in seeds
    ]  # fmt: skip
    group, no_stop, steps = Group(runs, data, torch.device(DEVICE)), SimpleNamespace(requested=False), []
    group.train_epoch(no_stop)  # epoch 1: the warm-up steps and the capture, which wait for the device
    group.epoch, group.partial = 1, None

    def on_step(b):  # called after each step is queued
        steps.append(b)
        torch.cuda.set_sync_debug_mode("error" if len(steps) < group.steps else 0)  # off for the epoch's closing synchronize

    try:
        group.train_epoch(no_stop, on_step=on_step)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len(steps) == group.steps == 7 and steps[-1] == 8


def test_a_finished_group_frees_its_gpu_memory_without_a_garbage_collection(tmp_path, data_dir, monkeypatch):
    """A sweep trains its groups one after another: a group's weights and CUDA graph pool must go when it ends, not at
    Python's next garbage collection, groups later (a Group and its GraphedStep held each other: a sweep of ResNet
    students would pile up their graphs' memory). Garbage collection is off, so that only references can free them."""
    import gc
    import weakref

    import kdcli.train as train_module

    made = []

    def group(*args, **kwargs):
        g = Group(*args, **kwargs)
        made.append(weakref.ref(g))
        return g

    monkeypatch.setattr(train_module, "Group", group)
    options = dict(model="resnet8", epochs=1, batch_size=32, distillation_weight=0.0, amp="bf16", cuda_graphs=True)
    train(tmp_path, "warm", StudentConfig, (1,), data_dir, **options)  # torch's first imports and captures leave cycles of their own
    data = load_cifar10(data_dir, DEVICE)
    run = Run(StudentConfig(out=str(tmp_path / "run"), seed=2, device=DEVICE, data_dir=str(data_dir), **options), DrawnAugmentation(2, len(data.train_labels)))
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    gc.disable()
    try:
        train_runs([run], data, torch.device(DEVICE), progress=False)
        assert made[-1]() is None
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() == before
    finally:
        gc.enable()


def test_a_dump_where_torch_compile_finds_no_triton_labels_eagerly(tmp_path, data_dir, monkeypatch):
    """A GPU torch.compile cannot serve (Windows, a P100): the default --compile gives way to eager labels, not an error."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.compile called without Triton")

    monkeypatch.setattr("torch.utils._triton.has_triton", lambda: False)
    monkeypatch.setattr(torch, "compile", refuse)
    with pytest.warns(UserWarning, match="no Triton"):
        out = dump(tmp_path, data_dir, "fallback", compile=True)
    with h5py.File(out) as f:
        assert f["epochs_complete"][()] == 2


def test_cuda_graph_cached_kd_student_equals_eager(tmp_path, data_dir):
    cache = dump(tmp_path, data_dir, "c")
    weights = []
    for graphs in (True, False):
        out = tmp_path / f"student-{graphs}"
        train_student(StudentConfig(cache=str(cache), temperature=4.0, distillation_weight=0.5, epochs=2, batch_size=32, amp="off",
                                    cuda_graphs=graphs, out=str(out), data_dir=str(data_dir), device=DEVICE, download=False), progress=False)  # fmt: skip
        weights.append(torch.load(out / "checkpoint.pt", weights_only=True)["model"])
    assert_close_weights(*weights, atol=1e-5)


@pytest.mark.parametrize("teacher_amp, dump_amp", [("fp16", "bf16"), ("bf16", "fp16")], ids=["its own", "one this GPU lacks"])
def test_the_teachers_accuracy_takes_a_pass_of_its_own_in_its_precision(tmp_path, data_dir, monkeypatch, teacher_amp, dump_amp):
    """The number train-teacher and evaluate print: on a GPU, not counted on the dump's own pass over the test set (in its
    --amp, and compiled by default) but taken in the teacher's --amp; where this GPU lacks it (a bf16 teacher dumped with
    --amp fp16 on a GPU without bf16), in the dump's, and the dump goes on."""
    from kdcli import dump as dump_module

    state = torch.load(write_lenet_teacher(tmp_path) / "checkpoint.pt", weights_only=True)
    torch.save({**state, "config": {"amp": teacher_amp}}, tmp_path / "teacher.pt")
    measured_in = []

    def without_bf16_where_the_dump_has_fp16(model, images, amp, **kw):
        if amp == "bf16" and dump_amp == "fp16":
            raise KdcliError("this GPU does not support bf16")
        return measured_in.append(amp) or predict(model, images, amp, **kw)

    monkeypatch.setattr(dump_module, "predict", without_bf16_where_the_dump_has_fp16)
    config = DumpConfig(teacher=str(tmp_path / "teacher.pt"), epochs=1, amp=dump_amp, compile=False, out=str(tmp_path / "c.h5"),
                        data_dir=str(data_dir), download=False, device=DEVICE, quiet=True)  # fmt: skip
    summary = dump_logits(config, progress=False)
    assert measured_in == ["fp16"]
    model, _ = load_model(tmp_path / "teacher.pt", torch.device(DEVICE))
    data = load_cifar10(data_dir, DEVICE)
    assert summary["teacher_test_accuracy"] == top1(predict(model, data.test_images, "fp16"), data.test_labels)  # fp16: the teacher's own, or the dump's where bf16 is missing


def test_resume_refuses_another_precision(tmp_path, data_dir):
    """A bf16 dump resumed without --amp would mix bf16 and float32 epochs in one cache: refused."""
    out = dump(tmp_path, data_dir, "bf16", amp="bf16")
    with h5py.File(out, "r+") as f:
        f["epochs_complete"][()] = 1  # as a dump stopped after its first epoch leaves it
    with pytest.raises(KdcliError, match=r"teacher_precision bfloat16 \(now float32\)"):
        dump(tmp_path, data_dir, "bf16", amp="off")


def test_stacked_students_stopped_mid_epoch_resume_alone(tmp_path, data_dir, monkeypatch):
    """Two students stacked (contiguous weights), Ctrl-C mid-epoch, each resumed alone (channels_last weights,
    fused SGD): the momentum buffers must take the new layout, and each ends as it would have."""
    options = dict(model="lenet5", epochs=2, batch_size=32, data_dir=data_dir, distillation_weight=0.0, amp="off", cuda_graphs=False)
    reference = train(tmp_path, "reference", StudentConfig, (1, 2), **options)
    with pytest.raises(TrainingInterrupted), ctrl_c_at_step(9, monkeypatch):  # epoch 2, step 2 of 7 (200 images, batch 32)
        train(tmp_path, "run", StudentConfig, (1, 2), **options)
    resumed = [train(tmp_path, "run", StudentConfig, (s,), resume=True, **options)[0] for s in (1, 2)]
    for a, b in zip(resumed, reference):
        assert_close_weights(a, b, atol=1e-2)  # stacked (a grouped convolution) and alone run other TF32 kernels


def test_val_accuracy_is_the_checkpoints_accuracy_on_the_held_out_images(tmp_path, data_dir):
    config = TeacherConfig(model="resnet8", epochs=1, batch_size=32, lr_milestones=(), subset=200, val_size=50, device=DEVICE,
                           data_dir=str(data_dir), out=str(tmp_path / "teacher"), quiet=True)  # fmt: skip
    summary = train_teacher(config, progress=False)
    data = load_cifar10(data_dir, subset=200)
    model, _ = load_model(tmp_path / "teacher", torch.device(DEVICE))
    hits = (predict(model, data.train_images[150:].to(DEVICE), "fp16").argmax(1).cpu() == data.train_labels[150:]).float().mean().item()
    assert summary["val_accuracy"] == pytest.approx(100 * hits, abs=2.01)  # within one image: fp16 logits may tie


def test_an_fp16_dump_records_its_precision_and_verifies(tmp_path, data_dir):
    out = dump(tmp_path, data_dir, "fp16", amp="fp16")
    with h5py.File(out) as f:
        assert f.attrs["teacher_precision"] == "float16" and f.attrs["resolved_device"] == f"cuda: {torch.cuda.get_device_name()}"
    verified = verify_cache(out, device=DEVICE, data_dir=str(data_dir), download=False)
    assert verified["entries"] == 256 and verified["max_difference"] < 0.05  # recomputed eagerly under fp16: its rounding, not bf16's


def test_a_real_cuda_out_of_memory_is_said_in_one_line_with_what_was_asked_and_free(tmp_path, data_dir, monkeypatch):
    """The CLI cuts torch's message to its numbers: its wording is the allocator's, checked here on a real one."""
    import re

    from typer.testing import CliRunner

    import kdcli.cli as cli_module

    def a_terabyte(*args, **kwargs):
        return torch.empty(2**40, dtype=torch.uint8, device=DEVICE)

    monkeypatch.setattr(cli_module, "evaluate_checkpoint", a_terabyte)
    result = CliRunner().invoke(cli_module.app, ["evaluate", str(write_lenet_teacher(tmp_path)), "--data-dir", str(data_dir)])
    assert result.exit_code == 1, result.output
    said = r"error: out of GPU memory \(it tried to allocate [\d.]+ \w+; [\d.]+ \w+ of [\d.]+ \w+ was free\): free the GPU of other processes, or pass --device cpu"
    assert re.fullmatch(said, result.stderr.strip()), result.stderr
