"""kdcli's speed, each measurement side by side with its baseline, in one process and one run.

    python bench/bench.py [--smoke] [--device cuda] [--data-dir data] [--students 1,6,24]
    PYTHONPATH=. python3 bench/bench.py            # full size: meant for a CUDA GPU (a few minutes)

1. teacher epoch (ResNet18, batch 128, SGD lr 0.1 momentum 0.9 wd 5e-4): kdcli's loop (data and
   augmentation on the device, fp16 autocast and channels_last on CUDA) vs a classic torchvision
   pipeline (PIL transforms in DataLoader workers, fp32, plain loop);
2. dump-logits images/s (the real `dump_logits`: augmentation + inference + HDF5 writing) vs bare
   inference of the same (compiled, on CUDA) teacher on views already augmented and normalised on the device;
   and the dump's own epoch loop with a writer that writes nothing, which splits the gap into HDF5's share
   and everything else's (augmentation, the copy to the host, the parameter draws);
3. student epoch (LeNet-5, batch 128): KD from the cache vs no KD (epochs of each in turn, 10 x repeat + 1
   rounds, the median of each: their difference is as small as an epoch's noise), and vs the teacher run
   online inside the student's step (not compiled; on CUDA replayed in the student's CUDA graph);
4. S students trained batched (one Group, vmap) vs the same S one after another (S=1 is the same work
   on both sides: its ratio shows the noise of the others).
The KD student's epoch in 3 and 4 is that median; the dump's images/s are of its --dump-epochs epochs, once.

Data is synthetic uint8 of CIFAR-10's shape unless --data-dir is given (speed does not depend on
pixel values); it is written as a CIFAR-10 folder so every stage reads it through its real loader.
Each measurement is the mean of --repeat epochs after one untimed warm-up epoch, with CUDA synchronised
around them; seconds are per 50,000-image epoch, scaled when fewer images are timed (the table says from how many).
--smoke (CI) proves that the script runs, not how fast anything is. Prints a table and writes it,
with the command line, as JSON to --out.
"""

import argparse
import gc
import json
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # kdcli from this checkout, installed or not

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import transforms

from kdcli import KdcliError, augment
from kdcli.cache import open_cache
from kdcli.checkpoint import save_atomic
from kdcli.config import StudentConfig, TeacherConfig
from kdcli.data import BATCH_FOLDER, TEST_FILE, TRAIN_FILES, NotOfficialDataWarning, load_cifar10
from kdcli.device import autocast_dtype, autocast_to, resolve_device
from kdcli.dump import DumpConfig, _write_epochs, compiles, dump_logits, view_labeller
from kdcli.evaluate import forward_batch, load_model
from kdcli.group import Group
from kdcli.models import create_model
from kdcli.runs import CachedTargets, DrawnAugmentation, Run

FULL = 50_000  # images in a CIFAR-10 training epoch: every s/epoch is scaled to it
BATCH = 128  # the reference recipe's batch, for teacher and students
NO_STOP = SimpleNamespace(requested=False)  # the Ctrl-C flag of Group.train_epoch and of the dump's loop, never set here
# Smoke: ResNet18 trains at ~94 images/s on 2 CPU cores (bench/README run 5), so one small step per epoch; no worker processes.
SMOKE = dict(images=64, teacher_images=16, students="1,2", dump_epochs=1, workers=0)
# dump_epochs 5: a dump waits for its last epoch's write with nothing to overlap it, 1 epoch in 300 in real use.
DEFAULT = dict(images=FULL, teacher_images=None, students="1,6,24", dump_epochs=5, workers=min(4, os.cpu_count() or 1))


def at_least_one(text: str) -> int:
    """A count flag's value: a whole number >= 1 (--repeat 0 would divide by zero after the first warm-up)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the benchmark runs (CI)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (default: synthetic data)")
    p.add_argument("--images", type=at_least_one, help=f"training images (default {FULL:,}; smoke {SMOKE['images']})")
    p.add_argument("--teacher-images", type=at_least_one, help="images of the teacher-training row (default: --images)")
    p.add_argument("--students", help="S values of the batched-students rows (default 1,6,24; smoke 1,2)")
    p.add_argument("--dump-epochs", type=at_least_one, help="augmented epochs dump-logits writes (default 5)")
    p.add_argument("--workers", type=int, help="DataLoader workers of the classic pipeline (default 4, or the CPU count where lower)")
    p.add_argument("--repeat", type=at_least_one, default=1, help="timed epochs per measurement, their mean reported (KD vs no KD: 10 x repeat + 1 rounds, their median)")
    p.add_argument("--out", default="bench/results/bench.json", help="JSON results file")
    args = p.parse_args(argv)
    for k, v in (SMOKE if args.smoke else DEFAULT).items():  # an explicit flag wins over the preset
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.teacher_images = min(args.teacher_images or args.images, args.images)
    try:
        args.students = [at_least_one(s) for s in args.students.split(",")]
    except argparse.ArgumentTypeError as e:
        p.error(f"argument --students: {e}")
    return args


# ---------------------------------------------------------------- timing


def timed(fn, device, repeat, images) -> float:
    """Seconds per 50,000 images of fn (which processes `images`): the mean of `repeat` calls after one
    untimed warm-up call (allocator, cuDNN algorithm choice, lazy initialisation)."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeat * FULL / images


def timed_rounds(fns: dict, device, rounds, images) -> dict:
    """{name: seconds per 50,000 images in each round} for fns timed in turn, one call each per round,
    after one untimed warm-up call each. For a pair whose difference is as small as an epoch's noise
    (an epoch of 0.16 s moves by 5 %): turn by turn, a drift of the clock or the machine hits both."""
    for fn in fns.values():
        fn()
    seconds = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in list(fns.items())[:: 1 if r % 2 == 0 else -1]:  # every other round reversed: none always runs first
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            seconds[name].append((time.perf_counter() - t0) * FULL / images)
    return seconds


def free_unreferenced():
    """Free dropped Groups now, also any that a reference cycle holds (torch's own; a Group and its CUDA graph
    step no longer make one); then give their memory back, so that the next measurement starts from the same state."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # CUDA runs asynchronously: wait for the queued kernels before reading the clock


def group_epoch(group):
    """One call = one training epoch of a kdcli Group, without end_epoch's evaluation and checkpoint I/O."""

    def epoch():
        group.train_epoch(NO_STOP)
        group.epoch, group.partial = group.epoch + 1, None  # the next call trains the next epoch's draws

    return epoch


# ---------------------------------------------------------------- inputs: data, teacher checkpoint


def write_synthetic_cifar(root: Path, n: int, n_test: int) -> Path:
    """Random uint8 images in the official cifar-10-batches-py pickle layout (as tests/conftest.py does)."""
    rng = np.random.default_rng(0)
    (root / BATCH_FOLDER).mkdir(parents=True)
    n = max(n, len(TRAIN_FILES))  # an image in every batch file, as the loader asks: --images 3 reads the first 3 (its subset)
    sizes = {name: len(part) for name, part in zip(TRAIN_FILES, np.array_split(np.arange(n), len(TRAIN_FILES)))}
    for name, size in {**sizes, TEST_FILE: n_test}.items():
        batch = {b"data": rng.integers(0, 256, (size, 3 * 32 * 32), dtype=np.uint8), b"labels": rng.integers(0, 10, size).tolist()}
        with open(root / BATCH_FOLDER / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def save_teacher(path: Path, model="resnet18") -> Path:
    """An untrained teacher checkpoint: speed does not depend on the weights."""
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({"model": create_model(model).state_dict(), "model_name": model, "num_classes": 10}, path)
    return path


def student(tmp, seed=0, weight=0.1) -> StudentConfig:
    return StudentConfig(seed=seed, distillation_weight=weight, temperature=4.0, out=str(tmp / f"student-{seed}"))


# ---------------------------------------------------------------- 1. teacher epoch


class ClassicCifar(torch.utils.data.Dataset):
    """What torchvision's datasets.CIFAR10 does per item: a uint8 HWC array -> PIL image -> transform."""

    def __init__(self, images_hwc, labels, transform):
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image  # torchvision's dependency

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def classic_teacher_epoch(data, device, workers):
    """The usual pipeline: CPU transforms in workers (restarted every epoch, the default), fp32, plain loop.
    cuDNN autotunes its convolutions too (resolve_device turns that on for the process), as usual scripts do."""
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(augment.MEAN, augment.STD),
    ])  # fmt: skip
    images = data.train_images.permute(0, 2, 3, 1).cpu().numpy()  # [N, 32, 32, 3] uint8, as torchvision stores it
    dataset = ClassicCifar(images, data.train_labels.cpu().numpy(), transform)
    loader = torch.utils.data.DataLoader(dataset, BATCH, shuffle=True, num_workers=workers, pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    model = create_model("resnet18").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def epoch():
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def bench_teacher(data, device, args, tmp) -> dict:
    m = args.teacher_images
    sub = replace(data, train_images=data.train_images[:m], train_labels=data.train_labels[:m])
    group = Group([Run(TeacherConfig(out=str(tmp / "teacher-run")), DrawnAugmentation(777, m))], sub, device)
    kdcli = timed(group_epoch(group), device, args.repeat, m)
    del group
    free_unreferenced()  # its weights, optimizer state and graph memory, before the baseline allocates its own
    classic = timed(classic_teacher_epoch(sub, device, args.workers), device, args.repeat, m)
    what = f"teacher epoch ResNet18, batch {BATCH} [s]: kdcli vs classic torchvision DataLoader ({args.workers} workers, fp32)"
    return row("teacher", what, kdcli, classic, m)


# ---------------------------------------------------------------- 2. dump-logits


def ready_views(images, p, batch: int) -> torch.Tensor:
    """The normalised views [N, 3, 32, 32] that params p make of images, built batch by batch as a dump
    builds them: what bare inference starts from."""
    return torch.cat([augment.normalize(augment.apply(images[i : i + batch], p[i : i + batch])) for i in range(0, len(images), batch)])


def dump_labellers(teacher_path, config: DumpConfig, device, compiled: bool) -> tuple:
    """(labeller, teacher, autocast dtype) as dump_logits makes them: the labeller of views (its --amp, compiled with
    the augmentation where the dump compiles: `compiled`, dump.compiles's answer), and the same teacher compiled alone
    there, for bare inference: the ratio of the two is then the dump's own overhead."""
    model, _ = load_model(teacher_path, device)  # eval mode, channels_last on CUDA, as in the dump
    dtype = autocast_dtype(config.amp, device)
    label = view_labeller(model, dtype, compiled, config.batch_size)
    return label, torch.compile(model, dynamic=False) if compiled else model, dtype


def bare_inference(model, views, batch: int, dtype):
    """One call = one pass of model over ready views, batch by batch, under autocast to dtype: inference alone."""

    @torch.no_grad()  # as the dump labels (teacher_logits)
    def infer():
        for i in range(0, len(views), batch):
            with autocast_to(dtype):
                model(views[i : i + batch])

    return infer


def dump_without_writes(config: DumpConfig, labeller, data):
    """One call = the dump's own epoch loop over config.epochs epochs (epoch e+1 queued on the device before
    epoch e is copied to the host and converted to its storage dtype), handed to a writer that writes nothing."""
    writer = SimpleNamespace(epochs_complete=0, write_epoch=lambda e, aug, logits: None)
    return lambda: _write_epochs(config, labeller, data, writer, False, NO_STOP)


def bench_dump(data, data_dir, teacher_path, device, args, tmp) -> tuple:
    """The real dump_logits into a temp HDF5 file vs bare inference. Its summary times only its epoch loop,
    which follows a warm-up (its un-augmented pass over the same images) and ends with its last epoch written."""
    n = len(data.train_labels)
    config = DumpConfig(
        teacher=str(teacher_path), epochs=args.dump_epochs, out=str(tmp / "logits.h5"), data_dir=str(data_dir),
        subset=n, device=device.type, download=False, quiet=True,
    )  # fmt: skip
    dump = dump_logits(config, progress=False)["images_per_s"]
    compiled = compiles(config, device)  # once: without Triton it warns
    label, teacher, dtype = dump_labellers(teacher_path, config, device, compiled)
    batch = forward_batch(config.batch_size, device)  # the dump's own: at most 64 images a pass on a CPU
    views = ready_views(data.train_images, augment.params(0, 0, n), batch)
    bare = FULL / timed(bare_inference(teacher, views, batch, dtype), device, args.repeat, n)
    no_io = FULL / timed(dump_without_writes(config, label, data), device, args.repeat, n * args.dump_epochs)
    same = "the same compiled teacher" if compiled else "the same teacher"
    rows = [
        row("dump", f"dump-logits [img/s]: augment + infer + HDF5 vs bare inference of {same} on ready views", dump, bare, n * args.dump_epochs, "img/s"),
        row("dump_no_io", "dump-logits without HDF5 [img/s]: all but HDF5 vs bare", no_io, bare, n * args.dump_epochs, "img/s"),
    ]
    return rows, Path(config.out)


# ---------------------------------------------------------------- 3. and 4. students


def bench_students(data, cache_path, teacher_path, device, args, tmp) -> list:
    n = len(data.train_labels)

    def group(configs, targets, teacher=None):
        return Group([Run(c, t) for c, t in zip(configs, targets)], data, device, teacher)

    def epoch(configs, targets, teacher=None):
        seconds = timed(group_epoch(group(configs, targets, teacher)), device, args.repeat, n)
        free_unreferenced()
        return seconds

    with open_cache(cache_path, data.fingerprint, data.num_classes) as cache:
        cached = CachedTargets(cache, n)
        pair = {"kd": group_epoch(group([student(tmp)], [cached])), "no_kd": group_epoch(group([student(tmp, weight=0)], [DrawnAugmentation(0, n)]))}
        # Many rounds: an H100 takes a LeNet-5 epoch in about 0.15 s or 0.175 s, whatever it computes; 5 rounds moved the ratio by 10 %.
        rounds = timed_rounds(pair, device, 10 * args.repeat + 1, n)
        del pair
        free_unreferenced()
        one, no_kd = statistics.median(rounds["kd"]), statistics.median(rounds["no_kd"])
        teacher, _ = load_model(teacher_path, device)  # eval mode, channels_last on CUDA: as a real teacher
        online = epoch([student(tmp)], [DrawnAugmentation(0, n)], teacher)
        rows = [
            {**row("student_vs_no_kd", f"student epoch LeNet-5 [s]: KD from the cache vs no KD (median of {len(rounds['kd'])} rounds)", one, no_kd, n), "rounds": rounds},
            row("student_vs_online", "student epoch LeNet-5 [s]: KD from the cache vs the teacher run online (not compiled)", one, online, n),
        ]
        for s in args.students:  # one after another = S x one student's epoch: each run is the same work
            batched = epoch([student(tmp, seed) for seed in range(s)], [cached] * s)
            what = "the same work twice (noise)" if s == 1 else "batched vs one after another"
            rows.append(row(f"students_{s}", f"S={s} students LeNet-5 KD [s]: {what}", batched, s * one, n))
    return rows


# ---------------------------------------------------------------- report


def row(key, what, kdcli, baseline, images, unit="s/epoch") -> dict:
    """ratio > 1: kdcli's way is that many times faster than the baseline."""
    ratio = kdcli / baseline if unit == "img/s" else baseline / kdcli
    return {"key": key, "what": what, "unit": unit, "kdcli": kdcli, "baseline": baseline, "ratio": ratio, "images_timed": images}


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def print_table(result):
    rows = result["measurements"]
    width = max(len(r["what"]) for r in rows)
    print(f"\nkdcli benchmark | {result['device']} | torch {result['torch']} | {result['date']}")
    print(f"{'what':<{width}}  {'kdcli':>10}  {'baseline':>10}  {'ratio':>7}")
    for r in rows:
        number = (lambda v: f"{v:,.0f}") if r["unit"] == "img/s" else (lambda v: f"{v:.4g}")
        print(f"{r['what']:<{width}}  {number(r['kdcli']):>10}  {number(r['baseline']):>10}  {r['ratio']:>6.2f}x")
    timed_on = sorted({r["images_timed"] for r in rows if r["unit"] == "s/epoch"})
    scaled = "" if timed_on == [FULL] else f", scaled from epochs of {' and '.join(f'{m:,}' for m in timed_on)} images"
    print(f"[s]: seconds per {FULL:,}-image epoch{scaled}. ratio: times faster kdcli's way is (< 1: the cost of what it adds)")
    if result["settings"].get("smoke"):  # its ratios (0.04x, 114x) would otherwise read as findings
        print("--smoke: sizes so small that these numbers only show the benchmark runs, nothing about speed")


def run(args) -> dict:
    device = resolve_device(args.device)
    warnings.filterwarnings("ignore", category=NotOfficialDataWarning)  # synthetic data is not the official release
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kdcli-bench-") as tmp:
        tmp = Path(tmp)
        data_dir = Path(args.data_dir) if args.data_dir else write_synthetic_cifar(tmp / "data", args.images, max(16, args.images // 5))
        if not (data_dir / BATCH_FOLDER).is_dir():  # load_cifar10's message is about a flag bench does not have
            raise KdcliError(f"no CIFAR-10 at {data_dir / BATCH_FOLDER}: bench never downloads; point --data-dir at a folder holding it, or leave it out for synthetic data")
        data = load_cifar10(data_dir, device, subset=args.images, download=False)
        teacher_path = save_teacher(tmp / "teacher" / "checkpoint.pt")
        rows = [bench_teacher(data, device, args, tmp)]
        print(f"teacher done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        dump_rows, cache_path = bench_dump(data, data_dir, teacher_path, device, args, tmp)
        print(f"dump-logits done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        rows += [*dump_rows, *bench_students(data, cache_path, teacher_path, device, args, tmp)]
    return {
        "device": device_name(device), "torch": torch.__version__, "date": datetime.now().isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv], "settings": vars(args), "seconds": round(time.perf_counter() - started, 1),
        "measurements": rows,
    }  # fmt: skip


def main(argv=None):
    args = parse_args(argv)
    try:
        result = run(args)
    except KdcliError as e:  # bad --data-dir, no GPU, ...: one line, as the CLI does
        sys.exit(f"bench: {e}")
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} in {result['seconds']} s")


if __name__ == "__main__":
    main()
