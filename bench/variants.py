"""The variants behind kdcli's speed choices, each measured beside the default in one process.

    PYTHONPATH=. python3 bench/variants.py                     # all sections, on a CUDA GPU: a few minutes (compiling included)
    PYTHONPATH=. python3 bench/variants.py infer --data-dir data
    python bench/variants.py --smoke --device cpu              # CI: it runs; proves nothing about speed

teacher  one teacher epoch (batch 128) as kdcli trains it, against: cuDNN autotuning off, eager steps
         (no CUDA graph), NCHW instead of channels_last, --compile, bf16 autocast instead of fp16
         (batch norm then runs in PyTorch's kernels, not cuDNN's), and fp16 without its loss scale
         (what the scale costs; kdcli never trains so); each variant in a process of its own (cuDNN
         keeps the algorithms it chose for a shape for the whole process, autotuned or not);
infer    bare teacher inference on ready views (what dump-logits pays per image): eager, with each batch
         norm folded into its convolution, and compiled, at several batch sizes;
dump     dump-logits' epoch loop at several batch sizes, against: HDF5 writes in the main thread, no
         writes, views built by eager kernels around the compiled teacher, and bare inference;
kd       a cached-KD LeNet-5 epoch against no KD, in interleaved rounds (their spread is the noise; 2 x repeat + 1),
         the kernels of one eager step of each (what KD adds to a step), and (CUDA) the KD epoch with
         its loss compiled, which kdcli does not do;
profile  the GPU kernels of eager teacher steps, most time first (where a step's time goes).

The README's "Tried and not kept" cites these numbers. Seconds are per 50,000-image epoch,
as in bench.py, whose helpers this uses.
"""

import argparse
import copy
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench.py's helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # kdcli from this checkout

import h5py
import numpy as np
import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils._python_dispatch import TorchDispatchMode

from bench import (
    FULL,
    at_least_one,
    bare_inference,
    dump_labellers,
    dump_without_writes,
    free_unreferenced,
    group_epoch,
    ready_views,
    save_teacher,
    student,
    timed,
    timed_rounds,
    write_synthetic_cifar,
)
from kdcli import augment, cache, losses
from kdcli import group as group_module
from kdcli.cache import open_cache
from kdcli.config import TeacherConfig
from kdcli.data import NotOfficialDataWarning, load_cifar10
from kdcli.device import autocast_dtype, resolve_device
from kdcli.dump import DumpConfig, compiles, dump_logits, teacher_logits, view_labeller
from kdcli.evaluate import forward_batch, model_from
from kdcli.group import Group
from kdcli.models import create_model
from kdcli.optimizer import make_optimizer
from kdcli.runs import CachedTargets, DrawnAugmentation, Run

SECTIONS = ("teacher", "infer", "dump", "kd", "profile")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and resnet8: checks that the script runs (CI)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (default: synthetic data)")
    p.add_argument("--images", type=at_least_one, help=f"training images (default {FULL:,}; smoke 128)")
    p.add_argument("--model", help="teacher architecture (default resnet18; smoke resnet8)")
    p.add_argument("--batches", help="inference batch sizes (default 1024,2048,4096; smoke 32,64)")
    p.add_argument("--repeat", type=at_least_one, default=2, help="timed epochs per measurement, after one warm-up")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # the teacher section runs each variant as `teacher --variant NAME`
    args = p.parse_args(argv)
    preset = dict(images=128, model="resnet8", batches="32,64") if args.smoke else dict(images=FULL, model="resnet18", batches="1024,2048,4096")
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if set(args.sections) - set(SECTIONS):
        p.error(f"unknown section(s) {', '.join(sorted(set(args.sections) - set(SECTIONS)))}; choose from {', '.join(SECTIONS)}")
    args.sections = args.sections or list(SECTIONS)
    args.batches = [at_least_one(b) for b in args.batches.split(",")]
    if "infer" in args.sections and max(args.batches) > args.images:  # it times whole batches of every size alike
        p.error(f"--images {args.images} is fewer than the largest of --batches ({max(args.batches)}), which infer times")
    return args


DEFAULT = "kdcli default (--amp fp16)"
NO_LOSS_SCALE = "--amp fp16 without its loss scale (speed only)"  # what the scale's overflow check costs a step
TEACHER_VARIANTS = {  # name -> (TeacherConfig options, cuDNN autotuning, memory format of weights and inputs)
    DEFAULT: ({}, True, torch.channels_last),
    "cuDNN autotuning off": ({}, False, torch.channels_last),
    "eager steps (--no-cuda-graphs)": ({"cuda_graphs": False}, True, torch.channels_last),
    "NCHW instead of channels_last": ({}, True, torch.contiguous_format),
    "--compile": ({"compile": True}, True, torch.channels_last),
    # Compiled, batch norm fuses with its neighbours whatever the dtype: bf16 then needs no loss scale's kernels.
    "--compile --amp bf16": ({"compile": True, "amp": "bf16"}, True, torch.channels_last),
    # PyTorch runs batch norm on bf16 inputs with its own kernels (28 % of a step), on fp16 ones with cuDNN's.
    "--amp bf16 (PyTorch's batch norm)": ({"amp": "bf16"}, True, torch.channels_last),
    NO_LOSS_SCALE: ({}, True, torch.channels_last),
}


def teacher_variants(args):
    """Each variant in a fresh process (on a CPU only the default: the others are CUDA paths)."""
    cuda = resolve_device(args.device).type == "cuda"
    for name in TEACHER_VARIANTS:
        if cuda or name == DEFAULT:  # the others are CUDA-only paths
            command = [sys.executable, __file__, "teacher", f"--variant={name}", "--device", args.device,
                       "--images", str(args.images), "--model", args.model, "--repeat", str(args.repeat)]  # fmt: skip
            subprocess.run(command + (["--data-dir", args.data_dir] if args.data_dir else []), check=True)


def teacher_variant(name, data, device, args, tmp):
    options, autotune, memory_format = TEACHER_VARIANTS[name]
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = autotune and cuda
    if memory_format == torch.contiguous_format:  # the inputs too: a channels_last input alone makes cuDNN run channels_last
        normalize = augment.normalize
        augment.normalize = lambda images: normalize(images).contiguous()
    config = TeacherConfig(model=args.model, out=str(tmp / "teacher"), **options)
    group = Group([Run(config, DrawnAugmentation(777, len(data.train_labels)))], data, device)
    if cuda:
        group.stack.to(memory_format=memory_format)
        group.optimizer = make_optimizer(config, group.stack.parameters(), device, group.lr)  # momentum in the weights' layout
    if name == NO_LOSS_SCALE:
        group.scaler = torch.amp.GradScaler("cuda", enabled=False)
    started = time.perf_counter()
    seconds = timed(group_epoch(group), device, args.repeat, len(data.train_labels))
    print(f"teacher  {name:52s} {seconds:8.3f} s/epoch  ({time.perf_counter() - started:.0f} s with warm-up)", flush=True)


def fold_batchnorm(model):
    """Each BatchNorm folded into the convolution declared just before it (eval mode: its statistics are frozen)."""
    for parent in list(model.modules()):
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if type(conv) is torch.nn.Conv2d and type(bn) is torch.nn.BatchNorm2d:
                parent._modules[a], parent._modules[b] = fuse_conv_bn_eval(conv, bn), torch.nn.Identity()
    return model


def infer_variants(data, device, args):
    n = len(data.train_labels) // max(args.batches) * max(args.batches)  # no ragged last batch at any size
    x = ready_views(data.train_images[:n], augment.params(0, 0, n), 1024)  # the views of a dump epoch, ready on the device
    torch.manual_seed(0)
    plain = model_from({"model_name": args.model, "model": create_model(args.model).state_dict()}, device, args.model)  # as the dump loads it
    for bn in (m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_var.uniform_(0.5, 2.0)  # statistics of a trained net, so that folding has something to fold
    models = {"eager": plain, "batch norm folded": fold_batchnorm(copy.deepcopy(plain))}
    if device.type == "cuda":  # kdcli compiles on CUDA only
        models["compiled"] = torch.compile(plain, dynamic=False)
    dtype = autocast_dtype("bf16", device)  # the dump's default --amp
    for b in args.batches:
        for name, model in models.items():
            infer = bare_inference(model, x, b, dtype)
            print(f"infer    {name:20s} batch {b:5d} {FULL / timed(infer, device, args.repeat, n):12,.0f} img/s", flush=True)


def dump_variants(data, data_dir, device, args, tmp):
    """dump-logits' epoch loop as kdcli runs it, at each batch size, against: its HDF5 writes done in the
    main thread (before the disk thread), no writes at all (the dump's own loop, writing nothing), no writes
    with the views built by eager kernels around the compiled teacher (before the augmentation was compiled
    with it), and bare inference on ready views. Epochs are warm, compiled where the dump compiles (CUDA), and
    written to a real cache."""
    n, teacher = len(data.train_labels), save_teacher(tmp / "teacher.pt", args.model)
    for b in args.batches:
        config = DumpConfig(teacher=str(teacher), epochs=args.repeat, batch_size=b, out=str(tmp / f"dump{b}.h5"),
                            data_dir=str(data_dir), subset=n, device=device.type, download=False, quiet=True)  # fmt: skip
        print(f"dump     {'kdcli dump-logits':36s} batch {b:5d} {dump_logits(config)['images_per_s']:12,.0f} img/s", flush=True)
    label, teacher_model, dtype = dump_labellers(teacher, config, device, compiles(config, device))  # at the last --batches size (the largest by default)
    b, path = config.batch_size, Path(config.out)  # its cache is rewritten in place

    def writes_in_main_thread():
        with h5py.File(path, "r+") as f:
            f["epochs_complete"][()] = 0
        with cache.CacheWriter(path) as writer:
            for e in range(args.repeat):
                aug = augment.params(0, e, n)
                logits = teacher_logits(label, data.train_images, aug, b).cpu().numpy().astype(np.float16)
                writer.write_epoch(e, aug.numpy(), logits)

    label_eager_views = view_labeller(teacher_model, dtype, False, b)  # kdcli before: only the teacher compiled
    for name, loop in {"HDF5 writes in the main thread": writes_in_main_thread, "no HDF5 writes": dump_without_writes(config, label, data),
                       "no HDF5 writes, views built eagerly": dump_without_writes(config, label_eager_views, data)}.items():  # fmt: skip
        print(f"dump     {name:36s} batch {b:5d} {FULL / timed(loop, device, 1, n * args.repeat):12,.0f} img/s", flush=True)
    fb = forward_batch(b, device)  # what the dump passes at once: at most 64 images on a CPU
    bare = bare_inference(teacher_model, ready_views(data.train_images, augment.params(0, 0, n), fb), fb, dtype)
    print(f"dump     {'bare inference, views ready':36s} batch {b:5d} {FULL / timed(bare, device, args.repeat, n):12,.0f} img/s", flush=True)


def kd_variants(data, data_dir, device, args, tmp):
    """A LeNet-5 epoch with KD from the cache against one without KD, in interleaved rounds, then the
    kernels and kernel time of 10 eager steps of each: what KD adds to a step, apart from the noise."""
    n = len(data.train_labels)
    config = DumpConfig(teacher=str(save_teacher(tmp / "kd-teacher.pt", args.model)), epochs=2, out=str(tmp / "kd.h5"),
                        data_dir=str(data_dir), subset=n, device=device.type, download=False, quiet=True, compile=False)  # fmt: skip
    dump_logits(config, progress=False)
    with open_cache(config.out) as c:
        sources = {"no KD": (0.0, DrawnAugmentation(0, n)), "KD from the cache": (0.1, CachedTargets(c, n))}

        def group(name, **options):
            weight, targets = sources[name]
            return Group([Run(dataclasses.replace(student(tmp, weight=weight), **options), targets)], data, device)

        epochs = {name: group_epoch(group(name)) for name in sources}
        rounds = timed_rounds(epochs, device, 2 * args.repeat + 1, n)
        del epochs
        free_unreferenced()
        for r, (kd, no_kd) in enumerate(zip(rounds["KD from the cache"], rounds["no KD"])):
            print(f"kd       round {r}: no KD {no_kd:.4f} s/epoch, KD from the cache {kd:.4f} s/epoch: KD costs {kd / no_kd - 1:+.1%}", flush=True)
        kd, no_kd = (statistics.median(rounds[name]) for name in ("KD from the cache", "no KD"))
        print(f"kd       median of {len(rounds['no KD'])} rounds: KD costs {kd / no_kd - 1:+.1%}", flush=True)
        for name in sources:
            g = group(name, cuda_graphs=False)
            kernels, microseconds = eager_step_kernels(g, device)
            what = f"{kernels:.0f} kernels, {microseconds:.0f} µs of kernel time" if device.type == "cuda" else f"{kernels:.0f} operators"
            print(f"kd       {name:20s} eager step: {what}", flush=True)
            del g
            free_unreferenced()
        if device.type == "cuda":  # not kdcli's way (yet): the KD loss compiled, fused into a few kernels
            group_module.distillation_loss = torch.compile(losses.distillation_loss)  # train_step looks it up here
            try:
                seconds = timed(group_epoch(group("KD from the cache")), device, args.repeat, n)
            finally:
                group_module.distillation_loss = losses.distillation_loss
            print(f"kd       KD from the cache, its loss compiled: {seconds:.4f} s/epoch", flush=True)


def eager_step_kernels(group, device) -> tuple:
    """(kernels, µs of their time) per eager training step of `group`; on a CPU, (operators, 0)."""
    if device.type != "cuda":
        return profiled_steps(group, device, CountOperators()).operators / STEPS, 0.0
    kernels = [e for e in profiled_steps(group, device).events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return len(kernels) / STEPS, sum(e.device_time_total for e in kernels) / STEPS


class CountOperators(TorchDispatchMode):
    """The ATen operators run, views left out: on a GPU each is (about) one kernel launch, so a CPU can count them."""

    operators = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.operators += not func.is_view
        return func(*args, **(kwargs or {}))


def profile(data, device, args, tmp):
    group = Group([Run(TeacherConfig(model=args.model, out=str(tmp / "profile"), cuda_graphs=False), DrawnAugmentation(777, len(data.train_labels)))], data, device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(profiled_steps(group, device).key_averages().table(sort_by=key, row_limit=20, max_name_column_width=70), flush=True)


STEPS = 10  # profiled eager steps, after 3 warm-up ones (allocator, autotuning)


def profiled_steps(group, device, recorder=None):
    """STEPS eager training steps of `group`, all on its first batch (every step costs the same), run inside
    `recorder` (default: the torch profiler of the device's kernels); returns the recorder."""
    aug, soft, order = group.epoch_inputs()
    group.stack.train()
    idx = order[:, : group.config.batch_size]

    def steps(count):
        for _ in range(count):
            group.train_step(idx, aug, soft)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    steps(3)
    activity = torch.profiler.ProfilerActivity.CUDA if device.type == "cuda" else torch.profiler.ProfilerActivity.CPU
    recorder = recorder or torch.profiler.profile(activities=[activity])
    with recorder:
        steps(STEPS)
    return recorder


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    warnings.filterwarnings("ignore", category=NotOfficialDataWarning)
    warnings.filterwarnings("ignore", message=".*lr-milestones.*")  # the variants train a few epochs of a 300-epoch schedule
    with tempfile.TemporaryDirectory(prefix="kdcli-variants-") as tmp:
        tmp = Path(tmp)
        data_dir = Path(args.data_dir) if args.data_dir else write_synthetic_cifar(tmp / "data", args.images, 16)
        data = load_cifar10(data_dir, device, subset=args.images, download=False)
        if args.variant:
            return teacher_variant(args.variant, data, device, args, tmp)
        print(f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'} | torch {torch.__version__} | {len(data.train_labels):,} images | {args.model}", flush=True)
        if "teacher" in args.sections:
            teacher_variants(args)
        if "infer" in args.sections:
            infer_variants(data, device, args)
        if "dump" in args.sections:
            dump_variants(data, data_dir, device, args, tmp)
        if "kd" in args.sections:
            kd_variants(data, data_dir, device, args, tmp)
        if "profile" in args.sections:
            profile(data, device, args, tmp)


if __name__ == "__main__":
    main()
