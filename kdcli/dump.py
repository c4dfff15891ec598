"""The dump-logits stage: the teacher's logits on E augmented epochs, stored once in the logit cache.

    summary = dump_logits(DumpConfig(teacher="runs/teacher", epochs=300))

Epoch e's views are built on the device from augment.params(seed, e, N), the
parameters the cache stores beside the logits, so a student rebuilds exactly the
view each logit belongs to ("consistent teaching", design.md). The cache is
filled one epoch at a time, in order, by a disk thread: epoch e is written and
fsynced while the teacher labels epoch e+1, so the teacher need not wait for the disk.
A dump stopped at any moment resumes where it stopped (cache.py says why a kill
cannot damage the file); Ctrl-C first lets the epoch being written finish.
"""

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from kdcli import Interrupted, KdcliError, augment, cache
from kdcli.checkpoint import resolve, sha256_file
from kdcli.data import load_cifar10
from kdcli.data import resolve_device
from kdcli.evaluate import load_model
from kdcli.train import require_at_least_one


@dataclass
class DumpConfig:
    teacher: str = "runs/teacher"  # teacher run folder, or its checkpoint.pt
    epochs: int = 300  # augmented epochs to store (E); student epoch e reads cached epoch e mod E
    seed: int = 0  # seeds the augmentation of every cached epoch
    batch_size: int = 1024  # images per teacher forward pass (4096: 7% more img/s on an H100, but compiling takes longer)
    dtype: Literal["float16", "float32"] = "float16"  # logits storage: float16 halves the file (~350 MB for 300 epochs)
    out: str = "cache/logits.h5"  # cache file; an unfinished one with the same settings is resumed
    data_dir: str = "data"  # folder holding cifar-10-batches-py/
    download: bool = True  # fetch CIFAR-10 when it is missing
    subset: int | None = None  # use only the first N training images (smoke runs)
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"  # auto: cuda, then mps, then cpu
    amp: bool = True  # bf16 autocast on CUDA (1.4x the images/s on an H100; logits within bf16 rounding); no effect elsewhere
    compile: bool = True  # torch.compile augmentation + teacher as one graph on CUDA (~20 s; 290k img/s on an H100); no effect elsewhere
    force: bool = False  # overwrite a finished cache, or one made with other settings
    quiet: bool = False  # no progress bar

    def __post_init__(self):
        require_at_least_one(self, "epochs", "batch_size", "subset")


def view_labeller(model, amp: bool, compile: bool):
    """label(images, p) -> the teacher's logits [B, C] float32 on the views that params p [B, 3] make of images [B, 3, 32, 32] uint8."""
    bf16 = amp and next(model.parameters()).is_cuda  # bf16 autocast on CUDA only, as everywhere in kdcli

    def label(images, p):
        with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
            return model(augment.normalize(augment.apply(images, p))).float()

    # Compiled as one graph: crop, flip and normalisation fuse into one kernel feeding the first convolution,
    # instead of ~6 eager passes over each batch; batch norm and ReLU fuse too. One graph per batch shape.
    return torch.compile(label, dynamic=False) if compile else label


@torch.inference_mode()  # no autograd bookkeeping at all: the teacher is only read
def teacher_logits(label, images, aug, batch_size: int) -> torch.Tensor:
    """[N, C] float32: label (a view_labeller) on images [N, 3, 32, 32] uint8 as augmented by aug [N, 3] (None: as they are)."""
    aug = (augment.unaugmented(len(images)) if aug is None else aug).to(images.device)
    batches = range(0, len(images), batch_size)  # views are built per batch: all 50,000 at once is 150 MB more
    return torch.cat([label(images[i : i + batch_size], aug[i : i + batch_size]) for i in batches])


def dump_logits(config: DumpConfig, progress: bool = True) -> dict:
    """Write (or finish) the cache at config.out; return a summary for the CLI's closing line."""
    teacher_path = _teacher_path(config.teacher)
    with cache.write_lock(config.out):  # first: a second dump is refused before it loads anything
        device = resolve_device(config.device)
        model, state = load_model(teacher_path, device)
        # Compiled on CUDA only: three batch shapes in a dump (full, last train, last test), ~15 s of compiling.
        label = view_labeller(model, config.amp, config.compile and device.type == "cuda")
        data = load_cifar10(config.data_dir, device, config.subset, config.download)
        identity = {
            "teacher_sha256": sha256_file(teacher_path), "train_fingerprint": data.fingerprint,
            "seed": config.seed, "epochs": config.epochs, "dtype": config.dtype,
            "teacher_precision": "bfloat16" if config.amp and device.type == "cuda" else "float32",  # as view_labeller runs it
        }  # fmt: skip
        if cache.resume_point(config.out, identity, config.force) is None:
            _create_cache(config, label, data, {**identity, "teacher_model": state["model_name"]}, teacher_path)
        with cache.CacheWriter(config.out) as writer:
            start = writer.epochs_complete
            try:
                seconds = _write_epochs(config, label, data, writer, progress)
            except KeyboardInterrupt:  # _write_epochs has finished the epoch it was writing
                raise Interrupted(f"interrupted: {writer.epochs_complete} of {config.epochs} epochs are in {config.out}") from None
            accuracy = writer.attrs["teacher_test_accuracy"]
    n, written = len(data.train_labels), config.epochs - start
    return {
        "path": config.out,
        "epochs": config.epochs,
        "epochs_complete": config.epochs,
        "epochs_written": written,
        "resumed_from": start,
        "num_images": n,
        "seconds": round(seconds, 2),
        "images_per_s": round(n * written / seconds, 1),
        "size_bytes": Path(config.out).stat().st_size,
        "teacher_model": state["model_name"],
        "teacher_test_accuracy": accuracy,
        "dtype": config.dtype,
    }


def _create_cache(config: DumpConfig, label, data, attrs: dict, teacher_path):
    """A new cache holding the teacher's logits on the un-augmented train and test sets, and no epoch yet."""
    storage = np.dtype(config.dtype)
    clean = teacher_logits(label, data.train_images, None, config.batch_size)  # [N, C]
    test = teacher_logits(label, data.test_images, None, config.batch_size)  # [M, C]
    if test.shape[1] != data.num_classes:
        raise KdcliError(f"{teacher_path} has {test.shape[1]} outputs; CIFAR-10 has {data.num_classes} classes")
    test = test.cpu().numpy().astype(storage)
    # Accuracy from the stored logits, so that it can be recomputed from the file alone.
    accuracy = round(100 * float((test.argmax(1) == data.test_labels.cpu().numpy()).mean()), 4)
    # The teacher's absolute path: `cache-info --verify` finds it from any folder.
    attrs = {**attrs, "teacher_test_accuracy": accuracy, "config": {**asdict(config), "teacher": str(Path(config.teacher).resolve())}}
    cache.create(config.out, attrs, data.train_labels.cpu().numpy(), clean.cpu().numpy().astype(storage), test, config.epochs)


def _write_epochs(config: DumpConfig, label, data, writer, progress: bool) -> float:
    """Label and write the epochs the cache still lacks; return the seconds it took.

    Three stages overlap: the device labels epoch e while the host waits for epoch e-1's logits and hands
    them to the disk thread, which writes and fsyncs them. Epochs reach the file in order."""
    n, start = len(data.train_labels), writer.epochs_complete
    bar = tqdm(total=n * (config.epochs - start), unit="img", unit_scale=True, desc="dump-logits",
               disable=not progress or config.quiet, dynamic_ncols=True)  # fmt: skip
    t0 = time.perf_counter()
    labelled = deque()  # epochs labelled (or queued on the device) but not yet handed to the disk thread
    written = None  # the write running on the disk thread

    def hand_oldest_to_disk():
        nonlocal written
        e, aug, logits_on_host = labelled[0]
        logits = logits_on_host().astype(config.dtype)
        if written is not None:
            written.result()  # one epoch waits in memory at most; a write error is raised here
        written = disk.submit(writer.write_epoch, e, aug.numpy(), logits)
        labelled.popleft()
        bar.update(n)

    # Leaving the block waits for the disk thread: the epoch it is writing is finished, even on Ctrl-C.
    with bar, ThreadPoolExecutor(1, thread_name_prefix="kdcli-disk") as disk:
        try:
            for e in range(start, config.epochs):
                aug = augment.params(config.seed, e, n)  # [N, 3] int8, drawn on the CPU like every kdcli draw
                logits = teacher_logits(label, data.train_images, aug, config.batch_size)  # [N, C], queued on the device
                labelled.append((e, aug, _copy_to_host(logits)))
                if len(labelled) == 2:  # epoch e is queued on the device: hand epoch e-1 over meanwhile
                    hand_oldest_to_disk()
        except KeyboardInterrupt:
            while labelled:  # labelled in full: kept
                hand_oldest_to_disk()
            raise
        while labelled:
            hand_oldest_to_disk()
        if written is not None:
            written.result()
    return time.perf_counter() - t0


def _copy_to_host(logits: torch.Tensor):
    """Start copying logits to the host; return a function that waits for the copy and gives it as numpy.
    On CUDA the copy runs behind the work already queued, so the host can queue the next epoch first."""
    if not logits.is_cuda:
        return logits.numpy
    host = torch.empty(logits.shape, dtype=logits.dtype, pin_memory=True)  # pinned: the copy cannot be asynchronous otherwise
    host.copy_(logits, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()

    def wait():
        copied.synchronize()
        return host.numpy()

    return wait


def _teacher_path(teacher) -> Path:
    path = resolve(teacher)
    if not path.is_file():
        raise KdcliError(f"no teacher at {teacher}: run `kdcli train-teacher` first, or pass --teacher")
    return path
