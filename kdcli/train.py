"""One training loop for teachers and students (their options: config.py; a group's state: group.py).

    summary = train_teacher(TeacherConfig(epochs=30, scheduler="onecycle"))
    summary = train_student(StudentConfig(temperature=30))
    summaries = train_runs([run, run, ...], data, device)   # S students at once, side by side

The loop claims the runs' folders, starts or resumes them, trains their Group epoch
by epoch with a progress bar, and writes each run's summary.json at the end.
"""

import contextlib
import sys
import warnings

import torch
import torch.nn as nn
from tqdm import tqdm

from kdcli import KdcliError, count, redraw_intervals
from kdcli.config import StudentConfig, TeacherConfig
from kdcli.data import load_cifar10
from kdcli.device import autocast_dtype, resolve_device, triton_found
from kdcli.group import Group
from kdcli.models import float32_by_default
from kdcli.records import check_record, read_json
from kdcli.resume import check_can_start, check_resumed_on_its_images, check_same_inputs, prepare_run_dir
from kdcli.runs import CachedTargets, DrawnAugmentation, Run, check_run_folder, claim_folder
from kdcli.signals import StopOnSignal


def train_runs(runs: list, data, device: torch.device, teacher: nn.Module | None = None, progress=True, in_sweep=False, stop=None) -> list:
    """Train S runs side by side; return their summaries.

    `teacher`, when given, labels every batch online (no cache): the cache-equivalence test
    uses it (the benchmark gives its teacher to Group directly); kdcli itself trains students from the cache.
    `in_sweep`: the calling sweep holds the runs' folders (runs.claim_folder) already, warns about their options
    (TrainOptions.warn_ineffective) and speaks for its students.
    `stop`: the caller's StopOnSignal, so that a Ctrl-C after the last step (evaluating, saving) reaches it.
    """
    with contextlib.ExitStack() as held:
        with_torch_defaults(held)
        if not in_sweep:
            for r in runs:
                check_run_folder(r.dir)  # before claim_folder makes the folder
                held.enter_context(claim_folder(r.dir))  # before anything in it is read or deleted
        if stop is None:
            stop = StopOnSignal()
            held.callback(stop.restore)
        return _train_claimed(runs, data, device, teacher, progress, stop, in_sweep)


def with_torch_defaults(held: contextlib.ExitStack):
    """Train with gradients and float32 tensors whatever modes the caller's process is in: a notebook's torch.no_grad(),
    inference_mode() or set_grad_enabled(False) made the first step a RuntimeError, and its set_default_dtype(torch.float64)
    made the loss's factors float64. `held` puts the caller's modes back."""
    held.enter_context(torch.inference_mode(False))
    held.enter_context(torch.enable_grad())
    held.enter_context(float32_by_default())


def _train_claimed(runs, data, device, teacher, progress, stop, in_sweep) -> list:
    states = [prepare_run_dir(r.config) for r in runs]
    for r, state in zip(runs, states):
        if state is not None:  # resumed, or finished and kept: the same images and soft targets as before
            check_same_inputs(r)
    if not in_sweep:
        warn_of_cache(runs[0])
    if all(s == "done" for s in states):  # kept (--resume): "kept" tells the caller nothing trained now
        return [{**check_record(read_json(r.dir / "summary.json"), r.dir / "summary.json", required=("model", "test_accuracy", "epochs")), "kept": True} for r in runs]
    if any(s == "done" for s in states) or len(set(map(epoch_and_step, states))) > 1:
        raise KdcliError("runs trained together must all be at the same epoch and step; train them separately")
    if not in_sweep:
        runs[0].config.warn_ineffective()
    group = _start_or_resume(runs, states, data, device, teacher, progress, in_sweep)
    _train_epochs(group, stop, progress)
    if stop.requested and not in_sweep and progress:  # it came during the last epoch's evaluation: the run is complete, not stopped
        print(f"{runs[0].dir}: finished before the next safe point; nothing to resume", file=sys.stderr, flush=True)
    return group.write_summaries()


def epoch_and_step(state: dict | None) -> tuple[int, int]:
    """Where a run's checkpoint `state` resumes it: epochs complete and steps into the next; (0, 0) for a new run."""
    return (0, 0) if state is None else (state["epoch"], state.get("step", 0))


def _start_or_resume(runs, states, data, device, teacher, progress, in_sweep) -> Group:
    """The runs' group, fresh (its folders started) or at the epoch and step of their checkpoints."""
    group = Group(runs, data, device, teacher, in_sweep)
    if states[0] is None:
        group.start_folders()
        if progress and not in_sweep and runs[0].config.resume and not runs[0].config.force:  # a mistyped --out would otherwise start a run of defaults unremarked
            print(f"{runs[0].dir}: nothing to resume, a new run starts", file=sys.stderr, flush=True)
    else:
        group.load(states)
        if progress:
            if group.step == group.steps:  # stopped after the epoch's last step: its evaluation and checkpoint are left
                where = f"the end of epoch {group.epoch + 1} (its steps done)"
            else:
                where = f"epoch {group.epoch + 1}" + (f", step {group.step + 1}" if group.step else "")
            print(f"resuming {', '.join(str(r.dir) for r in runs)} at {where}", file=sys.stderr, flush=True)
    return group


def _train_epochs(group, stop, progress):
    """Epoch after epoch to the last; a stop asked for ends it before the next step (TrainingInterrupted; checkpoint
    saved where a step was trained)."""
    # Counted in images, step by step: an epoch of ResNet18 on a CPU takes half an hour.
    config, n = group.config, group.num_images
    bar = tqdm(total=config.epochs * n, initial=group.epoch * n + min(group.step * config.batch_size, n), unit="img", unit_scale=True,
               desc=f"epoch {group.epoch + 1}/{config.epochs}", disable=not progress or config.quiet, dynamic_ncols=True, **redraw_intervals())  # fmt: skip
    try:
        while group.epoch < config.epochs:
            seconds = group.train_epoch(stop, on_step=bar.update)
            group.end_epoch(seconds)
            _show_progress(bar, group, seconds, progress)
    finally:
        bar.close()


def _show_progress(bar, group, seconds, progress):
    config = group.config

    def mean(values, digits, unit="%"):  # a group shows the mean of its runs; "-" before the first evaluation
        known = [v for v in values if v is not None]
        return f"{sum(known) / len(known):.{digits}f}{unit}" if known else "-"

    if not config.quiet:
        val = {"val": mean(group.val_accuracy, 1)} if group.validating else {}
        bar.set_postfix(loss=mean(group.train_loss, 3, ""), train=mean(group.train_accuracy, 1), **val, test=mean(group.test_accuracy, 1), refresh=False)  # the bar itself shows img/s
        if group.epoch < config.epochs:  # the last epoch's line is drawn by bar.close(): drawn here too, a log held it twice
            bar.refresh()  # the epoch's line with its own numbers, the one a log keeps
            bar.set_description(f"epoch {group.epoch + 1}/{config.epochs}", refresh=False)
    elif progress and (group.epoch % config.eval_every == 0 or group.epoch == config.epochs):
        val = f"val {mean(group.val_accuracy, 2)}  " if group.validating else ""
        print(
            f"epoch {group.epoch}/{config.epochs}  loss {mean(group.train_loss, 4, '')}  train {mean(group.train_accuracy, 2)}  "
            f"{val}test {mean(group.test_accuracy, 2)}  {seconds:.2f}s  {group.num_images * group.size / seconds:,.0f} img/s",
            file=sys.stderr,  # a log line, where the bar would be: stdout holds the result alone
            flush=True,
        )


# ---------------------------------------------------------------- the two commands


def device_and_data(config):
    """The device a training command's config asks for, and its training images there."""
    device = resolve_device(config.device)
    autocast_dtype(config.amp, device)  # refuses bf16 on a GPU without it here, before --force deletes the old run
    if config.compile and device.type == "cuda" and not triton_found():  # compile would fail at the first step: too late
        raise KdcliError("--compile needs Triton and a GPU it supports (compute capability 7.0 or newer), which torch.compile does not find here: run again with --no-compile")
    return device, load_cifar10(config.data_dir, device, config.subset, config.download, config.val_size)


def train_teacher(config: TeacherConfig, progress=True) -> dict:
    """Train the teacher run in config.out (resumed, or kept when finished, as config.resume says); return its
    summary.json as a dict, with "kept": True where nothing trained now. progress: a bar (config.quiet: a line per
    evaluation) and notes on stderr; False: nothing printed. Raises KdcliError, TrainingInterrupted on Ctrl-C."""
    config.check()  # again: a field set since the config was built (cfg.out = Path(...), cfg.optimizer = "Adam") was never checked
    check_can_start(config)
    device, data = device_and_data(config)
    run = Run(config, DrawnAugmentation(config.seed, len(data.train_labels)), {"train_fingerprint": data.fingerprint})
    return train_runs([run], data, device, progress=progress)[0]


def student_runs(configs: list, data, cache=None) -> list:
    """Runs for student configs: KD students read `cache`, baselines (weight 0) draw their own views."""
    runs, images = [], {"train_fingerprint": data.fingerprint}
    for c in configs:
        if c.distillation_weight > 0:
            from_cache = {
                "cache_teacher_sha256": cache.attrs["teacher_sha256"], "cache_teacher_test_accuracy": cache.attrs["teacher_test_accuracy"],
                "cache_epochs": cache.epochs_complete, "cache_seed": cache.attrs["seed"], "teacher_saw_val_images": teacher_saw_val_images(cache, data),
            }  # fmt: skip
            runs.append(Run(c, CachedTargets(cache, len(data.train_labels)), {**images, **from_cache}))
        else:
            runs.append(Run(c, DrawnAugmentation(c.seed, len(data.train_labels)), images))
    return runs


def teacher_saw_val_images(cache, data) -> int:
    """How many of the held-out images the cache's teacher trained on (it trained on the first K)."""
    seen = int(cache.attrs.get("teacher_train_images", cache.num_images))  # caches of before --val-size: every image
    return max(0, seen - len(data.train_labels))


def open_student_cache(config: StudentConfig, data):
    """The cache a KD student reads, validated against its data, or None for a baseline."""
    from kdcli.cache import open_cache  # h5py is only needed by students of a cache

    if config.distillation_weight == 0:
        return None
    return open_cache(config.cache, data.fingerprint, data.num_classes, config.allow_partial, data.num_before_split)  # it labels the held-out images too


def warn_of_cache(run):
    """What a student should know of the cache it reads, from its inputs (student_runs): said once its folder and
    inputs are checked, as it trains or is kept, since a warning just before a refusal is noise."""
    config, inputs = run.config, run.inputs
    if seen := inputs.get("teacher_saw_val_images"):
        warnings.warn(
            f"the teacher of {config.cache} trained on {seen} of the {config.val_size} images --val-size holds out: "
            "its soft targets carry what it learned from them, so validation accuracy favours KD; "
            "train the teacher with the same --subset and --val-size for a fair choice",
            stacklevel=2,
        )
    if inputs.get("cache_epochs", config.epochs) < config.epochs:
        warnings.warn(
            f"{config.cache} has {count(inputs['cache_epochs'], 'epoch')} for a {config.epochs}-epoch student: "
            f"student epoch e reuses cached epoch e mod {inputs['cache_epochs']}",
            stacklevel=2,
        )


def train_student(config: StudentConfig, progress=True) -> dict:
    """Train the student run in config.out from config.cache (a baseline with distillation_weight 0); return and
    print as train_teacher does."""
    config.check()  # again, as train_teacher does
    check_can_start(config)
    device, data = device_and_data(config)
    check_resumed_on_its_images(config, data)
    cache = open_student_cache(config, data)
    try:
        return train_runs(student_runs([config], data, cache), data, device, progress=progress)[0]
    finally:
        if cache is not None:
            cache.close()
