"""The command line: parses options, calls one library function, prints.

Each command's options are generated from its config dataclass (one kebab-case
flag per field, the field's same-line comment as its help), so a new option is
one line in the dataclass. Library errors (KdcliError) end as one line on
stderr and exit status 1; bad option values are usage errors (exit status 2).
"""

import contextlib
import inspect
import json
import os
import re
import shlex
import shutil
import sys
import typing
import warnings
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Literal

import torch
import typer

from kdcli import DATA_DIR, Device, Interrupted, KdcliError, __version__, count, utf8_refusal
from kdcli import report as reporting
from kdcli.cache import cache_info as read_info
from kdcli.cache import check_cache_is_there
from kdcli.config import ConfigError, StudentConfig, TeacherConfig, TrainOptions, check_paths, flag, instead_of_choice
from kdcli.data import CLASSES, recorded_data_dir
from kdcli.dump import DumpConfig, dump_logits, verify_cache
from kdcli.dump import check_can_start as dump_can_start
from kdcli.evaluate import evaluate as evaluate_checkpoint
from kdcli.models import ALIASES, MODELS, parameter_count
from kdcli.resume import check_can_start, check_options_kept, options_of_inputs, recorded_options
from kdcli.runs import LOCK
from kdcli.sweep import SweepConfig, sweep
from kdcli.sweep import check_can_start as sweep_can_start
from kdcli.train import train_student, train_teacher

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,  # click's plain help and one-line errors: no boxes, no <bool> beside every flag
    context_settings={"max_content_width": 120},  # up to 120 columns where the terminal has them (click stops at 80)
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Knowledge distillation on CIFAR-10: train-teacher -> dump-logits -> train-student.",
)


def _field_help(cls) -> dict:
    """{field: help} from the same-line comments of a dataclass and its bases."""
    helps = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # no source (frozen app): flags still work, without help text
            continue
        for name, comment in re.findall(r"^\s+(\w+): [^#\n]*#\s*(.+)$", source, re.M):
            helps[name] = comment
    return helps


def _option_type(annotation):
    """Tuples become comma-separated strings on the command line; Literals are strings from a fixed choice."""
    if typing.get_origin(annotation) in (tuple, Literal):
        return str
    return annotation


def _metavar(annotation) -> dict:
    """What a value looks like in --help: INT, FLOAT, TEXT, INT,... (Typer's own is <int>, and <bool> on flags)."""
    if annotation is bool or typing.get_origin(annotation) is Literal:
        return {}  # flags take no value; a Literal shows its choices (_choice)
    if typing.get_origin(annotation) is tuple:
        return {"metavar": _metavar(typing.get_args(annotation)[0])["metavar"] + ",..."}
    item = next((t for t in typing.get_args(annotation) if t is not type(None)), annotation)  # int | None: INT
    return {"metavar": {int: "INT", float: "FLOAT"}.get(item, "TEXT")}


def _choice(annotation) -> dict:
    """A Literal option checked by a callback, for a plain "'gpu' is not one of ..." without the
    "Value error," that Typer's own Literal conversion puts in front."""
    if typing.get_origin(annotation) is not Literal:
        return {}
    choices = typing.get_args(annotation)

    def one_of(value):
        if value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, choices))}{instead_of_choice(value)}")
        return value

    return {"callback": one_of, "metavar": "[" + "|".join(choices) + "]"}


def _quoted(option: str) -> str:
    """An option as click names it in its own usage errors ("Invalid value for '--epochs'"), so that ours read the same."""
    return f"'{option}'"


def _parse_list(value: str, item_type, option: str) -> tuple:
    """"150,225" -> (150, 225); "" -> () (--lr-milestones "": none). An empty item ("1,,2") is a typo, not a skip."""
    try:
        return tuple(item_type(v) for v in value.split(",")) if value.strip() else ()
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated {item_type.__name__}s, got {value!r}", param_hint=_quoted(option)) from None


def _refused_flag(name: str, why: str) -> inspect.Parameter:
    """A flag a command lacks but a user may type by analogy with the others: said why, not click's "No such option"."""

    def refuse(value):
        if value:
            raise typer.BadParameter(why, param_hint=_quoted(flag(name)))
        return value

    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=typer.Option(False, flag(name), hidden=True, help=why, callback=refuse), annotation=bool)


def command_from(cls, name: str, run, can_start, short_help: str):
    """Register `kdcli NAME` with one option per field of dataclass `cls`; `run(config)` does the work, after
    `can_start(config)`, the library's refusals that need no data, has let it. `short_help`: its line in `kdcli --help`."""
    hints = typing.get_type_hints(cls)
    helps = _field_help(cls)
    hidden = getattr(cls, "cli_hidden", {})  # field -> why a command lacks it: hidden fields keep their defaults
    shown = [f for f in fields(cls) if f.name not in hidden]
    lists = {f.name: typing.get_args(hints[f.name])[0] for f in shown if typing.get_origin(hints[f.name]) is tuple}
    resumable = any(f.name == "resume" for f in shown)
    out_of_memory = OUT_OF_MEMORY.get(name, OUT_OF_MEMORY[None])

    def command(ctx: typer.Context, **options):
        options = {k: v for k, v in options.items() if k not in hidden}
        for field_name, item_type in lists.items():
            options[field_name] = _parse_list(options[field_name], item_type, flag(field_name))
        _run_command(cls, ctx, options, run, can_start, resume_flag=resumable, out_of_memory=out_of_memory)

    params = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        *(_option(f, hints[f.name], helps.get(f.name, "")) for f in shown),
        *(_refused_flag(field_name, why) for field_name, why in hidden.items()),
    ]
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = run.__doc__
    app.command(name, short_help=short_help)(command)


def _option(field, annotation, help_text: str) -> inspect.Parameter:
    """A dataclass field as the keyword parameter Typer reads its option into: --name (--name/--no-name for a
    bool), a tuple's default shown as it is typed, comma-separated."""
    default = field.default if field.default is not MISSING else field.default_factory()
    decls = [f"{flag(field.name)}/--no-{flag(field.name)[2:]}"] if annotation is bool else [flag(field.name)]
    if typing.get_origin(annotation) is tuple:
        default = ",".join(str(v) for v in default)
    option = typer.Option(default, *decls, help=help_text, **_metavar(annotation), **_choice(annotation))
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=_option_type(annotation))


def _run_command(cls, ctx, options: dict, run, can_start, resume_flag: bool, out_of_memory):
    """The body of every command made by command_from: its config from the parsed `options`, checked, then run."""
    with bad_values_as_usage_errors():
        check_paths(options)  # before --resume reads a run back from --out "" (the current folder)
    with errors_as_one_line(resume_flag=resume_flag, out_of_memory=out_of_memory):
        # What reading options back says is said once the command can run: before a usage error or a refusal, a
        # note or warning about a run that never starts misleads, and the error is to be the one line printed.
        with warnings.catch_warnings(record=True) as held:
            typed = {name for name in options if ctx.get_parameter_source(name).name != "DEFAULT"}
            as_run, said = options_as_run(cls, options, typed)
            config = make_config(cls, as_run, read={k for k, v in as_run.items() if k not in typed and v != options.get(k)})
            can_start(config)
        for w in held:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        if said:
            typer.echo(said, err=True)
        if "cache" in typed and as_run.get("distillation_weight") == 0:
            warn_cache_not_read(as_run)
        run(config)


def options_as_run(cls, options: dict, typed: set) -> tuple[dict, str]:
    """The options a command runs with, and the line that says what was read from its input (with_images_of_inputs).
    A `typed` one always wins; else a training run's --resume reads the run's own back; else --data-dir and --subset
    are those the teacher or cache recorded; else the default."""
    given = typed  # and what --resume reads back: options with_images_of_inputs leaves alone
    # With --force too: `--resume --force` trains the run again with its own options. A dump's --resume only keeps
    # its complete cache.
    if options.get("resume") and issubclass(cls, TrainOptions):
        recorded = recorded_back(cls, options, given)
        options, given = {**options, **recorded}, given | set(recorded)  # a run's own images come before its inputs'
    return with_images_of_inputs(options, given)


def with_images_of_inputs(options: dict, given: set) -> tuple[dict, str]:
    """--data-dir and --subset, where not given, are those the teacher's run or the cache recorded: a dump labels,
    and a student learns, the images its teacher was trained on. The line that says so ("" where none) is to be
    said even with --quiet: nothing else shows it."""
    recorded = options_of_inputs(options)  # {} for a teacher, which reads no earlier stage
    read = {k: v for k, v in recorded.items() if k not in given and v != options[k]}
    source = f"the teacher's run {options.get('teacher')}" if "teacher" in options else f"the cache {options.get('cache')}"
    if "data_dir" in recorded and "data_dir" not in given:  # the default `data` too: from another folder, it is another one
        recorded_data_dir(recorded, source)
    said = f"{' '.join(f'{flag(k)} {v}' for k, v in read.items())}: as {source} recorded (pass others to override)" if read else ""
    return {**options, **read}, said


def warn_cache_not_read(options: dict):
    """A student given --cache with --distillation-weight 0, meant as the baseline of the cache's students, reads
    neither the cache nor its images: said where its --data-dir or --subset differs from the cache's."""
    recorded = options_of_inputs({**options, "distillation_weight": 1})  # the images the cache's students learn
    other = [k for k, v in recorded.items() if not _same_option_value(k, options[k], v)]

    def said(values):
        return " ".join(f"{flag(k)} {'all' if values[k] is None else values[k]}" for k in other)

    if other:
        warnings.warn(f"--cache is not read with --distillation-weight 0: this student trains on {said(options)}, not the "
                      f"cache's {said(recorded)}; give those to compare it with the cache's students", stacklevel=2)  # fmt: skip


def _same_option_value(name: str, a, b) -> bool:
    """--data-dir by the folder it names (`data`, `./data/`, its absolute path or a link to it are one), others by value."""
    if name == "data_dir" and isinstance(a, str) and isinstance(b, str):
        return os.path.realpath(a) == os.path.realpath(b)
    return a == b


def recorded_back(cls, options: dict, given: set) -> dict:
    """--resume: every option not given on the command line is the one the run in --out started with."""
    hints = typing.get_type_hints(cls)
    recorded = recorded_options(options["out"], options)
    if not options.get("force"):  # before the run's own fill in the rest: one of them may not fit a typed one (--val-size with --subset)
        check_options_kept({k: options[k] for k in given if k != "model"}, recorded, options["out"])  # the model by its alias: check_same_options
    back = {k: tuple(v) if typing.get_origin(hints[k]) is tuple else v for k, v in recorded.items() if k in options and k not in given}
    if "data_dir" in back:  # a run moved, or resumed from another folder: its relative --data-dir names another folder
        recorded_data_dir(back, f"the run in {options['out']}")
    if "cache" in back and {**options, **back}.get("distillation_weight", 0) > 0:
        check_cache_is_there(back["cache"], recorded_by=f"the run in {options['out']}")
    return back


def make_config(cls, options, read=frozenset()):
    """The command's config; a bad value is a usage error (exit status 2) naming its flag, but for one `read` back from a
    run's or an input's records (options_as_run): no usage error, that file was written by another kdcli or edited."""
    try:
        return cls(**options)
    except ConfigError as e:
        name = e.option.removeprefix("--").replace("-", "_")
        if name not in read:
            with bad_values_as_usage_errors():
                raise
        value = ",".join(map(str, options[name])) if isinstance(options[name], tuple) else options[name]  # as it would be typed
        raise KdcliError(f"{e.option} {value}, read back from what a run or cache recorded, is refused by this kdcli ({e.reason}): written by "
                         f"another kdcli, or edited since. Pass {e.option} yourself (to a run you resume, with --force: it trains again)") from None  # fmt: skip


@contextlib.contextmanager
def bad_values_as_usage_errors():
    """Library refusals of an option's value as click's usage errors (exit status 2): a ConfigError's reason
    without its "--flag: ", which click's "Invalid value for '--flag'" says already."""
    try:
        yield
    except ConfigError as e:
        raise typer.BadParameter(e.reason, param_hint=_quoted(e.option)) from None


def _sweep_out_of_memory(e: torch.OutOfMemoryError) -> str:
    """Fewer students at once where the sweep trained several (sweep._train_groups records how many); where it trained
    one at a time already (--parallel 1, a model that cannot stack, --amp fp16), or none yet, no --parallel helps."""
    kept = "finished students are kept, the others resume"
    at_once = getattr(e, "students_at_once", 1)
    if at_once > 1:
        return f"run again with --parallel below {at_once} (students trained at once), or with the GPU freed of other processes: {kept}"
    # A smaller --batch-size is another recipe: the students finished with the old one would be refused, hence --force.
    return f"run again with the GPU freed of other processes ({kept}), or start over with a smaller --batch-size and --force"


# What to do when the GPU runs out of memory, by command (None: the others), or a function of the error that says
# it. What was saved stays: a run's last checkpoint, a dump's epochs written, a sweep's finished students.
OUT_OF_MEMORY = {
    "train-teacher": "free the GPU of other processes and run again with --resume (the last checkpoint is kept), or start over with a smaller --batch-size and --force",
    "dump-logits": "run again with a smaller --batch-size (the epochs written are kept), or free the GPU of other processes",
    "sweep": _sweep_out_of_memory,
    None: "free the GPU of other processes, or pass --device cpu",
}
OUT_OF_MEMORY["train-student"] = OUT_OF_MEMORY["train-teacher"]


@contextlib.contextmanager
def errors_as_one_line(resume_flag=False, out_of_memory=OUT_OF_MEMORY[None]):
    """Library errors end as one line on stderr and exit status 1, as do the file system's refusals kdcli does not
    foresee (a path too long, a file this user may not read); warnings print as one line too.
    A clean stop (Interrupted: Ctrl-C, SIGTERM) prints the command that resumes: with --resume where the command has it.
    `out_of_memory`: what to do when the GPU runs out of memory, which the user can fix but kdcli cannot foresee."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *args, **kwargs: typer.echo(f"warning: {message}", err=True)
        try:
            yield
        except Interrupted as e:
            typer.echo(f"{e}\nresume with: {_resume_command(resume_flag)}", err=True)
            raise typer.Exit(128 + e.signum) from None  # 130 for Ctrl-C, 143 for SIGTERM: as a shell reports the kill
        except KdcliError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:  # a second Ctrl-C, or one before training starts: what was saved, if anything, is intact (saves are atomic)
            forced = "--force" in sys.argv  # it may or may not have deleted the old run yet: the user knows which
            typer.echo("interrupted" + ("" if forced else f"\nresume with: {_resume_command(resume_flag)}"), err=True)
            raise typer.Exit(130) from None
        except torch.OutOfMemoryError as e:
            remedy = out_of_memory(e) if callable(out_of_memory) else out_of_memory
            typer.echo(f"error: {_memory_left(e)}: {remedy}", err=True)
            raise typer.Exit(1) from None
        except OSError as e:
            if e.filename is None:  # not about a path: a failure kdcli says nothing useful about as one line
                raise
            typer.echo(f"error: {e.filename}: {e.strerror}", err=True)  # as ls and cp say it: the path, then why
            raise typer.Exit(1) from None
        except Exception as e:
            if not _compile_failed(e):
                raise
            inner = getattr(e, "inner_exception", e)
            typer.echo(f"error: torch.compile failed ({type(inner).__name__}: {_first_line(inner)}); run again with --no-compile", err=True)
            raise typer.Exit(1) from None


def _resume_command(resume_flag: bool) -> str:
    """The command that was run, as it was started, with --resume where the command has it."""
    kept = [arg for arg in sys.argv[1:] if arg != "--force"]  # --force would delete what was just saved
    program = [sys.executable, "-m", "kdcli"] if sys.argv[0].endswith("__main__.py") else [_kdcli_as_called()]
    return shlex.join([*program, *kept] + (["--resume"] if resume_flag and "--resume" not in kept else []))


def _kdcli_as_called() -> str:
    """`kdcli` where that name runs this very program, else the path it was run by: .venv/bin/kdcli,
    which is on no PATH until the venv is activated."""
    on_path = shutil.which("kdcli")
    try:
        same = on_path is not None and Path(on_path).samefile(sys.argv[0])
    except OSError:  # argv[0] a bare name (kdcli found on PATH), or no file at all
        same = True
    return "kdcli" if same else sys.argv[0]


def _compile_failed(e: Exception) -> bool:
    """torch.compile's own failure (e.g. no working Triton or C compiler on this machine), not a bug of kdcli's."""
    dynamo = sys.modules.get("torch._dynamo.exc")  # imported only once something was compiled
    return dynamo is not None and isinstance(e, dynamo.BackendCompilerFailed)


def _memory_left(e: torch.OutOfMemoryError) -> str:
    """Torch's message cut to what a user acts on: its hints on allocator settings and the docs would bury the remedy."""
    asked, free = re.search(r"Tried to allocate ([\d.]+ \w+)", str(e)), re.search(r"total capacity of ([\d.]+ \w+) of which ([\d.]+ \w+) is free", str(e))
    if asked and free:
        return f"out of GPU memory (it tried to allocate {asked[1]}; {free[2]} of {free[1]} was free)"
    return f"out of GPU memory ({_first_line(e)})"


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0]


# ---------------------------------------------------------------- commands


def _train_teacher(config):
    """Train the teacher (ResNet18 by default, the reference recipe) into a run folder."""
    summary = train_teacher(config)
    typer.echo(f"teacher {summary['model']}: {_accuracy(summary)} after {count(summary['epochs'], 'epoch')} -> {config.out}{_kept(summary)}")


def _train_student(config):
    """Train a student from the teacher-logit cache (or, with --distillation-weight 0, without a teacher)."""
    summary = train_student(config)
    setting = f"T={config.temperature:g} w={config.distillation_weight:g}" if config.distillation_weight else "baseline (no teacher)"
    typer.echo(f"student {summary['model']} {setting}: {_accuracy(summary)} after {count(summary['epochs'], 'epoch')} -> {config.out}{_kept(summary)}")


def _kept(summary) -> str:
    return " (finished already, kept: --force trains it again)" if summary.get("kept") else ""


def _accuracy(summary) -> str:
    val = f"{summary['val_accuracy']:.2f}% validation, " if "val_accuracy" in summary else ""
    return f"{val}{summary['test_accuracy']:.2f}% test accuracy"


def _dump_logits(config):
    """Run the teacher over N augmented epochs of the training set into the HDF5 logit cache."""
    s = dump_logits(config)
    if not s["epochs_written"]:
        typer.echo(f"{s['path']}: complete already ({count(s['epochs_complete'], 'epoch')} x {s['num_images']:,} images, this teacher and these settings), kept; teacher test accuracy {s['teacher_test_accuracy']:.2f}%")
        return
    resumed = f" (resumed at epoch {s['resumed_from'] + 1})" if s["resumed_from"] else ""
    typer.echo(
        f"{s['path']}: {count(s['epochs_complete'], 'epoch')} x {s['num_images']:,} images{resumed}, {s['images_per_s']:,.0f} img/s, "
        f"{s['size_bytes'] / 1e6:,.1f} MB; teacher test accuracy {s['teacher_test_accuracy']:.2f}%"
    )


def _sweep(config):
    """Train every (temperature, seed) student and a baseline per seed, batched, then write the report."""
    result = sweep(config)
    typer.echo(result["table"])  # stdout: the table alone (`kdcli sweep > table.md`); where it is written, on stderr
    earlier = f" and {count(result['earlier'], 'student')} of earlier sweeps" if result["earlier"] else ""  # in the table too: it reports the folder
    now, gone = result["trained_now"], result["diverged_now"]
    trained = f"{now} trained now: {now - gone} finished, {gone} diverged" if gone else f"{now} trained now"  # the error below counts every diverged one
    typer.echo(f"{count(result['students'], 'student')} ({trained}){earlier} -> {config.out}/results.md", err=True)
    if result["divergence"]:  # exit 1: the table is written, but lacks them
        raise KdcliError(result["divergence"])


# Short help: a line of `kdcli --help` that fits 80 columns (click cuts a docstring's first sentence to the terminal).
command_from(TeacherConfig, "train-teacher", _train_teacher, check_can_start, "Train the teacher (ResNet18 by default) into a run folder.")
command_from(DumpConfig, "dump-logits", _dump_logits, dump_can_start, "Label N augmented epochs with the teacher into the cache.")
command_from(StudentConfig, "train-student", _train_student, check_can_start, "Train a student from the cache (or a baseline without it).")
command_from(SweepConfig, "sweep", _sweep, sweep_can_start, "Train every temperature x seed student, then report.")


@app.command()
def evaluate(
    checkpoint: str = typer.Argument(..., help="a run folder or its checkpoint.pt", metavar="RUN"),
    data_dir: str = typer.Option("", help="folder holding cifar-10-batches-py/ (not given: the run's)", show_default=False, **_metavar(str)),
    device: str = typer.Option("auto", help="auto: cuda, then mps, then cpu", **_choice(Device)),
    per_class: bool = typer.Option(False, "--per-class", help="also print the accuracy of each class"),
    download: bool = typer.Option(True, "--download/--no-download", help="fetch CIFAR-10 when it is missing"),
):
    """Top-1 accuracy of a checkpoint on the CIFAR-10 test set."""
    with errors_as_one_line():
        result = evaluate_checkpoint(checkpoint, data_dir or None, device, download)
    _say_data_dir_read_back(data_dir, result["data_dir"], f"the run of {checkpoint}")
    trained = result["trained"]
    typer.echo(f"{result['model']} ({trained}): {result['test_accuracy']:.2f}% top-1 on the test set")
    if "val_accuracy" in result:
        typer.echo(f"{result['model']} ({trained}): {result['val_accuracy']:.2f}% on the {result['val_size']:,} training images its run held out (--val-size)")
    if per_class:
        for name, acc in zip(CLASSES, result["per_class"]):
            typer.echo(f"  {name:<11} {acc:6.2f}%")


def _say_data_dir_read_back(given: str, data_dir: str, source: str):
    if not given and data_dir != DATA_DIR:  # what with_images_of_inputs says for the stages
        typer.echo(f"--data-dir {data_dir}: as {source} recorded (pass another to override)", err=True)


@app.command("cache-info", short_help="Print a cache's metadata; --verify checks its logits.")
def cache_info(
    path: str = typer.Argument("cache/logits.h5", help="an HDF5 logit cache written by dump-logits", metavar="CACHE"),
    verify: int = typer.Option(0, min=0, help="recompute the teacher on this many random cached entries and compare", **_metavar(int)),
    teacher: str = typer.Option("", help="teacher run folder or checkpoint, for --verify (default: the one the dump was given)", **_metavar(str)),
    data_dir: str = typer.Option("", help="folder holding cifar-10-batches-py/, for --verify (not given: the dump's)", show_default=False, **_metavar(str)),
    device: str = typer.Option("auto", help="auto: cuda, then mps, then cpu", **_choice(Device)),
    download: bool = typer.Option(True, "--download/--no-download", help="fetch CIFAR-10 when it is missing"),
):
    """Print a cache's metadata, shapes and size; with --verify, check its logits against the teacher."""
    with errors_as_one_line():
        if not verify and (unread := [name for name, given in (("--teacher", teacher), ("--data-dir", data_dir)) if given]):
            warnings.warn(f"{' and '.join(unread)} {'is' if len(unread) == 1 else 'are'} read only by --verify N, which was not given: "
                          "pass it to check the cache's logits against the teacher")  # fmt: skip
        info = read_info(path)
        typer.echo(f"{info['path']}: {info['size_bytes'] / 1e6:,.1f} MB, {info['epochs_complete']} of {info['epochs']} epochs complete")
        typer.echo(f"teacher {info['attrs']['teacher_model']}: {info['teacher_test_accuracy']:.2f}% test accuracy")
        for name, d in info["datasets"].items():
            typer.echo(f"  {name:<22} {d['dtype']:<8} {d['shape']}")
        for key, value in sorted(info["attrs"].items()):
            typer.echo(f"  {key:<22} {json.dumps(value) if isinstance(value, (dict, list)) else value}")  # JSON: what the file holds, and what tools read
        if verify:
            images = data_dir or recorded_data_dir(info["attrs"]["config"], f"the cache {path}")
            _say_data_dir_read_back(data_dir, images, f"the cache {path}")  # before the verdict, which may be a failure
            v = verify_cache(path, teacher, verify, device, images, download)
            typer.echo(
                f"{'verify':<24} ok: largest |logit difference| over {v['entries']:,} entries {v['max_difference']:.3g} "
                f"({v['max_relative']:.2%} of an entry's largest |logit|; rounding stays under {v['tolerance']:.0%})"
            )


@app.command(short_help="Table of runs: mean, spread and the gain over the baseline.")
def report(
    runs: list[str] = typer.Argument(..., help="run folders, or folders holding run folders (a sweep)", metavar="FOLDER"),
    out: str = typer.Option("", help="where to write results.md/csv/png and runs.csv (default: the folder given, when one is)", **_metavar(str)),
):
    """Aggregate finished runs: mean, spread and the difference to the baseline, per setting."""
    if "" in runs:  # "" is the current folder to Path: `kdcli report "$SWEEP"` with SWEEP unset would write its results.md there
        typer.echo("error: FOLDER must not be empty: pass run folders or a folder holding them (a sweep)", err=True)
        raise typer.Exit(2)
    if not out and len(runs) > 1:  # the first folder's own results.md (a sweep's) would be replaced by the combined one
        typer.echo(f"error: {len(runs)} folders given: pass --out FOLDER for their combined report", err=True)
        raise typer.Exit(2)
    # os.path.exists, not Path.exists: False, not an OSError, for a path the system refuses (too long), which report says
    if out and os.path.exists(Path(out) / LOCK) and (len(runs) > 1 or Path(out).resolve() != Path(runs[0]).resolve()):
        typer.echo(f"error: --out {out} is the folder of a run or sweep, whose own report this would replace: pass --out a folder of its own", err=True)
        raise typer.Exit(2)
    with errors_as_one_line():
        table = reporting.report(runs, out or runs[0])
    typer.echo(table)  # stdout: the table alone, as a sweep's
    folder = Path(out or runs[0])
    typer.echo(f"-> {folder / 'results.md'} (and results.csv{', results.png' if (folder / 'results.png').exists() else ''}, runs.csv beside it)", err=True)


@app.command()
def models():
    """List the known architectures and their parameter counts."""
    for name in sorted(set(MODELS) - set(ALIASES)):
        also = [alias for alias, target in ALIASES.items() if target == name]
        typer.echo(f"{name:<10} {parameter_count(name):>12,} parameters" + (f"  (also --model {', '.join(also)})" if also else ""))


def _version(value: bool):
    if value:
        typer.echo(f"kdcli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version")):
    pass


def main():
    # Refused once here, not later as a damaged checkpoint or a traceback.
    if refused := next(filter(None, map(utf8_refusal, sys.argv[1:])), None):
        print(f"error: {refused}; rename it, or link to it from one", file=sys.stderr)
        sys.exit(2)
    app()
