"""The dump-logits stage: the teacher's logits on E augmented epochs, stored once in the logit cache.

    summary = dump_logits(DumpConfig(teacher="runs/teacher", epochs=300))
    verify_cache("cache/logits.h5", k=256)   # the teacher again on 256 cached views; raises if they differ

Epoch e's views are built on the device from augment.params(seed, e, N), the
parameters the cache stores beside the logits, so a student rebuilds exactly the
view each logit belongs to ("consistent teaching": Beyer et al. 2022, "Knowledge
distillation: A good teacher is patient and consistent"). The cache is
filled one epoch at a time, in order, by a disk thread: epoch e is written and
fsynced while the teacher labels epoch e+1, so the teacher need not wait for the disk.
A dump stopped at any moment resumes where it stopped (cache.py says why a kill
cannot damage the file); Ctrl-C first writes every epoch labelled in full.
"""

import random
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from kdcli import DATA_DIR, Device, Interrupted, KdcliError, Precision, augment, cache, redraw_intervals
from kdcli.checkpoint import checkpoint_file, read_checkpoint, training_reached
from kdcli.config import check_choices, check_paths, check_ranges, check_seed, check_types
from kdcli.data import load_cifar10, recorded_data_dir
from kdcli.device import autocast_dtype, autocast_to, resolve_device, triton_found
from kdcli.evaluate import forward_batch, model_from, predict, recorded_precision, top1
from kdcli.models import canonical_name
from kdcli.records import as_recorded_now, read_json
from kdcli.resume import run_kind
from kdcli.runs import DIVERGED, in_use, machine
from kdcli.signals import StopOnSignal


@dataclass
class DumpConfig:
    teacher: str = "runs/teacher"  # teacher run folder, or its checkpoint.pt
    epochs: int = 300  # augmented epochs to store (E); student epoch e reads cached epoch e mod E
    seed: int = 0  # seeds the augmentation of every cached epoch
    batch_size: int = 1024  # images per teacher forward pass (at most 64 on a CPU: faster there); 4096 was no faster on an H100; compiled, a pass's last batch is padded to it: +0.35% images at 1024, +6.5% at 4096
    dtype: Literal["float16", "float32"] = "float16"  # logits storage: float16 halves the file (~350 MB for 300 epochs)
    out: str = "cache/logits.h5"  # cache file; an unfinished one with the same settings is resumed
    data_dir: str = DATA_DIR  # folder holding cifar-10-batches-py/ (not given: the teacher's; the default where it recorded none)
    download: bool = True  # fetch CIFAR-10 when it is missing
    subset: int | None = None  # use only the first N training images (not given: the teacher's)
    device: Device = "auto"  # auto: cuda, then mps, then cpu
    amp: Precision = "bf16"  # autocast on CUDA: bf16 (1.4x the images/s of off on an H100; logits within bf16 rounding), fp16 or off; no effect elsewhere
    compile: bool = True  # torch.compile augmentation + teacher as one graph on CUDA (H100: under ~20 s to start, then 290k img/s); no effect elsewhere
    resume: bool = False  # keep a complete cache with the same settings instead of refusing it (make passes it); an unfinished one resumes either way
    force: bool = False  # overwrite a finished cache, or one made with other settings (even with --resume)
    quiet: bool = False  # no progress bar

    def __post_init__(self):
        check_types(self)
        check_ranges(self)
        check_choices(self)
        check_paths(vars(self))
        check_seed(self.seed)


def view_labeller(model, dtype: torch.dtype | None, compiled: bool, batch_size: int):
    """labeller(images, p) -> the teacher's logits [B, C] float32 on the views that params p [B, 3] make of images
    [B, 3, 32, 32] uint8 (B at most batch_size), computed under CUDA autocast to `dtype` (None: float32)."""

    def label(images, p):
        with autocast_to(dtype):
            return model(augment.normalize(augment.apply(images, p))).float()

    if not compiled:
        return label
    # Compiled as one graph: crop, flip and normalisation fuse into one kernel feeding the first convolution,
    # instead of ~6 eager passes over each batch; batch norm and ReLU fuse too.
    return padded_to(batch_size, torch.compile(label, dynamic=False))


def padded_to(batch_size: int, labeller):
    """`labeller` called with batch_size images only: a smaller batch (a pass's last, 50,000 = 48 x 1024 + 848) is
    padded with black images, whose logits are dropped. A compiled labeller then compiles one graph, not one more per
    tail shape (the last training batch and the last test batch: two of three compiles), for 0.35% more images."""

    def label(images, p):
        short = batch_size - len(images)
        if short == 0:
            return labeller(images, p)
        images = torch.cat([images, images.new_zeros(short, *images.shape[1:])])
        p = torch.cat([p, augment.unaugmented(short, p.device)])
        return labeller(images, p)[:-short]  # each view is labelled alone: the teacher is in eval mode

    return label


def compiles(config: DumpConfig, device) -> bool:
    """Whether the dump compiles its labeller: on CUDA, by default. Where torch.compile cannot work (no Triton, or a
    GPU older than it supports, such as a P100) the dump labels eagerly rather than fail at its first batch."""
    if not (config.compile and device.type == "cuda"):
        return False
    if not triton_found():
        warnings.warn("torch.compile finds no Triton for this GPU: the teacher labels eagerly, about 1.5x slower (--no-compile: without this warning)", stacklevel=3)
        return False
    return True


# Not inference_mode: the tensors it makes (a padded batch) would differ from the data's in dispatch keys, which a
# compiled labeller guards on, and compile again. Eager, the two label equally fast (ResNet18 and LeNet-5 on a CPU).
@torch.no_grad()
def teacher_logits(labeller, images, aug, batch_size: int, stop=None, on_batch=None) -> torch.Tensor | None:
    """[N, C] float32: labeller (a view_labeller's) on images [N, 3, 32, 32] uint8 as augmented by aug [N, 3]
    (None: as they are); None once `stop` (a StopOnSignal) is requested, checked before each batch.
    on_batch(b), if given, is called with each batch's size as it is queued (a progress bar's count)."""
    # Contiguous: a compiled labeller guards on strides, and would compile again for a caller's params that are a view.
    aug = (augment.unaugmented(len(images), images.device) if aug is None else aug).to(images.device).contiguous()
    out = []
    batch_size = forward_batch(batch_size, images.device)  # on a CPU, 64 at a time: evaluate.CPU_BATCH says why (never compiled there: no padded_to)
    for i in range(0, len(images), batch_size):  # views are built per batch: all 50,000 at once is 150 MB more
        if stop is not None and stop.requested:
            return None
        out.append(labeller(images[i : i + batch_size], aug[i : i + batch_size]))
        if on_batch is not None:
            on_batch(len(out[-1]))
    return torch.cat(out)


def dump_logits(config: DumpConfig, progress: bool = True) -> dict:
    """Write (or finish) the cache at config.out; return a summary for the CLI's closing line."""
    config = replace(config, out=cache.through_link(config.out))
    teacher_path = _teacher_path(config.teacher)
    device = resolve_device(config.device)
    state, teacher_sha256 = read_checkpoint(teacher_path)  # the hash of the weights labelled with, even if the file is replaced since
    model = model_from(state, device, teacher_path)
    teacher_model = canonical_name(state["model_name"])  # its name, as the cache and the summary record it
    unfinished = _check_finished(config.teacher, teacher_path, state)  # before the lock: a refused teacher leaves no file behind
    check_can_start(config)
    with cache.write_lock(config.out):  # a second dump is refused before it reads the data
        dtype = autocast_dtype(config.amp, device)
        data = load_cifar10(config.data_dir, device, config.subset, config.download)
        identity = {
            "teacher_sha256": teacher_sha256, "train_fingerprint": data.fingerprint,
            "seed": config.seed, "epochs": config.epochs, "dtype": config.dtype,
            "teacher_precision": str(dtype or torch.float32).removeprefix("torch."),
        }  # fmt: skip
        start = cache.resume_point(config.out, identity, config.force, keep_complete=config.resume)
        # Warnings once the dump is checked to go on (or to keep its cache): just before a refusal they are noise.
        if unfinished:
            warnings.warn(f"{teacher_path} is the checkpoint of a teacher that has not finished training ({unfinished})", stacklevel=2)
        labeller = view_labeller(model, dtype, compiles(config, device), config.batch_size)  # compiled on CUDA only
        if start is None:
            seen = _images_seen(state, len(data.train_labels)) if _trained_on_these(state, data, config) else 0
            cache.check_room(config.out, config.epochs, len(data.train_labels), len(data.test_labels), data.num_classes, config.dtype)
            # On a CPU these passes take longer than an epoch of the dump: said before them.
            if progress and not config.quiet:
                print(f"{config.out}: labelling the un-augmented training and test images first", file=sys.stderr, flush=True)
            with tqdm(total=len(data.test_labels) + len(data.train_labels), unit="img", unit_scale=True, desc="un-augmented",
                      disable=not progress or config.quiet, dynamic_ncols=True, **redraw_intervals()) as bar:  # fmt: skip
                test = teacher_logits(labeller, data.test_images, None, config.batch_size, on_batch=bar.update)  # [M, C]
                attrs = {
                    **identity, "teacher_model": teacher_model, "teacher_train_images": seen,
                    "teacher_test_accuracy": _teacher_test_accuracy(model, data, state, config.amp, test),
                    **machine(device),  # where it started: the file's attributes never change after creation (cache.py)
                }  # fmt: skip
                _create_cache(config, labeller, data, attrs, teacher_path, test, on_batch=bar.update)
        seconds = 0.0
        if start != config.epochs:  # else complete, and kept (--resume)
            start, seconds = _finish_cache(config, labeller, data, progress)
        accuracy = cache.cache_info(config.out)["teacher_test_accuracy"]
    n, written = len(data.train_labels), config.epochs - start
    return {
        "path": config.out,
        "epochs": config.epochs,
        "epochs_complete": config.epochs,
        "epochs_written": written,
        "resumed_from": start,
        "num_images": n,
        "seconds": round(seconds, 2),
        "images_per_s": round(n * written / seconds, 1) if written else None,
        "size_bytes": Path(config.out).stat().st_size,
        "teacher_model": teacher_model,
        "teacher_test_accuracy": accuracy,
        "dtype": config.dtype,
    }


def check_can_start(config: DumpConfig):
    """What of --out can be refused before the teacher and the data load: the CLI checks it before it says what it
    read back from the teacher."""
    cache.check_may_write(cache.through_link(config.out))


def _teacher_path(teacher) -> Path:
    """The checkpoint file of --teacher (a run folder or the file itself), or the one line that says why it cannot
    teach: its run diverged, or has no checkpoint yet, or there is none."""
    path = checkpoint_file(teacher)
    _check_not_diverged(teacher)
    if not path.is_file():
        if in_use(teacher):
            raise KdcliError(f"the teacher in {teacher} is still training, and has no checkpoint yet: wait for it to finish")
        raise KdcliError(f"no teacher at {teacher}: run `kdcli train-teacher` first, or pass --teacher")
    return path


def _check_not_diverged(teacher):
    """A run folder that recorded its divergence is refused with it: resuming would diverge again (the record says
    what to lower), and its checkpoint, if any, is a teacher half trained."""
    record = Path(teacher) / DIVERGED
    if record.is_file():
        error = read_json(record).get("error", "its loss or weights were not finite")
        raise KdcliError(f"the teacher in {teacher} diverged and has not finished training: {error}")


def _check_finished(teacher, path, state) -> str | None:
    """A run folder whose training has not ended is refused: its checkpoint is a teacher half trained
    (stopped by Ctrl-C, or still training), and every student of the cache would learn from it. The checkpoint
    file given itself is the user's choice: how far it trained is returned, for a warning."""
    config = state.get("config") or {}
    if not config.get("epochs") or "epoch" not in state:
        return None  # a checkpoint that does not say
    if state["epoch"] >= config["epochs"] and not state.get("step"):
        return None  # finished
    where = training_reached(state)
    if Path(teacher).is_dir():
        if in_use(teacher):
            raise KdcliError(f"the teacher in {teacher} is still training (its checkpoint: {where}): wait for it to finish, or pass --teacher {path} to label with it as it is now")
        kind = run_kind(config)  # a student may teach too
        raise KdcliError(f"the teacher in {teacher} has not finished training ({where}): resume it (kdcli train-{kind} "
                         f"--out {teacher} --resume), or pass --teacher {path} to label with it as it is")  # fmt: skip
    return where


def _teacher_test_accuracy(model, data, state, amp, test_logits) -> float:
    """In the precision the teacher evaluated itself, so the number train-teacher and evaluate print, where this
    device has that precision; else in the dump's own `amp`. `test_logits`: the dump's own, [M, C]."""
    if test_logits.device.type == "cpu":
        # No second pass (ResNet18: a minute on 2 cores): a CPU has no autocast or compile, so these are predict's logits.
        # A GPU's dump may label in another precision, compiled: its accuracy takes a pass of its own.
        return top1(test_logits, data.test_labels)
    try:
        logits = predict(model, data.test_images, recorded_precision(state))
    except KdcliError:  # e.g. a teacher trained in bf16, dumped on a GPU without bf16 (--amp fp16)
        logits = predict(model, data.test_images, amp)
    return top1(logits, data.test_labels)


def _images_seen(teacher_state: dict, n: int) -> int:
    """How many of the n images (the first n of the training set) the teacher trained on: the first K. A
    student holding out the last ones (--val-size) checks the teacher never saw them. Checkpoints of
    before --val-size record no count and trained on every image of their --subset."""
    seen = teacher_state.get("train_images") or (teacher_state.get("config") or {}).get("subset") or n
    return min(seen, n)


def _trained_on_these(teacher_state: dict, data, config: DumpConfig) -> bool:
    """Whether the teacher trained on the first of these images, as far as its checkpoint says; a warning where
    not. Its logits on images it never saw are a transfer set: a choice, or a --data-dir given by mistake."""
    recorded, trained = teacher_state.get("train_fingerprint"), teacher_state.get("train_images")
    if recorded is None or not trained:
        return True  # a checkpoint of before 2026-11-27: nothing to compare
    n = trained + (teacher_state.get("config") or {}).get("val_size", 0)  # its images before its split
    # Where it trained on more images than the dump labels (--subset), the first n of the folder are compared.
    labelled = data.fingerprint_of_first(n) if n <= len(data.train_labels) else _fingerprint_in_folder(config.data_dir, n)
    if labelled == recorded:
        if n < len(data.train_labels):  # a --subset larger than the teacher's
            warnings.warn(
                f"the teacher {config.teacher} trained on the first {n:,} of these {len(data.train_labels):,} images: it labels "
                f"{len(data.train_labels) - n:,} it never saw (pass --subset {n} for its own, unless a transfer set is what you want)",
                stacklevel=2,
            )
        return True
    warnings.warn(
        f"the teacher {config.teacher} trained on other images than those now in {config.data_dir}: it labels images it never saw "
        "(pass the --data-dir it trained on, unless a transfer set is what you want)",
        stacklevel=2,
    )
    return False


def _fingerprint_in_folder(data_dir, n: int) -> str | None:
    """The fingerprint of the first n training images in data_dir; None where it holds fewer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what the folder holds was said as the dump loaded it
        try:
            return load_cifar10(data_dir, "cpu", n, download=False).fingerprint
        except KdcliError:
            return None


def _create_cache(config: DumpConfig, labeller, data, attrs: dict, teacher_path, test, on_batch=None):
    """A new cache holding the teacher's logits on the un-augmented train and test sets (`test`, [M, C] float32,
    labelled already), and no epoch yet. on_batch: as teacher_logits'."""
    storage = np.dtype(config.dtype)
    if test.shape[1] != data.num_classes:  # before the training images are labelled for nothing
        raise KdcliError(f"{teacher_path} has {test.shape[1]} outputs; CIFAR-10 has {data.num_classes} classes")
    clean = teacher_logits(labeller, data.train_images, None, config.batch_size, on_batch=on_batch)  # [N, C]
    test = stored(test.cpu().numpy(), storage)
    # The teacher's absolute path: `cache-info --verify` finds it from any folder.
    attrs = {**attrs, "config": {**asdict(config), "teacher": str(Path(config.teacher).resolve())}}
    cache.create(config.out, attrs, data.train_labels.cpu().numpy(), stored(clean.cpu().numpy(), storage), test, config.epochs)


def stored(logits: np.ndarray, storage) -> np.ndarray:
    """`logits` (float32) in the storage dtype, refused where they are not finite there: every reader of the cache
    takes an inf or NaN for damage since, and making it again would store the same."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below, in words
        out = logits.astype(storage)
        if np.isfinite(out.sum(dtype=np.float64)):  # a sum carries any NaN or inf, 20x faster than checking each
            return out
    if np.isfinite(logits).all():
        raise KdcliError(f"the teacher's logits exceed {storage}'s range (up to {np.abs(logits).max():.3g}; {storage} holds ±{np.finfo(storage).max:,.0f}): dump with --dtype float32")
    raise KdcliError("the teacher's logits are not finite (NaN or inf): it diverged in training; train it again, or pass another --teacher")


def _finish_cache(config: DumpConfig, labeller, data, progress: bool) -> tuple[int, float]:
    """Label and write the epochs the cache at config.out lacks; return (the epochs it had, the seconds it took).
    Ctrl-C or SIGTERM ends it as Interrupted, with every epoch labelled in full written first."""
    with cache.CacheWriter(config.out) as writer:
        start, stop = writer.epochs_complete, StopOnSignal(lost="the epochs not yet written")
        try:
            seconds = _write_epochs(config, labeller, data, writer, progress, stop)
        finally:
            stop.restore()
        if writer.epochs_complete < config.epochs:
            raise Interrupted(f"interrupted: {config.out} holds {writer.epochs_complete} of {config.epochs} epochs", stop.signum)
        if stop.requested and progress:  # it came while the last epoch was written: the cache is complete
            print(f"{config.out}: finished before the next safe point; nothing to resume", file=sys.stderr, flush=True)
    return start, seconds


def _write_epochs(config: DumpConfig, labeller, data, writer, progress: bool, stop) -> float:
    """Label and write the epochs the cache still lacks, or those before `stop` (a StopOnSignal) is requested;
    return the seconds it took.

    The device labels epoch e while the host collects epoch e-1's logits and hands them to the disk
    thread, which writes and fsyncs them; epochs reach the file in order. Ctrl-C only sets a flag,
    checked between batches: the epoch being labelled is dropped, every earlier one is written."""
    n, start = len(data.train_labels), writer.epochs_complete
    bar = tqdm(total=n * (config.epochs - start), unit="img", unit_scale=True, desc="dump-logits",
               disable=not progress or config.quiet, dynamic_ncols=True, **redraw_intervals())  # fmt: skip
    t0 = time.perf_counter()
    written = None  # the disk thread's write in progress

    def hand_to_disk(e, aug, collect_logits):
        nonlocal written
        logits = stored(collect_logits(), np.dtype(config.dtype))
        if written is not None:
            written.result()  # one epoch waits for the disk at most; a write error is raised here
        written = disk.submit(writer.write_epoch, e, aug.numpy(), logits)

    with bar, ThreadPoolExecutor(1, thread_name_prefix="kdcli-disk") as disk:
        labelled = None  # the last epoch labelled in full, not yet handed to the disk thread
        for e in range(start, config.epochs):
            aug = augment.params(config.seed, e, n)  # [N, 3] int8, drawn on the CPU like every kdcli draw
            logits = teacher_logits(labeller, data.train_images, aug, config.batch_size, stop, bar.update)  # [N, C], queued on the device
            if logits is None:
                break
            previous, labelled = labelled, (e, aug, _start_copy_to_host(logits))
            if previous is not None:
                hand_to_disk(*previous)  # while the device labels epoch e
        if labelled is not None:
            hand_to_disk(*labelled)
        if written is not None:
            written.result()
    return time.perf_counter() - t0


def _start_copy_to_host(logits: torch.Tensor):
    """Start copying logits to the host; return a function that waits for the copy and gives it as numpy.
    On CUDA the copy is queued behind the epoch's work, so the host can queue the next epoch first."""
    if logits.device.type != "cuda":
        return lambda: logits.cpu().numpy()  # CPU or MPS: copied when collected, synchronously
    host = torch.empty(logits.shape, dtype=logits.dtype, pin_memory=True)  # pinned: the copy cannot be asynchronous otherwise
    host.copy_(logits, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()

    def wait():
        copied.synchronize()
        return host.numpy()

    return wait


# A sound cache differs from a fresh teacher pass by rounding only. Relative to an entry's largest |logit|:
# float16 storage is 0.05%; a dump in bf16 or fp16 differs from its recomputation on another device (a GPU's
# cache checked on a CPU, in float32) by up to 3.6% (resnet8, bf16 against float32, 2,000 images; a ResNet18
# 2.3%). Damage, other views or other images differ by tens of percent.
VERIFY_TOLERANCE = {"float32": 0.02, "reduced": 0.10}


def verify_cache(path, teacher=None, k=256, device="auto", data_dir=None, download=True) -> dict:
    """Rebuild k distinct random (epoch, image) entries of the complete epochs (all of them if there are fewer)
    from their stored parameters, run the teacher (None: the one the dump was given) on them again, and compare.
    data_dir None: the one the dump was given. Raises KdcliError where the difference is more than rounding
    (VERIFY_TOLERANCE); else returns {entries, max_difference, max_relative, tolerance, data_dir}."""
    if k < 1:  # else a pass over no entries
        raise KdcliError(f"--verify {k}: must be at least 1 entry")
    dev = resolve_device(device)
    with cache.open_cache(path, allow_partial=True) as c:
        teacher, state = _teacher_that_made(c, path, teacher)
        data_dir = data_dir or recorded_data_dir(c.attrs["config"], f"the cache {path}")
        images = _images_labelled_in(c, path, data_dir, dev, download)
        cache.check_finite(path, "clean_logits", c.clean_logits)  # read by no kdcli command, so checked here whole
        cache.check_finite(path, "test_logits", c.test_logits)
        model = model_from(state, dev, teacher)
        total = c.epochs_complete * c.num_images
        entries = torch.tensor(random.Random(0).sample(range(total), min(k, total)), dtype=torch.long)  # distinct; no list of all
        amp = _dump_precision(c.attrs)
        worst, worst_relative = _largest_differences(path, c, model, images, entries, amp)
    tolerance = VERIFY_TOLERANCE["float32" if amp == "off" else "reduced"]  # the rounding the dump's precision left in the cache
    if worst_relative > tolerance:
        raise KdcliError(
            f"{path} fails verification: over {len(entries):,} entries, cached logits differ from the teacher's by up to "
            f"{worst:.3g} ({worst_relative:.1%} of an entry's largest |logit|; rounding stays under {tolerance:.0%}): "
            "the file is damaged, or was not made by this kdcli from these images; make it again (dump-logits --force)"
        )
    return {"entries": len(entries), "max_difference": worst, "max_relative": worst_relative, "tolerance": tolerance, "data_dir": data_dir}


def _teacher_that_made(c, path, teacher) -> tuple[str, dict]:
    """(teacher, its checkpoint): `teacher` (None: the one the dump of cache c at `path` was given), refused where
    its weights are not those the cache was made with."""
    recorded = c.attrs["config"].get("teacher")
    teacher = teacher or recorded or "runs/teacher"
    if not checkpoint_file(teacher).is_file():
        raise KdcliError(f"no teacher at {teacher} to verify {path} with: pass --teacher")
    state, sha256 = read_checkpoint(teacher)
    if sha256 != c.attrs["teacher_sha256"]:
        remedy = f": pass the one it was made with (--teacher; its dump recorded {recorded})" if recorded and recorded != str(teacher) else ""
        raise KdcliError(f"{path} was made by another teacher (sha256 {c.attrs['teacher_sha256'][:8]}…), not {teacher}{remedy}")
    return teacher, state


def _images_labelled_in(c, path, data_dir, device, download: bool) -> torch.Tensor:
    """The training images of cache c at `path`, loaded from data_dir onto `device`; refused where they are others."""
    data = load_cifar10(data_dir, device, download=download)
    if data.fingerprint_of_first(c.num_images) != c.attrs["train_fingerprint"]:
        raise KdcliError(f"{path} was made on other training images than those in {data_dir}")
    return data.train_images[: c.num_images]  # --subset keeps the first N


def _dump_precision(attrs: dict) -> str:
    """The --amp a cache's dump labelled in, so that verification recomputes as it computed: its teacher_precision
    says what it did on its device (float32 on a CPU)."""
    amp = {"bfloat16": "bf16", "float16": "fp16", "float32": "off"}.get(attrs.get("teacher_precision"))
    return amp or as_recorded_now(attrs["config"]).get("amp", "bf16")  # caches of before 2026-11-26 lack it


def _largest_differences(path, c, model, images, entries, amp: str) -> tuple[float, float]:
    """The teacher run again on the entries (epoch * N + image) of cache c at `path`, on views rebuilt from `images`
    and the stored parameters -> the largest |logit difference| to the cached logits, and the largest relative to an
    entry's largest |logit|."""
    epochs, index = entries // c.num_images, entries % c.num_images
    worst = worst_relative = 0.0
    for e in epochs.unique().tolist():
        aug, cached = c.epoch(e)  # [N, 3], [N, C]
        if not torch.equal(aug, augment.params(c.attrs["seed"], e, c.num_images)):
            raise KdcliError(f"{path}: the stored augmentation of epoch {e} is not augment.params(seed, {e}): the file is damaged")
        i = index[epochs == e]
        fresh = predict(model, augment.apply(images[i.to(images.device)], aug[i]), amp).cpu()  # [len(i), C]
        old = cached[i].float()
        difference = (fresh - old).abs().amax(1)
        worst = max(worst, difference.max().item())
        worst_relative = max(worst_relative, (difference / old.abs().amax(1).clamp(min=1)).max().item())
    return worst, worst_relative
