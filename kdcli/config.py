"""The options of the training commands: one typed dataclass per command, checked as it is built.

    config = TeacherConfig(epochs=30, scheduler="onecycle")   # ConfigError on a bad value
    config = StudentConfig(temperature=30, cache="cache/logits.h5")

Each field is one kebab-case flag of its command (cli.py builds the commands from these classes), with
its default and, on the same line, its unit and reason. Run folders record the config, so a resumed run
reads its options back (resume.py). The checks here need no data and no device: a bad value is refused
before anything is loaded, downloaded or written. sweep.py's SweepConfig and dump.py's DumpConfig build
on the same parts.
"""

import contextlib
import math
import numbers
import os
import re
import types
import typing
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Literal

from kdcli import DATA_DIR, Device, KdcliError, Precision, count
from kdcli.models import MODELS, canonical_name, unknown_model


def flag(name: str) -> str:
    """The command-line flag of a config field: lr_milestones -> --lr-milestones."""
    return "--" + name.replace("_", "-")


class ConfigError(KdcliError):
    """A bad option value; `option` names the flag (the CLI reports it as a usage error)."""

    def __init__(self, option, message):
        super().__init__(f"{option}: {message}")
        self.option, self.reason = option, message


@dataclass
class TrainOptions:
    """Options every training command shares; the commands add their seed(s), folder and targets."""

    model: str = "resnet18"  # architecture name (see `kdcli models`)
    epochs: int = 300  # passes over the training set (reference: 300)
    batch_size: int = 128  # images per step (reference: 128)
    lr: float = 0.1  # peak learning rate (reference: 0.1)
    optimizer: Literal["sgd", "adam"] = "sgd"  # reference: SGD
    momentum: float = 0.9  # SGD momentum (reference: 0.9)
    nesterov: bool = False  # Nesterov momentum for SGD
    weight_decay: float = 5e-4  # L2 penalty (reference: 5e-4)
    scheduler: Literal["multistep", "cosine", "onecycle", "none"] = "multistep"  # learning-rate schedule
    lr_milestones: tuple[int, ...] = (150, 225)  # epochs where multistep multiplies the lr by lr-gamma
    lr_gamma: float = 0.1  # multistep factor (reference: 0.1)
    device: Device = "auto"  # auto: cuda, then mps, then cpu
    amp: Precision = "bf16"  # autocast on CUDA: bf16, fp16 (with a loss scale) or off; no effect elsewhere
    compile: bool = False  # torch.compile the model (CUDA, a run alone; stacked students get CUDA graphs instead): a ResNet18 epoch 10% faster on an H100, after ~18 s of compiling on a fresh machine (2 s with Inductor's cache warm)
    cuda_graphs: bool = True  # replay each step as one CUDA graph (CUDA; small models are launch-bound)
    eval_every: int = 1  # epochs between test-set evaluations (the last epoch always is)
    save_every: int = 1  # epochs between checkpoints (1: a crash loses at most one epoch)
    data_dir: str = DATA_DIR  # folder holding cifar-10-batches-py/
    download: bool = True  # fetch CIFAR-10 when it is missing
    subset: int | None = None  # use only the first N training images (smoke runs)
    val_size: int = 0  # hold out the last N training images (after --subset) and report accuracy on them: choose settings by it, not by the test set
    resume: bool = False  # continue the run in --out from its checkpoint, with its own options where none are given
    force: bool = False  # overwrite a finished or unfinished run in --out (even with --resume: make's targets always pass --resume)
    quiet: bool = False  # one log line per evaluation instead of a progress bar

    def __post_init__(self):
        self.check()

    def check(self):
        """Raise ConfigError on a bad value; the commands' configs extend it."""
        check_types(self)
        check_ranges(self)
        check_choices(self)
        check_paths(vars(self))
        if self.model not in MODELS:  # checked before any data is loaded or downloaded
            raise ConfigError("--model", unknown_model(self.model))
        self.model = canonical_name(self.model)
        if self.subset is not None and self.val_size >= self.subset:  # else refused only once the data has loaded
            raise ConfigError("--val-size", f"must be between 0 and {self.subset - 1} (the --subset images less one), got {self.val_size}")
        if self.nesterov and not self.momentum > 0:
            raise ConfigError("--nesterov", "needs --momentum > 0")
        check_no_repeats(self.lr_milestones, "--lr-milestones")  # a repeated one multiplies by lr-gamma twice, unremarked
        if any(m < 1 for m in self.lr_milestones):  # epoch 0 is before the first: the lr would start at lr * gamma
            raise ConfigError("--lr-milestones", f"must be epochs >= 1, got {min(self.lr_milestones)} (to start lower, give a lower --lr)")
        check_lr_fits_float32(self)

    def warn_ineffective(self):
        """Options that are valid but will do nothing; called as training is about to start, after every check
        of data and folders: a warning just before an error is noise."""
        late = [m for m in self.lr_milestones if m >= self.epochs]
        if self.scheduler == "multistep" and late:
            warnings.warn(f"--lr-milestones {','.join(map(str, late))} are at or beyond --epochs {self.epochs}: they never apply", stacklevel=3)
        defaults = {f: TrainOptions.__dataclass_fields__[f].default for f in ("lr_milestones", "lr_gamma", "momentum", "nesterov")}
        multistep_only = [flag(f) for f in ("lr_milestones", "lr_gamma") if getattr(self, f) not in (defaults[f], ())]  # (): none given
        if self.scheduler != "multistep" and multistep_only:
            one = len(multistep_only) == 1
            warnings.warn(f"{' and '.join(multistep_only)} {'does' if one else 'do'} nothing with --scheduler {self.scheduler}: only multistep reads {'it' if one else 'them'}", stacklevel=3)
        sgd_only = [flag(f) for f in ("momentum", "nesterov") if getattr(self, f) != defaults[f]]
        if self.optimizer == "adam" and sgd_only:  # the default --momentum is no one's choice: not said
            warnings.warn(f"{' and '.join(sgd_only)} {'does' if len(sgd_only) == 1 else 'do'} nothing with --optimizer adam: Adam keeps its own averages", stacklevel=3)


@dataclass
class TeacherConfig(TrainOptions):
    seed: int = 777  # initialisation, batch order and augmentation (reference: 777)
    amp: Precision = "fp16"  # autocast on CUDA: fp16 with a loss scale (3% faster than bf16 for ResNet18 on an H100: batch norm runs in cuDNN), bf16 or off; no effect elsewhere
    out: str = "runs/teacher"  # run folder: config.json, metrics.jsonl, checkpoint.pt, summary.json

    def check(self):
        super().check()
        check_seed(self.seed)


@dataclass
class DistillOptions:
    """The soft-target options a student and a sweep share."""

    cache: str = "cache/logits.h5"  # teacher-logit cache written by dump-logits
    distillation_weight: float = 0.1  # weight of T^2 * KL; 0 trains without the teacher (the baseline)
    hard_weight: float = 1.0  # weight of the cross-entropy with the true labels
    allow_partial: bool = False  # train from an unfinished cache, using its complete epochs
    data_dir: str = DATA_DIR  # folder holding cifar-10-batches-py/ (not given: the cache's, with distillation; the default where it recorded none)
    subset: int | None = None  # use only the first N training images (not given: the cache's, with distillation)

    def check(self):
        super().check()
        if self.distillation_weight == self.hard_weight == 0:
            raise ConfigError("--distillation-weight/--hard-weight", "both are 0: the loss would be 0 and nothing would train")


@dataclass
class StudentConfig(DistillOptions, TrainOptions):
    model: str = "lenet5"  # architecture name (see `kdcli models`)
    seed: int = 777  # initialisation and batch order; a baseline's augmentation too (a KD student's views come from the cache)
    temperature: float = 30.0  # softmax temperature T of the soft targets (0.001 to 10,000); 30: the best of the reference table
    out: str = "runs/student"  # run folder: config.json, metrics.jsonl, checkpoint.pt, summary.json

    def check(self):
        super().check()
        check_seed(self.seed)
        check_temperature(self.temperature)


def check_types(config):
    """Every field holds a value of its type, stored as JSON records it: a Path as str, a list as a tuple, numpy
    numbers as Python's. The CLI parses to these types; a library caller's epochs="3" or temperatures=30 would
    otherwise fail mid-run as a TypeError, and data_dir=Path(...) as config.json is written."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):  # fields only: not a ClassVar
        value = getattr(config, f.name)
        try:
            setattr(config, f.name, _as_type(hints[f.name], value))
        except TypeError:
            raise ConfigError(flag(f.name), f"must be {_described(hints[f.name])}, got {value!r}") from None


def _as_type(annotation, value):
    """`value` as a field of type `annotation` stores it; TypeError where it is not of that type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return value  # check_choices names the values
    if origin in (types.UnionType, typing.Union):  # int | None
        for option in args:
            with contextlib.suppress(TypeError):
                return _as_type(option, value)
    elif origin is tuple and isinstance(value, Iterable) and not isinstance(value, str):  # a list, a numpy array
        return tuple(_as_type(args[0], v) for v in value)
    elif (annotation is type(None) and value is None) or (annotation is bool and isinstance(value, bool)):  # a bool, not whatever is truthy (quiet="no")
        return value
    elif annotation in (int, float) and isinstance(value, numbers.Integral if annotation is int else numbers.Real) and not isinstance(value, bool):  # True is an int to Python
        return annotation(value)
    elif annotation is str and isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise TypeError


def _described(annotation) -> str:
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        return " or ".join(map(_described, typing.get_args(annotation)))
    if typing.get_origin(annotation) is tuple:  # "an integer" -> "a tuple or list of integers"
        return f"a tuple or list of {_described(typing.get_args(annotation)[0]).split(' ', 1)[1]}s"
    return {bool: "a bool", int: "an integer", float: "a number", str: "a string", type(None): "None"}[annotation]


def check_choices(config):
    """Every Literal field holds one of its values. The CLI enforces them, library callers are not held to them,
    and a wrong one would not fail: scheduler="onecylce" trains at a constant lr, amp=True (bf16 before
    2026-11-27) in float32."""
    for name, annotation in typing.get_type_hints(type(config)).items():
        choices = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()
        value = getattr(config, name)
        if choices and value not in choices:
            raise ConfigError(flag(name), f"must be one of {', '.join(choices)}, got {value!r}{instead_of_choice(value)}")


def instead_of_choice(value) -> str:
    """What to pass instead of a value outside its option's choices, where it is plain: PyTorch's cuda:1 names a GPU,
    which kdcli takes from the environment: its CUDA graphs and compiled steps were only ever run on the current device."""
    if isinstance(value, str) and (gpu := re.fullmatch(r"cuda:(\d+)", value)):
        return f": to use GPU {gpu[1]}, run with CUDA_VISIBLE_DEVICES={gpu[1]} and --device cuda"
    return ""


def check_paths(options: dict):
    """No path option is empty: "" is the current folder to Path, so `--out "$OUT"` with OUT unset would
    otherwise train there, or read a cache named '.'. `options`: a config's fields (vars), or the command line's."""
    for name in ("out", "data_dir", "cache", "teacher"):
        if options.get(name) == "":
            raise ConfigError(flag(name), "must not be empty")


# The range of every number option of every command that has it, as "must be ..., got ..." says it. A comparison
# with nan is false, so each refuses nan too.
RANGES = {
    **dict.fromkeys(("epochs", "batch_size", "eval_every", "save_every", "subset"), (lambda v: v is None or v >= 1, "at least 1")),  # None: unset
    "val_size": (lambda v: v >= 0, ">= 0"),
    "lr": (lambda v: 0 < v < math.inf, "a finite number > 0"),
    "weight_decay": (lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "momentum": (lambda v: 0 <= v < 1, ">= 0 and < 1"),  # 1 and above: past gradients never fade, and the steps grow without bound
    "lr_gamma": (lambda v: 0 < v < math.inf, "a finite number > 0"),
    **dict.fromkeys(("distillation_weight", "hard_weight"), (lambda v: 0 <= v < math.inf, "a finite number >= 0")),
    "parallel": (lambda v: v >= 0, ">= 0"),
}


def check_ranges(config):
    """Every number option the config has is in its RANGES."""
    for name, (holds, what) in RANGES.items():
        if hasattr(config, name) and not holds(getattr(config, name)):
            raise ConfigError(flag(name), f"must be {what}, got {getattr(config, name)}")


# An optimizer on the CPU takes the lr as a float32 factor: past this it fails with a traceback, not a diverged loss.
FLOAT32_MAX = 3.4028234663852886e38


def check_lr_fits_float32(config):
    """The highest lr the schedule reaches (lr * gamma^k after the k milestones before --epochs, where --lr-gamma > 1)
    fits a float32. Compared in logarithms: gamma^k alone may overflow a Python float."""
    rises = sum(m < config.epochs for m in config.lr_milestones) if config.scheduler == "multistep" and config.lr_gamma > 1 else 0
    if config.lr > FLOAT32_MAX:
        raise ConfigError("--lr", f"must be at most {FLOAT32_MAX:.2g} (float32's largest number), got {config.lr:g}")
    if math.log(config.lr) + rises * math.log(config.lr_gamma) > math.log(FLOAT32_MAX):
        raise ConfigError("--lr-gamma", f"{config.lr_gamma:g} at {count(rises, 'milestone')} takes --lr {config.lr:g} past {FLOAT32_MAX:.2g}, float32's largest number")


def check_seed(seed: int, option="--seed"):
    if not 0 <= seed < 2**63:  # torch.manual_seed and HDF5 attributes hold 64 bits
        raise ConfigError(option, f"must be between 0 and 2**63 - 1, got {seed}")


# At T = 10,000 float32 still gives the KD gradients to 3e-5, though the logged loss's KD term, a difference of float32
# sums that nearly cancel, is up to a third off (0.2 % at T = 1,000); beyond, the soft targets' small differences from
# uniform drown in rounding. The reference's largest T is 100. Below T = 0.001 the soft targets are one-hot wherever
# two logits differ by 0.1 (e^-100), and logits / T heads for float32's overflow. Below T = 1 the T^2 scaling shrinks
# the KD gradient with T (1e-3 of its size at T = 0.001): the student trains almost as a baseline.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.001, 10_000


def check_temperature(t: float, option="--temperature"):
    if not MIN_TEMPERATURE <= t <= MAX_TEMPERATURE:  # also catches nan
        raise ConfigError(option, f"must be between {MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:,}, got {t:g}")


def check_no_repeats(values, option: str):
    if repeated := sorted({v for v in values if values.count(v) > 1}):
        raise ConfigError(option, f"values must not repeat ({', '.join(f'{v:g}' for v in repeated)} does)")
