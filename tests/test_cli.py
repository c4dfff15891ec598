"""kdcli.cli: the commands end to end on tiny data, and bad input as a short message, never a traceback."""

import errno
import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import typer
from conftest import record_progress_bars, run_python, write_cifar_folder
from typer.testing import CliRunner

import kdcli.checkpoint as checkpoint_module
import kdcli.dump as dump_module
import kdcli.group as group_module
import kdcli.records as records_module
import kdcli.resume as resume_module
import kdcli.train as train_module
from kdcli import __version__
from kdcli.cli import app
from kdcli.data import CLASSES
from kdcli.losses import distillation_loss

runner = CliRunner()


def kdcli(*args):
    return runner.invoke(app, [str(a) for a in args])


def teacher_args(data_dir, out, *extra):
    """train-teacher on the tiny data: one epoch of LeNet-5 on the CPU."""
    return ["train-teacher", "--model", "lenet5", "--epochs", 1, "--batch-size", 64, "--device", "cpu",
            "--data-dir", data_dir, "--out", out, "--quiet", *extra]


def flat(text):
    """Text with its line wrapping undone."""
    return " ".join(text.split())


def assert_clean_error(result, *words, codes=(1, 2)):
    """A non-zero exit with a short message naming `words`; no exception escaped, no traceback printed."""
    assert result.exit_code in codes, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line and not line.startswith("warning:")]
    assert 1 <= len(errors) <= 3, result.stderr  # one line, after click's two of usage for a usage error
    for word in words:
        assert word in errors[-1], (word, result.stderr)  # the error itself is one line, unwrapped


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("cli") / "teacher"
    result = kdcli(*teacher_args(data_dir, out))
    return out, result


def test_once_a_command_is_done_a_further_ctrl_c_ends_the_process_without_a_traceback(monkeypatch):
    from kdcli.__main__ import main

    monkeypatch.setattr(sys, "argv", ["kdcli", "--version"])
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            main()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL  # the OS ends the process; Python raises nothing
    finally:
        signal.signal(signal.SIGINT, previous)


def test_version():
    result = kdcli("--version")
    assert result.exit_code == 0 and result.stdout == f"kdcli {__version__}\n"


def test_python_dash_m_kdcli():
    out = subprocess.run([sys.executable, "-m", "kdcli", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout == f"kdcli {__version__}\n"


@pytest.mark.parametrize("args", [["train-teacher", "--out", b"runs/caf\xe9"], ["report", b"runs/caf\xe9"], ["evaluate", b"caf\xe9/checkpoint.pt"]], ids=["option", "folder", "file"])
def test_a_path_that_is_not_utf8_is_one_line_before_anything_is_read_or_made(tmp_path, monkeypatch, capfd, args):
    """A folder named in latin-1 (bytes Python hands over as lone surrogates): torch cannot open a checkpoint by such a
    name, which --resume then called damaged, and a report could not write it (a traceback). Said as the shell shows it."""
    import kdcli.cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["kdcli", *(os.fsdecode(a) for a in args)])
    with pytest.raises(SystemExit) as exit:
        kdcli.cli.main()
    said = os.fsdecode(args[-1]).encode(errors="surrogateescape").decode(errors="backslashreplace")
    assert (exit.value.code, capfd.readouterr().err) == (2, f"error: {said} is not valid UTF-8: kdcli needs UTF-8 names; rename it, or link to it from one\n")
    assert not any(tmp_path.iterdir())


def test_sigterm_where_there_is_no_safe_point_ends_at_once_with_a_line(monkeypatch, capfd):
    """Loading data, importing torch: a SIGTERM ends the command there, saying so, with exit status 143."""
    import kdcli.__main__
    import kdcli.cli

    monkeypatch.setattr(kdcli.cli, "main", lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(SystemExit) as exit:
        kdcli.__main__.main()
    assert exit.value.code == 143 and "terminated (SIGTERM)" in capfd.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # as it was: the command is over


def test_the_package_itself_imports_no_torch():
    """__main__ imports kdcli, then torch (via kdcli.cli) inside its Ctrl-C guard: the package must come first, light."""
    code = "import sys, kdcli.__main__; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout == "False\n"


@pytest.mark.parametrize("signum, status, said", [(signal.SIGINT, 130, "interrupted\n"), (signal.SIGTERM, 143, "\nterminated (SIGTERM)\n")])
def test_a_signal_while_torch_imports_ends_the_command_once_the_import_is_done(monkeypatch, capfd, signum, status, said):
    """The `kdcli` command imports torch before it parses anything. Raised inside that import, the exit left numpy
    half imported, and was lost (the command trained on) or crashed (tests/stress_start_signal.py): it waits."""
    import importlib.abc

    import kdcli.__main__

    class Signalling(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "kdcli.cli":
                os.kill(os.getpid(), signum)  # its handler runs here, inside the import
            return None  # the import goes on, as in a terminal

    # kdcli.cli put back after, in sys.modules and on the package: the import below makes a new module, which later
    # tests' monkeypatch.setattr("kdcli.cli.X", ...) would patch instead of the one `app` came from.
    monkeypatch.setattr(kdcli, "cli", sys.modules["kdcli.cli"])
    monkeypatch.delitem(sys.modules, "kdcli.cli")
    monkeypatch.setattr(sys, "meta_path", [Signalling(), *sys.meta_path])
    with pytest.raises(SystemExit) as exit:
        kdcli.__main__.main()
    assert exit.value.code == status and capfd.readouterr().err == said
    assert "kdcli.cli" in sys.modules  # the import ended first
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_second_ctrl_c_while_torch_imports_ends_the_process_at_once():
    """Users press Ctrl-C twice: the second does not wait for the import."""
    code = """
import importlib.abc, os, signal, sys
import kdcli.__main__
class Signalling(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "kdcli.cli":
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            print("not ended", flush=True)
sys.meta_path.insert(0, Signalling())
sys.argv = ["kdcli", "--version"]
kdcli.__main__.main()
"""
    proc = run_python(code)
    assert (proc.returncode, proc.stdout, proc.stderr) == (130, "", "\ninterrupted\n")


def test_every_option_of_every_command_has_a_help_line():
    import typer.main

    for name, command in typer.main.get_command(app).commands.items():
        undocumented = [p.name for p in command.params if not (getattr(p, "help", None) or "").strip()]
        assert undocumented == [], f"kdcli {name}: {undocumented}"
    result = runner.invoke(app, ["train-student", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert re.search(r"--temperature FLOAT softmax temperature T of the soft targets .*\[default: 30.0\]", flat(result.stdout))
    assert re.search(r"--lr-milestones INT,\.\.\. +epochs where", result.stdout)  # what a list looks like
    assert "--nesterov / --no-nesterov  " in result.stdout and "<bool>" not in result.stdout  # a flag takes no value


def test_kdcli_help_lists_every_command_whole_in_80_columns():
    """Click cuts a line to the terminal: "Train the teacher (ResNet18 by default, the reference..." said half of it."""
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "80"}, terminal_width=80)
    listed = result.stdout.split("Commands:")[1].strip().splitlines()
    assert len(listed) == 8 and not [line for line in listed if "..." in line or len(line) > 80], listed


def test_models_lists_every_name_with_its_size():
    result = kdcli("models")
    assert result.exit_code == 0
    assert re.search(r"^lenet5 +62,006 parameters  \(also --model 1\)$", result.stdout, re.M)  # what to type, not a bare "1"
    assert not re.search(r"^1 ", result.stdout, re.M)  # an alias is not a model of its own
    assert re.search(r"^resnet18 +11,173,962 parameters$", result.stdout, re.M)


def test_train_teacher(teacher_run):
    out, result = teacher_run
    assert result.exit_code == 0, result.output
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "summary.json"} <= {p.name for p in out.iterdir()}
    assert re.fullmatch(r"teacher lenet5: [\d.]+% test accuracy after 1 epoch -> .*\n", result.stdout)  # stdout: the result alone
    assert re.search(r"^epoch 1/1 ", result.stderr, re.M)  # --quiet: one log line per evaluation, with the warnings


def test_train_teacher_with_a_validation_split_prints_its_accuracy(tmp_path, data_dir):
    result = kdcli(*teacher_args(data_dir, tmp_path / "run", "--val-size", 50))
    assert result.exit_code == 0, result.output
    assert re.search(r"teacher lenet5: [\d.]+% validation, [\d.]+% test accuracy after 1 epoch -> ", result.stdout)
    assert re.search(r"^epoch 1/1 .* val [\d.]+%  test [\d.]+% ", result.stderr, re.M)
    result = kdcli("evaluate", tmp_path / "run", "--device", "cpu", "--data-dir", data_dir, "--no-download")
    assert result.exit_code == 0, result.output
    assert re.search(r"^lenet5 \(epoch 1 of 1\): [\d.]+% on the 50 training images its run held out \(--val-size\)$", result.stdout, re.M)


def test_evaluate_per_class(teacher_run, data_dir):
    out, _ = teacher_run
    result = kdcli("evaluate", out, "--per-class", "--device", "cpu", "--data-dir", data_dir, "--no-download")
    assert result.exit_code == 0, result.output
    assert re.search(r"^lenet5 \(epoch 1 of 1\): [\d.]+% top-1 on the test set$", result.stdout, re.M)
    class_lines = re.findall(r"^  (\w+) +[\d.]+%$", result.stdout, re.M)
    assert class_lines == list(CLASSES)


def test_evaluate_reads_the_runs_images_back_and_warns_on_others(tmp_path, teacher_run, data_dir):
    out, _ = teacher_run
    result = kdcli("evaluate", out, "--device", "cpu", "--no-download")  # no --data-dir: the run's
    assert result.exit_code == 0 and f"--data-dir {data_dir}: as the run of {out} recorded" in result.stderr
    assert "warning" not in result.stderr
    other = write_cifar_folder(tmp_path / "other", seed=1)
    result = kdcli("evaluate", out, "--device", "cpu", "--no-download", "--data-dir", other)
    assert result.exit_code == 0 and "top-1 on the test set" in result.stdout
    assert f"warning: {out} was trained on other images than those now in {other}, so its test set may be another too: pass the --data-dir it trained on" in result.stderr


def test_dump_logits_quiet_draws_no_progress_bar(tmp_path, teacher_run, data_dir):
    args = ["dump-logits", "--teacher", teacher_run[0], "--epochs", 1, "--data-dir", data_dir, "--device", "cpu", "--no-download"]
    shown = kdcli(*args, "--out", tmp_path / "a.h5")
    quiet = kdcli(*args, "--out", tmp_path / "b.h5", "--quiet")
    assert shown.exit_code == quiet.exit_code == 0 and "dump-logits: 100%" in shown.stderr and "dump-logits:" not in quiet.stderr


def test_evaluate_prints_the_classes_only_when_asked(teacher_run, data_dir):
    result = kdcli("evaluate", teacher_run[0], "--device", "cpu", "--data-dir", data_dir)
    assert result.exit_code == 0 and "top-1" in result.stdout and not any(name in result.stdout for name in CLASSES)


@pytest.mark.parametrize("command", [["evaluate", "RUN"], ["cache-info", "CACHE", "--verify", 4, "--teacher", "RUN"]], ids=["evaluate", "verify"])
def test_no_download_is_passed_on(tmp_path, teacher_run, data_dir, command):
    from kdcli.dump import DumpConfig, dump_logits

    run = teacher_run[0]
    cache = tmp_path / "c.h5"
    dump_logits(DumpConfig(teacher=str(run), epochs=1, out=str(cache), data_dir=str(data_dir), device="cpu", download=False, quiet=True), progress=False)
    args = [{"RUN": run, "CACHE": cache}.get(a, a) for a in command]
    result = kdcli(*args, "--data-dir", tmp_path / "none", "--device", "cpu", "--no-download")
    assert result.exit_code == 1 and result.stderr.startswith("error: no CIFAR-10 at") and "drop the --no-download flag" in result.stderr
    assert not (tmp_path / "none").exists()


def test_evaluate_accepts_the_checkpoint_file(teacher_run, data_dir):
    out, _ = teacher_run
    result = kdcli("evaluate", out / "checkpoint.pt", "--device", "cpu", "--data-dir", data_dir)
    assert result.exit_code == 0 and "top-1" in result.stdout


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--epochs", 0], ["--epochs"]),
        (["--batch-size", 0], ["--batch-size"]),
        (["--lr", -1], ["--lr"]),
        (["--lr", "nan"], ["--lr"]),
        (["--lr", "inf"], ["--lr", "must be a finite number > 0, got inf"]),
        (["--weight-decay", -1], ["--weight-decay", "got -1"]),
        (["--weight-decay", "inf"], ["--weight-decay", "finite", "got inf"]),
        (["--momentum", 1.5], ["--momentum", "must be >= 0 and < 1, got 1.5"]),  # > 1 grows each step's update without bound
        (["--subset", 0], ["--subset"]),
        (["--model", "nope"], ["nope", "lenet5", "resnet18"]),
        (["--scheduler", "nope"], ["--scheduler", "multistep"]),
        (["--optimizer", "nope"], ["--optimizer", "sgd"]),
        (["--device", "tpu"], ["--device"]),
        (["--amp", "fp8"], ["--amp", "bf16", "fp16", "off"]),
        (["--seed", 10**23], ["--seed", "between 0 and 2**63 - 1"]),
        (["--no-amp"], ["--no-amp"]),  # a flag before 2026-11-27: now --amp off
        (["--lr-milestones", "1,x"], ["--lr-milestones", "expected comma-separated ints"]),
        (["--lr-milestones", "1,,2"], ["--lr-milestones", "'1,,2'"]),  # a typo, not a milestone skipped
    ],
    ids=lambda v: "_".join(map(str, v)) if isinstance(v, list) else None,
)
def test_bad_teacher_options(tmp_path, data_dir, extra, words):
    assert_clean_error(kdcli(*teacher_args(data_dir, tmp_path / "out", *extra)), *words)


@pytest.mark.parametrize(
    "args",
    [
        ["train-teacher", "--amp", "fp8"],
        ["train-student", "--device", "gpu"],
        ["sweep", "--scheduler", "step"],
        ["dump-logits", "--dtype", "float8"],
        ["evaluate", "runs/x", "--device", "gpu"],
        ["cache-info", "--device", "gpu"],
    ],
    ids=lambda v: "_".join(v[:2]),
)
def test_a_value_outside_a_choice_is_named_plainly(args):
    """One plain sentence naming the bad value and every allowed one (Typer's own wording starts 'Value error,')."""
    result = kdcli(*args)
    assert_clean_error(result, f"'{args[-1]}' is not one of", codes=(2,))
    assert "Value error" not in result.stderr


@pytest.mark.parametrize("command", ["train-teacher", "dump-logits", "train-student", "sweep", "evaluate runs/x", "cache-info"])
def test_a_gpu_named_as_pytorch_names_it_says_how_kdcli_takes_one(command):
    """--device cuda:1, as PyTorch code writes it: the GPU is picked by the environment, as for any one-GPU program."""
    result = kdcli(*command.split(), "--device", "cuda:1")
    assert_clean_error(result, "'cuda:1' is not one of 'auto', 'cuda', 'mps', 'cpu': to use GPU 1, run with CUDA_VISIBLE_DEVICES=1 and --device cuda", codes=(2,))


@pytest.mark.parametrize("option, value", [("--scheduler", "step"), ("--epochs", "x"), ("--epochs", "0"), ("--lr-milestones", "1,,2"), ("--model", "nope")])
def test_every_usage_error_names_its_option_as_click_does(option, value):
    """click's own errors (a choice, a type) and kdcli's (a range, a list, a name) name the option alike: 'Invalid value for '--epochs''."""
    assert_clean_error(kdcli("train-teacher", option, value), f"Invalid value for '{option}': ", codes=(2,))


@pytest.mark.parametrize("option, value", [("--epochs", "0"), ("--momentum", "1"), ("--model", "nope"), ("--lr-milestones", "0")])
def test_a_value_kdcli_refuses_names_its_option_once_as_click_does(option, value):
    """As click's own say it, "Invalid value for '--epochs': must be at least 1, got 0": not the ConfigError's "--epochs: " again."""
    result = kdcli("train-teacher", option, value)
    assert_clean_error(result, f"Invalid value for '{option}': ", codes=(2,))
    assert result.stderr.count(option) == 1, result.stderr


def test_bad_lr_milestones_is_a_usage_error(tmp_path, data_dir):
    result = kdcli(*teacher_args(data_dir, tmp_path / "out", "--lr-milestones", "abc"))
    assert_clean_error(result, "--lr-milestones", "abc", codes=(2,))
    assert not (tmp_path / "out").exists()  # nothing ran


@pytest.mark.parametrize("temperature", ["0", "-1", "nan", "inf"])
def test_bad_temperature(tmp_path, data_dir, temperature, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a checkout's own cache/logits.h5 (make logits), whose images would be said first
    result = kdcli("train-student", "--temperature", temperature, "--device", "cpu", "--data-dir", data_dir,
                   "--out", tmp_path / "student", "--epochs", 1)
    assert_clean_error(result, "--temperature", codes=(2,))


def test_missing_data_without_download(tmp_path):
    result = kdcli(*teacher_args(tmp_path / "no-data", tmp_path / "out", "--no-download"))
    assert_clean_error(result, "--no-download", codes=(1,))


def test_evaluate_on_a_folder_of_runs_names_one(tmp_path, data_dir, teacher_run):
    shutil.copytree(teacher_run[0], tmp_path / "sweep" / "T30" / "seed1")
    result = kdcli("evaluate", tmp_path / "sweep", "--device", "cpu", "--data-dir", data_dir)
    assert_clean_error(result, "holds run folders; pass one, e.g.", str(tmp_path / "sweep" / "T30" / "seed1"), codes=(1,))


def test_evaluate_missing_checkpoint(tmp_path, data_dir):
    result = kdcli("evaluate", tmp_path / "missing.pt", "--device", "cpu", "--data-dir", data_dir)
    assert_clean_error(result, "no checkpoint", str(tmp_path / "missing.pt"), codes=(1,))


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b""], ids=["text", "empty"])
def test_evaluate_non_checkpoint_file(tmp_path, data_dir, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    result = kdcli("evaluate", path, "--device", "cpu", "--data-dir", data_dir)
    assert_clean_error(result, str(path), "is not a checkpoint", codes=(1,))


def test_evaluate_torch_file_that_is_not_a_checkpoint(tmp_path, data_dir):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    result = kdcli("evaluate", tmp_path / "other.pt", "--device", "cpu", "--data-dir", data_dir)
    assert_clean_error(result, "not a kdcli checkpoint", codes=(1,))


def test_milestones_beyond_epochs_warn_but_run(tmp_path, data_dir):
    result = kdcli(*teacher_args(data_dir, tmp_path / "out", "--lr-milestones", "5"))
    assert result.exit_code == 0, result.output
    assert re.search(r"^warning: --lr-milestones 5 .*never apply", result.stderr, re.M)
    assert (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize("bad", [["--temperature", 0], ["--val-size", 10**6]], ids=["option", "too-few-images"])
def test_an_error_is_not_preceded_by_a_milestones_warning(tmp_path, data_dir, bad):
    """The error is the whole story: a warning about the schedule of a run that never starts is noise."""
    result = kdcli("train-student", "--distillation-weight", 0, "--epochs", 1, *bad, "--device", "cpu", "--data-dir", data_dir, "--out", tmp_path / "s")
    assert_clean_error(result, bad[0])  # (a baseline: no cache to be missing first)
    assert "warning" not in result.stderr


def test_a_refused_or_kept_run_is_not_warned_about_its_milestones(teacher_run, data_dir):
    """Its milestones (150, 225) are beyond its 1 epoch, but nothing trains."""
    out, _ = teacher_run
    refused = kdcli(*teacher_args(data_dir, out))
    assert refused.exit_code == 1 and "holds a finished run" in refused.stderr and "warning: --lr-milestones" not in refused.stderr, refused.output
    kept = kdcli(*teacher_args(data_dir, out, "--resume"))
    assert kept.exit_code == 0 and "warning: --lr-milestones" not in kept.stderr
    assert kept.stdout.endswith(f"-> {out} (finished already, kept: --force trains it again)\n")


@pytest.mark.parametrize(
    "force",
    [
        [],
        ["--force"],
    ],
    ids=["plain", "force"],
)
def test_unwritable_out(tmp_path, data_dir, force):
    (tmp_path / "file").write_text("a regular file\n")
    result = kdcli(*teacher_args(data_dir, tmp_path / "file" / "run", *force))
    assert_clean_error(result, "cannot write", "--out", codes=(1,))


@pytest.mark.parametrize("full", ["config.json", "metrics.jsonl", "summary.json"])
def test_a_full_disk_while_writing_a_run_file_is_one_line(tmp_path, data_dir, monkeypatch, full):
    """Checkpoints and caches are not the only files a run writes: its logs fill a disk too."""
    def no_space_for(write):
        def written(path, *args, **kwargs):
            if Path(path).name == full or Path(path).name.startswith(f".{full}.tmp-"):  # appended to, or written whole
                raise OSError(errno.ENOSPC, "No space left on device")
            return write(path, *args, **kwargs)

        return written

    monkeypatch.setattr(Path, "write_text", no_space_for(Path.write_text))
    for module in (records_module, checkpoint_module):  # the open() each calls
        monkeypatch.setattr(module, "open", no_space_for(open), raising=False)
    result = kdcli(*teacher_args(data_dir, tmp_path / "out", "--lr-milestones", ""))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.stderr.splitlines()[-1] == f"error: cannot write {tmp_path / 'out' / full}: No space left on device"  # epoch 1's log line may come before
    assert not list((tmp_path / "out").glob(".*.tmp-*"))


def test_finished_run_needs_force(teacher_run, data_dir):
    out, _ = teacher_run
    assert_clean_error(kdcli(*teacher_args(data_dir, out)), "holds a finished run", "--force", codes=(1,))


def test_a_finished_run_is_refused_before_any_data_is_looked_at(teacher_run, tmp_path):
    out, _ = teacher_run
    result = kdcli(*teacher_args(tmp_path / "no-data-here", out, "--no-download"))
    assert_clean_error(result, "holds a finished run", "--force", codes=(1,))  # not the missing data: that would cost a download


@pytest.mark.parametrize("signum, name", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_ctrl_c_or_sigterm_saves_and_prints_how_to_resume(tmp_path, data_dir, monkeypatch, capfd, signum, name):
    """SIGTERM is what a batch scheduler or `docker stop` sends before its kill: it stops as Ctrl-C does."""
    def loss(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return distillation_loss(*args, **kwargs)

    monkeypatch.setattr(group_module, "distillation_loss", loss)
    args = [str(a) for a in teacher_args(data_dir, tmp_path / "out", "--force")]
    monkeypatch.setattr(sys, "argv", ["kdcli", *args])  # what the hint is made from
    result = kdcli(*args)
    assert result.exit_code == 128 + signum, result.output  # 130 or 143, as a shell reports the kill
    assert f"{name}: stopping at the next safe point" in capfd.readouterr().err  # written to fd 2 at once, by the handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # a later SIGTERM ends the process again
    assert "Traceback" not in result.output
    assert "interrupted at epoch 1, step 1" in result.stderr
    hint = result.stderr.split("resume with: ")[1].strip()
    assert "--resume" in hint and "--force" not in hint  # --force would delete the checkpoint just saved
    monkeypatch.undo()
    stopped = kdcli("evaluate", tmp_path / "out", "--data-dir", data_dir, "--device", "cpu", "--no-download")
    assert re.search(r"^lenet5 \(stopped at epoch 1 of 1, step 1\): [\d.]+% top-1", stopped.stdout, re.M)  # numbered as the message above
    resumed = kdcli(*shlex.split(hint)[1:])  # the printed command, as given
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {tmp_path / 'out'} at epoch 1, step 2" in resumed.stderr
    assert (tmp_path / "out" / "summary.json").exists()


def test_sigterm_to_a_real_process_stops_it_and_its_printed_command_resumes_it(tmp_path, data_dir):
    """As a batch scheduler stops a job: `kill -TERM` to `python -m kdcli`, from outside, mid-run."""
    out = tmp_path / "out"
    args = [str(a) for a in teacher_args(data_dir, out, "--epochs", 100, "--lr-milestones", "", "--batch-size", 8)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen([sys.executable, "-m", "kdcli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)  # during epoch 2 or later
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 143, stderr
    assert "SIGTERM: stopping at the next safe point" in stderr and "Traceback" not in stderr
    hint = stderr.split("resume with: ")[1].strip()
    assert shlex.split(hint)[:3] == [sys.executable, "-m", "kdcli"]  # how it was started, not a `kdcli` that may not be on PATH
    assert 1 <= torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] < 100
    resumed = subprocess.run(shlex.split(hint), capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "after 100 epochs" in resumed.stdout and (out / "summary.json").exists()


@pytest.mark.parametrize("signum, said", [(signal.SIGINT, "interrupted\nresume with: "), (signal.SIGTERM, "")],
                         ids=["Ctrl-C", "SIGTERM"])  # fmt: skip
def test_a_second_ctrl_c_or_sigterm_quits_at_once_and_the_last_checkpoint_resumes(tmp_path, data_dir, monkeypatch, capfd, signum, said):
    """The first waits for the next safe point (an evaluation may take a minute on a CPU); the second does not."""
    steps = [0]

    def loss(*args, **kwargs):
        steps[0] += 1
        if steps[0] == 6:  # epoch 2 of 2, step 2: epoch 1's checkpoint is on disk
            os.kill(os.getpid(), signum)
            os.kill(os.getpid(), signum)
        return distillation_loss(*args, **kwargs)

    monkeypatch.setattr(group_module, "distillation_loss", loss)
    result = kdcli(*teacher_args(data_dir, tmp_path / "out", "--epochs", 2, "--lr-milestones", ""))
    unlogged = "".join(line for line in result.stderr.splitlines(keepends=True) if not line.startswith("epoch "))  # --quiet's log lines
    assert result.exit_code == 128 + signum and unlogged.startswith(said), result.output  # 130 or 143, as the shell reports
    assert ("--resume" in result.stderr) == (signum == signal.SIGINT)  # SIGTERM: a scheduler knows its own command
    if signum == signal.SIGTERM:
        assert "terminated (SIGTERM)" in capfd.readouterr().err  # written by the handler itself
    monkeypatch.undo()
    assert torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = kdcli(*teacher_args(data_dir, tmp_path / "out", "--epochs", 2, "--lr-milestones", "", "--resume"))
    assert resumed.exit_code == 0 and "resuming" in resumed.stderr and "at epoch 2" in resumed.stderr, resumed.output


def stopped_run(tmp_path, monkeypatch, args):
    """kdcli ARGS stopped by Ctrl-C at its first step: a checkpoint to resume."""
    def loss(*a, **kw):
        os.kill(os.getpid(), signal.SIGINT)
        return distillation_loss(*a, **kw)

    with monkeypatch.context() as patched:
        patched.setattr(group_module, "distillation_loss", loss)
        assert kdcli(*args).exit_code == 130


def test_resume_takes_the_options_not_given_from_the_run(tmp_path, data_dir, monkeypatch):
    """`--out X --resume` is enough: the model, recipe, data and device are the run's, not the defaults."""
    out = tmp_path / "out"
    stopped_run(tmp_path, monkeypatch, teacher_args(data_dir, out, "--epochs", 2, "--lr", 0.05, "--lr-milestones", "1"))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["config"].update(device="cuda", compile=True)  # as a run started on a GPU machine records: this one's defaults serve
    torch.save(state, out / "checkpoint.pt")
    resumed = kdcli("train-teacher", "--out", out, "--resume", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert "teacher lenet5: " in resumed.stdout and "after 2 epochs" in resumed.stdout
    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["epochs"], config["lr"], config["lr_milestones"], config["data_dir"]) == ("lenet5", 2, 0.05, [1], str(data_dir))


def test_resume_of_a_run_stopped_before_its_first_checkpoint_takes_its_options(tmp_path, data_dir, monkeypatch):
    """Killed (or quit by a second Ctrl-C) before a checkpoint, a run has only its config.json: `--out X --resume`
    starts it again with those options, not with the defaults (a ResNet18 for 300 epochs)."""
    out = tmp_path / "out"
    assert kdcli(*teacher_args(data_dir, out, "--epochs", 2, "--subset", 100)).exit_code == 0
    for name in ("checkpoint.pt", "metrics.jsonl", "summary.json"):
        (out / name).unlink()
    monkeypatch.chdir(tmp_path)  # no data/ here: the default --data-dir would find nothing
    resumed = kdcli("train-teacher", "--out", out, "--resume", "--no-download")
    assert resumed.exit_code == 0 and "teacher lenet5: " in resumed.stdout and "after 2 epochs" in resumed.stdout, resumed.output
    config = json.loads((out / "config.json").read_text())
    assert (config["subset"], config["data_dir"]) == (100, str(data_dir))


def test_a_model_alias_is_recorded_by_its_own_name_and_an_old_record_of_it_resumes(tmp_path, data_dir, monkeypatch):
    """"1" (the reference's name for LeNet-5) and "lenet5" are one model: to resume, and in the report."""
    out = tmp_path / "out"
    stopped_run(tmp_path, monkeypatch, teacher_args(data_dir, out, "--epochs", 2, "--model", "1"))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["model_name"] == state["config"]["model"] == "lenet5"
    state["model_name"] = state["config"]["model"] = "1"  # as kdcli recorded an alias until 2026-11-27
    torch.save(state, out / "checkpoint.pt")
    evaluated = kdcli("evaluate", out, "--data-dir", data_dir, "--device", "cpu", "--no-download")
    assert evaluated.stdout.startswith("lenet5 (stopped at epoch 1 of 2, step 1): "), evaluated.output
    resumed = kdcli("train-teacher", "--out", out, "--resume", "--model", "lenet5", "--quiet")
    assert resumed.exit_code == 0 and "teacher lenet5: " in resumed.stdout, resumed.output


@pytest.mark.parametrize("damaged", ["config.json", "summary.json"])
def test_a_damaged_run_file_is_one_line_on_resume(tmp_path, data_dir, damaged):
    out = tmp_path / "out"
    assert kdcli(*teacher_args(data_dir, out)).exit_code == 0
    (out / damaged).write_text("{bad")  # a hand edit gone wrong
    assert_clean_error(kdcli(*teacher_args(data_dir, out, "--resume")), f"cannot read {out / damaged}", codes=(1,))


def test_resume_refuses_a_given_option_that_differs_and_with_force_trains_the_run_again(tmp_path, data_dir, monkeypatch):
    out = tmp_path / "out"
    stopped_run(tmp_path, monkeypatch, teacher_args(data_dir, out, "--epochs", 2))
    assert_clean_error(kdcli("train-teacher", "--out", out, "--resume", "--epochs", 3), "--epochs 3 (run has 2)", "give the run's own", codes=(1,))
    assert_clean_error(kdcli("train-teacher", "--out", out, "--resume", "--model", "resnet8"), "holds a lenet5, not a resnet8 (--model)", codes=(1,))
    again = kdcli("train-teacher", "--out", out, "--resume", "--force", "--epochs", 3, "--quiet")  # its own options, but those given
    assert again.exit_code == 0 and "teacher lenet5: " in again.stdout and "after 3 epochs" in again.stdout, again.output


def test_resume_where_there_is_nothing_to_resume_says_so(tmp_path, data_dir):
    """make always passes --resume, so it starts runs; a mistyped --out must not start one unremarked."""
    result = kdcli(*teacher_args(data_dir, tmp_path / "typo", "--resume"))
    assert result.exit_code == 0 and f"{tmp_path / 'typo'}: nothing to resume, a new run starts" in result.stderr, result.output


def test_a_student_resumed_where_there_is_nothing_to_resume_is_not_taken_for_a_teacher(tmp_path, data_dir):
    """make passes --resume to students too: a folder holding no run is no teacher's, whatever the student lacks next."""
    result = kdcli("train-student", "--out", tmp_path / "new", "--resume", "--cache", tmp_path / "none.h5", "--data-dir", data_dir, "--device", "cpu")
    assert_clean_error(result, f"no cache at {tmp_path / 'none.h5'}", codes=(1,))
    assert "teacher's run" not in result.stderr


def test_resume_with_force_over_a_run_does_not_say_there_was_nothing_to_resume(tmp_path, data_dir):
    """--resume --force trains the run in --out again: the note for a mistyped --out would be false there."""
    out = tmp_path / "run"
    assert kdcli(*teacher_args(data_dir, out)).exit_code == 0
    again = kdcli(*teacher_args(data_dir, out, "--resume", "--force"))
    assert again.exit_code == 0 and "nothing to resume" not in again.stderr, again.output


def test_a_student_resumed_into_a_teachers_folder_is_told_so_first(tmp_path, data_dir, monkeypatch):
    """Before the student's cache is looked for, or warned about with the teacher's epochs."""
    out = tmp_path / "out"
    stopped_run(tmp_path, monkeypatch, teacher_args(data_dir, out, "--epochs", 2))
    result = kdcli("train-student", "--out", out, "--resume")
    assert_clean_error(result, "holds a teacher's run, not a student's", codes=(1,))
    assert "cache" not in result.stderr


def test_a_student_resumes_with_its_own_temperature_and_cache(tmp_path, data_dir, monkeypatch):
    from kdcli.dump import DumpConfig, dump_logits

    teacher = tmp_path / "teacher"
    assert kdcli(*teacher_args(data_dir, teacher)).exit_code == 0
    cache = tmp_path / "c.h5"
    dump_logits(DumpConfig(teacher=str(teacher), epochs=1, out=str(cache), data_dir=str(data_dir), device="cpu", download=False, quiet=True), progress=False)
    out = tmp_path / "student"
    stopped_run(tmp_path, monkeypatch, ["train-student", "--cache", cache, "--temperature", 7, "--epochs", 1, "--batch-size", 64,
                                        "--device", "cpu", "--data-dir", data_dir, "--out", out, "--quiet"])  # fmt: skip
    resumed = kdcli("train-student", "--out", out, "--resume")
    assert resumed.exit_code == 0 and "T=7 w=0.1" in resumed.stdout, resumed.output


def test_a_student_resumed_from_another_folder_is_told_its_recorded_cache_is_not_there(tmp_path, data_dir, monkeypatch):
    """Not "no cache: run dump-logits first": the cache is there, relative to the folder the run started in."""
    from kdcli.dump import DumpConfig, dump_logits

    project = tmp_path / "project"
    assert kdcli(*teacher_args(data_dir, project / "teacher")).exit_code == 0
    dump_logits(DumpConfig(teacher=str(project / "teacher"), epochs=1, out=str(project / "c.h5"), data_dir=str(data_dir), device="cpu", download=False, quiet=True), progress=False)
    monkeypatch.chdir(project)
    stopped_run(tmp_path, monkeypatch, ["train-student", "--cache", "c.h5", "--epochs", 1, "--batch-size", 64,
                                        "--device", "cpu", "--data-dir", data_dir, "--out", "student", "--quiet"])  # fmt: skip
    monkeypatch.chdir(tmp_path)
    resumed = kdcli("train-student", "--out", "project/student", "--resume")
    assert_clean_error(resumed, "no cache at c.h5, as the run in project/student recorded (relative to the folder it started in): pass --cache", codes=(1,))
    resumed = kdcli("train-student", "--out", "project/student", "--resume", "--cache", "project/c.h5", "--quiet")
    assert resumed.exit_code == 0, resumed.output


def test_later_stages_read_the_teachers_images_back_where_not_given(tmp_path, data_dir, monkeypatch):
    """--data-dir and --subset are said once, to the teacher: the dump labels its images, the student learns them."""
    monkeypatch.chdir(tmp_path)  # where no data/ folder is: the default --data-dir would find nothing
    assert kdcli(*teacher_args(data_dir, "teacher", "--subset", 100)).exit_code == 0
    dumped = kdcli("dump-logits", "--teacher", "teacher", "--epochs", 1, "--out", "c.h5", "--device", "cpu", "--no-download")
    assert dumped.exit_code == 0 and "1 epoch x 100 images" in dumped.stdout, dumped.output
    assert f"--data-dir {data_dir} --subset 100: as the teacher's run teacher recorded" in dumped.stderr
    student = kdcli("train-student", "--cache", "c.h5", "--epochs", 1, "--out", "student", "--device", "cpu", "--no-download", "--quiet")
    assert student.exit_code == 0, student.output
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert (config["data_dir"], config["subset"]) == (str(data_dir), 100)
    given = kdcli("dump-logits", "--teacher", "teacher", "--epochs", 1, "--out", "c50.h5", "--subset", 50, "--device", "cpu", "--no-download")
    assert given.exit_code == 0 and "1 epoch x 50 images" in given.stdout and "--subset 100" not in given.stderr, given.output
    baseline = kdcli("train-student", "--cache", "c.h5", "--distillation-weight", 0, "--epochs", 1, "--out", "b", "--data-dir", data_dir,
                     "--device", "cpu", "--no-download", "--quiet")  # fmt: skip
    assert baseline.exit_code == 0 and "recorded" not in baseline.stderr, baseline.output  # it reads no cache: nothing to read back
    assert json.loads((tmp_path / "b" / "config.json").read_text())["subset"] is None


def test_a_resumed_student_keeps_its_own_images_whatever_the_default_cache_holds(tmp_path, data_dir, monkeypatch):
    """--resume reads the run's own record first: its cache's images, not those of cache/logits.h5."""
    from kdcli.dump import DumpConfig, dump_logits

    monkeypatch.chdir(tmp_path)
    assert kdcli(*teacher_args(data_dir, "teacher")).exit_code == 0
    for out, subset in (("c100.h5", 100), ("cache/logits.h5", 50)):
        dump_logits(DumpConfig(teacher="teacher", epochs=1, out=out, data_dir=str(data_dir), device="cpu", download=False, quiet=True, subset=subset), progress=False)
    stopped_run(tmp_path, monkeypatch, ["train-student", "--cache", "c100.h5", "--epochs", 1, "--batch-size", 64, "--device", "cpu", "--out", "s", "--quiet"])
    resumed = kdcli("train-student", "--out", "s", "--resume")
    assert resumed.exit_code == 0 and "recorded" not in resumed.stderr, resumed.output
    assert json.loads((tmp_path / "s" / "config.json").read_text())["subset"] == 100


def test_a_recorded_data_dir_missing_here_is_refused_not_replaced_by_the_default(tmp_path, data_dir, monkeypatch):
    """A teacher's relative --data-dir, read from another folder, names another folder: kdcli's default instead
    would be other images (a proxy's teacher labelling the official ones), or a download of them."""
    shutil.copytree(data_dir, tmp_path / "a" / "images")
    shutil.copytree(data_dir, tmp_path / "data")  # what the default would silently read
    monkeypatch.chdir(tmp_path / "a")
    assert kdcli(*teacher_args("images", "teacher", "--subset", 100)).exit_code == 0
    monkeypatch.chdir(tmp_path)
    result = kdcli("dump-logits", "--teacher", "a/teacher", "--epochs", 1, "--out", "c.h5", "--device", "cpu", "--no-download")
    assert_clean_error(result, "--data-dir images, as the teacher's run a/teacher recorded, is not a folder here: pass --data-dir", codes=(1,))
    assert not (tmp_path / "c.h5").exists()
    given = kdcli("dump-logits", "--teacher", "a/teacher", "--epochs", 1, "--out", "c.h5", "--device", "cpu", "--no-download", "--data-dir", "a/images")
    assert given.exit_code == 0 and "--subset 100: as the teacher's run a/teacher recorded" in given.stderr
    resumed = kdcli("train-teacher", "--out", "a/teacher", "--resume", "--no-download")  # make's --resume, from another folder
    assert_clean_error(resumed, "--data-dir images, as the run in a/teacher recorded, is not a folder here: pass --data-dir", codes=(1,))


def test_a_recorded_default_data_dir_missing_here_is_refused_not_downloaded(tmp_path, data_dir, monkeypatch):
    """`data`, kdcli's default and what make records, is relative too: from another folder a download there
    would be other images than the run's (the official ones for a proxy's run)."""
    shutil.copytree(data_dir, tmp_path / "project" / "data")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    assert kdcli(*teacher_args("data", "teacher", "--subset", 100)).exit_code == 0
    monkeypatch.chdir(tmp_path / "elsewhere")
    refused = "--data-dir data, as {} recorded, is not a folder here: pass --data-dir"
    result = kdcli("dump-logits", "--teacher", "../project/teacher", "--epochs", 1, "--out", "c.h5", "--device", "cpu")
    assert_clean_error(result, refused.format("the teacher's run ../project/teacher"), codes=(1,))
    assert_clean_error(kdcli("evaluate", "../project/teacher", "--device", "cpu"), refused.format("the run of ../project/teacher"), codes=(1,))
    resumed = kdcli("train-teacher", "--out", "../project/teacher", "--resume")
    assert_clean_error(resumed, refused.format("the run in ../project/teacher"), codes=(1,))
    assert [p.name for p in (tmp_path / "elsewhere").iterdir()] == []  # no download begun, no cache made


@pytest.mark.parametrize("text", ["x: 1\n", '{"lr": 3}\n'], ids=["yaml", "json"])
@pytest.mark.parametrize("flags", [[], ["--resume"], ["--force"]], ids=["new", "resume", "force"])
def test_a_folder_holding_a_config_json_of_something_else_is_left_alone(tmp_path, data_dir, text, flags):
    """`--out .` in a project: its config.json is neither read as a run's options nor overwritten."""
    out = tmp_path / "project"
    out.mkdir()
    (out / "config.json").write_text(text)
    assert_clean_error(kdcli(*teacher_args(data_dir, out, *flags)), "holds a config.json that kdcli did not write", codes=(1,))
    assert [p.name for p in out.iterdir()] == ["config.json"] and (out / "config.json").read_text() == text


@pytest.mark.parametrize("argv, said", [(["kdcli", "train-teacher"], "interrupted\nresume with: kdcli train-teacher --resume\n"),
                                        (["kdcli", "train-teacher", "--force"], "interrupted\n")])  # fmt: skip
def test_a_ctrl_c_outside_a_safe_point_says_how_to_go_on_unless_forced(monkeypatch, capsys, argv, said):
    """With --force the old run may or may not be deleted yet: no command could be right for both."""
    from kdcli.cli import errors_as_one_line

    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(typer.Exit) as exit, errors_as_one_line(resume_flag=True):
        raise KeyboardInterrupt
    assert exit.value.exit_code == 130 and capsys.readouterr().err == said


@pytest.mark.parametrize("on_path", [False, True], ids=["venv-not-activated", "on-PATH"])
def test_the_command_to_go_on_names_kdcli_as_it_can_be_run(tmp_path, monkeypatch, capsys, on_path):
    """.venv/bin/kdcli is on no PATH until the venv is activated: a bare `kdcli` would not run."""
    from kdcli.cli import errors_as_one_line

    program = tmp_path / "venv" / "bin" / "kdcli"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", str(program.parent if on_path else tmp_path))
    monkeypatch.setattr(sys, "argv", [str(program), "train-teacher"])
    with pytest.raises(typer.Exit), errors_as_one_line(resume_flag=True):
        raise KeyboardInterrupt
    said = "kdcli" if on_path else shlex.quote(str(program))  # as a shell reads it back
    assert capsys.readouterr().err == f"interrupted\nresume with: {said} train-teacher --resume\n"


def test_a_student_resumed_with_another_subset_is_told_that_first(tmp_path, data_dir, monkeypatch):
    """Not as a cache of another length: the run's options are compared before its data and cache are loaded."""
    from kdcli.dump import DumpConfig, dump_logits

    teacher = tmp_path / "teacher"
    assert kdcli(*teacher_args(data_dir, teacher, "--subset", 100)).exit_code == 0
    cache = tmp_path / "c.h5"
    dump_logits(DumpConfig(teacher=str(teacher), epochs=1, out=str(cache), data_dir=str(data_dir), device="cpu", download=False, quiet=True, subset=100), progress=False)
    out = tmp_path / "student"
    stopped_run(tmp_path, monkeypatch, ["train-student", "--cache", cache, "--subset", 100, "--epochs", 1, "--batch-size", 64,
                                        "--device", "cpu", "--data-dir", data_dir, "--out", out, "--quiet"])  # fmt: skip
    result = kdcli("train-student", "--out", out, "--resume", "--subset", 50)
    assert_clean_error(result, "--subset 50 (run has 100)", codes=(1,))
    assert "cache" not in result.stderr


def test_a_failing_torch_compile_is_one_line(tmp_path, data_dir, monkeypatch):
    """Where torch.compile cannot work (no Triton, no C compiler), the user gets one line and the way out."""
    import torch._dynamo.exc

    class CompileFailed(torch._dynamo.exc.BackendCompilerFailed):
        def __init__(self):  # the constructor's signature varies across torch versions: set only what kdcli reads
            RuntimeError.__init__(self, "backend='inductor' raised:\nRuntimeError: Cannot find a working triton installation")
            self.inner_exception = RuntimeError("Cannot find a working triton installation.\nMore information ...")

    def fail(*args, **kwargs):
        raise CompileFailed()

    monkeypatch.setattr(group_module, "distillation_loss", fail)
    result = kdcli(*teacher_args(data_dir, tmp_path / "out"))
    assert_clean_error(result, "torch.compile failed", "Cannot find a working triton installation", "--no-compile", codes=(1,))


def test_a_bug_is_not_dressed_as_a_user_error(tmp_path, data_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(group_module, "distillation_loss", fail)
    result = kdcli(*teacher_args(data_dir, tmp_path / "out"))
    assert isinstance(result.exception, RuntimeError) and "a bug" in str(result.exception)


def test_a_sweep_without_options_is_the_reference_table(tmp_path, monkeypatch):
    """Its defaults, as the command line passes them on: T = 1, 10, 30, 50, 100 at w = 0.1 and a baseline, each for
    seeds 777, 10, 20, 30, every student in a folder of its own under runs/sweep."""
    import kdcli.cli as cli_module
    from kdcli.sweep import student_configs

    monkeypatch.chdir(tmp_path)  # not a checkout's own cache/logits.h5 (make logits), whose recorded --data-dir is read back first
    given = []

    def recorded(config):
        given.append(config)
        return {"table": "", "students": 0, "trained_now": 0, "diverged_now": 0, "earlier": 0, "diverged": [], "divergence": None}

    monkeypatch.setattr(cli_module, "sweep", recorded)
    monkeypatch.setattr(resume_module, "check_cache_readable", lambda path: None)  # checked before the sweep runs: none here
    result = kdcli("sweep")
    assert result.exit_code == 0, result.output
    (config,) = given
    assert (config.distillation_weight, config.hard_weight, config.parallel, config.force, config.quiet) == (0.1, 1.0, 0, False, False)
    folders = [(c.out, c.temperature, c.distillation_weight) for c in student_configs(config)]
    assert len(folders) == 24
    assert folders[:6] == [("runs/sweep/baseline/seed777", 1.0, 0.0), ("runs/sweep/T1/seed777", 1.0, 0.1), ("runs/sweep/T10/seed777", 10.0, 0.1),
                           ("runs/sweep/T30/seed777", 30.0, 0.1), ("runs/sweep/T50/seed777", 50.0, 0.1), ("runs/sweep/T100/seed777", 100.0, 0.1)]  # fmt: skip
    assert [c.seed for c in student_configs(config)[::6]] == [777, 10, 20, 30]


# ---------------------------------------------------------------- from mutation testing cli.py


def recorded_teacher_configs(monkeypatch) -> list:
    """Make `kdcli train-teacher` record the config it would train, and train nothing."""
    import kdcli.cli as cli_module

    configs = []

    def recorded(config):
        configs.append(config)
        return {"model": config.model, "test_accuracy": 10.0, "epochs": config.epochs}

    monkeypatch.setattr(cli_module, "train_teacher", recorded)
    return configs


@pytest.mark.parametrize("value", ["1.5", "2,1e3", "2.0"])
def test_a_list_of_ints_takes_no_fraction_nor_exponent(tmp_path, data_dir, value):
    """--lr-milestones 1.5 is a typo to name, not epoch 1; 1e3 is no int either."""
    result = kdcli(*teacher_args(data_dir, tmp_path / "out", "--lr-milestones", value))
    assert_clean_error(result, "--lr-milestones", "expected comma-separated ints", repr(value), codes=(2,))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, milestones", [(" ", ()), ("", ()), (" 3, 5 ", (3, 5))])
def test_a_list_option_of_blanks_is_empty_and_items_may_be_spaced(tmp_path, data_dir, monkeypatch, value, milestones):
    """`--lr-milestones " "` (a variable set to a blank) is no milestones, as "" is; blanks around an item are no typo."""
    configs = recorded_teacher_configs(monkeypatch)
    result = kdcli(*teacher_args(data_dir, tmp_path / "out", "--lr-milestones", value))
    assert result.exit_code == 0, result.output
    assert [c.lr_milestones for c in configs] == [milestones]


def test_a_run_started_with_resume_and_stopped_prints_resume_once(tmp_path, data_dir, monkeypatch):
    """make passes --resume to every run: the printed command keeps it, and does not add a second one."""
    def loss(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return distillation_loss(*args, **kwargs)

    args = [str(a) for a in teacher_args(data_dir, tmp_path / "out", "--epochs", 2, "--resume")]
    with monkeypatch.context() as patched:
        patched.setattr(group_module, "distillation_loss", loss)
        patched.setattr(sys, "argv", ["kdcli", *args])
        result = kdcli(*args)
    assert result.exit_code == 130, result.output
    hint = shlex.split(result.stderr.split("resume with: ")[1].strip())
    assert hint == ["kdcli", *args]  # as it was given: --resume once, in its place
    resumed = kdcli(*hint[1:])
    assert resumed.exit_code == 0 and "resuming" in resumed.stderr and "after 2 epochs" in resumed.stdout, resumed.output


def test_a_run_on_the_default_data_folder_is_not_said_to_be_read_back(tmp_path, data_dir, monkeypatch):
    """`data`, the default, recorded by a teacher trained in this folder: the dump, evaluate and cache-info --verify
    that read it back from here read what they would by default, so there is nothing to say."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(data_dir)
    assert kdcli(*teacher_args("data", "teacher")).exit_code == 0
    dumped = kdcli("dump-logits", "--teacher", "teacher", "--epochs", 1, "--out", "c.h5", "--device", "cpu", "--no-download", "--quiet")
    assert dumped.exit_code == 0 and "recorded" not in dumped.stderr, dumped.output
    evaluated = kdcli("evaluate", "teacher", "--device", "cpu", "--no-download")
    assert evaluated.exit_code == 0 and "recorded" not in evaluated.stderr, evaluated.output
    verified = kdcli("cache-info", "c.h5", "--verify", 4, "--device", "cpu", "--no-download")
    assert verified.exit_code == 0 and "verify" in verified.stdout and "recorded" not in verified.stderr, verified.output


# ---------------------------------------------------------------- from mutation testing runs.py and config.py


def test_a_run_started_with_force_resumes_and_is_not_started_over_again(tmp_path, data_dir, monkeypatch):
    """--force says what to do with the folder once, like --out: `--out X --resume` (make's) continues a run that
    --force started, where reading --force back would delete its checkpoint and train it from scratch."""
    out = tmp_path / "out"
    stopped_run(tmp_path, monkeypatch, teacher_args(data_dir, out, "--epochs", 2, "--force"))
    resumed = kdcli("train-teacher", "--out", out, "--resume")
    assert resumed.exit_code == 0 and "resuming" in resumed.stderr and "after 2 epochs" in resumed.stdout, resumed.output


def test_a_quiet_run_resumed_without_quiet_shows_its_progress_bar(tmp_path, data_dir, monkeypatch):
    """--quiet is how this terminal shows a run (README: not read back, with --device and --compile), and may differ."""
    out = tmp_path / "out"
    stopped_run(tmp_path, monkeypatch, teacher_args(data_dir, out, "--epochs", 2))  # --quiet
    resumed = kdcli("train-teacher", "--out", out, "--resume")
    assert resumed.exit_code == 0 and "img/s" in resumed.stderr and not re.search(r"^epoch 2/2  loss", resumed.stderr, re.M), resumed.output
    again = kdcli("train-teacher", "--out", out, "--resume", "--no-quiet")
    assert again.exit_code == 0 and "finished already, kept" in again.stdout, again.output


def test_a_gpu_runs_compile_is_not_read_back_on_a_cpu(tmp_path, data_dir, monkeypatch):
    """A run that compiled on a GPU resumes on a CPU under this machine's defaults: no warning that --compile
    does nothing here, which the user never gave; and --compile given anew is no other option either."""
    from kdcli import group

    monkeypatch.setattr(group, "warn_compile_does_nothing", functools.cache(group.warn_compile_does_nothing.__wrapped__))  # a process of its own
    out = tmp_path / "out"
    stopped_run(tmp_path, monkeypatch, teacher_args(data_dir, out, "--epochs", 2))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["config"].update(compile=True)
    torch.save(state, out / "checkpoint.pt")
    resumed = kdcli("train-teacher", "--out", out, "--resume", "--quiet")
    assert resumed.exit_code == 0 and "--compile" not in resumed.stderr, resumed.output


def test_the_training_commands_default_to_the_reference_recipe(tmp_path, monkeypatch):
    """The teacher's defaults are the reference's ResNet18 recipe (README: SGD lr 0.1, momentum 0.9, weight decay 5e-4,
    batch 128, 300 epochs, lr x0.1 at 150 and 225, seed 777), in fp16; a student's are LeNet-5's, at T = 30, w = 0.1, in bf16."""
    import kdcli.cli as cli_module

    monkeypatch.chdir(tmp_path)
    configs = recorded_teacher_configs(monkeypatch)
    monkeypatch.setattr(cli_module, "train_student", lambda c: configs.append(c) or {"model": c.model, "test_accuracy": 10.0, "epochs": c.epochs})
    monkeypatch.setattr(resume_module, "check_cache_readable", lambda path: None)  # checked before the student trains: none here
    assert kdcli("train-teacher").exit_code == 0 and kdcli("train-student").exit_code == 0
    recipe = [(c.model, c.epochs, c.batch_size, c.optimizer, c.lr, c.momentum, c.nesterov, c.weight_decay, c.scheduler, c.lr_milestones,
               c.lr_gamma, c.seed, c.amp) for c in configs]  # fmt: skip
    assert recipe == [("resnet18", 300, 128, "sgd", 0.1, 0.9, False, 5e-4, "multistep", (150, 225), 0.1, 777, "fp16"),
                      ("lenet5", 300, 128, "sgd", 0.1, 0.9, False, 5e-4, "multistep", (150, 225), 0.1, 777, "bf16")]  # fmt: skip
    assert (configs[1].temperature, configs[1].distillation_weight, configs[1].hard_weight) == (30.0, 0.1, 1.0)


def test_a_progress_bar_written_to_a_log_redraws_by_the_minute_not_by_the_step(tmp_path, data_dir, monkeypatch):
    """stderr not a terminal (nohup, a batch job): each redraw stays in the file, so not ten a second for hours;
    the epoch's line is still written as each epoch ends."""
    step = group_module.Group.train_step
    monkeypatch.setattr(group_module.Group, "train_step", lambda self, *args: (time.sleep(0.15), step(self, *args))[1])  # 4 steps an epoch
    result = kdcli(*teacher_args(data_dir, tmp_path / "out", "--epochs", 2, "--eval-every", 2), "--no-quiet")
    assert result.exit_code == 0, result.output
    redraws = result.stderr.split("\r")
    assert len(redraws) <= 8 and "epoch 2/2" in redraws[-1] and "test=" in redraws[-1], redraws


def test_a_log_holds_each_epochs_line_once_labelled_with_its_own_epoch(tmp_path, data_dir):
    """The line drawn as an epoch ended was labelled with the next epoch, and the last one was written twice."""
    result = kdcli(*teacher_args(data_dir, tmp_path / "out", "--epochs", 3), "--no-quiet")
    assert result.exit_code == 0, result.output
    ended = [line for line in result.stderr.split("\r") if "train=" in line]
    logged = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [re.match(r"epoch (\d)/3", line)[1] for line in ended] == ["1", "2", "3"], ended
    assert [re.search(r"train=([\d.]+)%", line)[1] for line in ended] == [f"{m['train_accuracy']:.1f}" for m in logged], ended


def test_a_progress_bar_written_to_a_log_is_not_redrawn_by_tqdms_monitor_either(tmp_path, data_dir, monkeypatch):
    """tqdm's monitor thread redraws a bar not redrawn for maxinterval seconds (default 10): in a log file, a second
    line a minute besides the one mininterval allows. Read off each bar: the test cannot wait a minute."""
    teacher, dump = record_progress_bars(monkeypatch, train_module), record_progress_bars(monkeypatch, dump_module)
    assert kdcli(*teacher_args(data_dir, tmp_path / "t"), "--no-quiet").exit_code == 0
    dumped = kdcli("dump-logits", "--teacher", tmp_path / "t", "--epochs", 1, "--device", "cpu", "--data-dir", data_dir, "--out", tmp_path / "c.h5")
    assert dumped.exit_code == 0, dumped.output
    assert [(bar.mininterval, bar.maxinterval) for bar in teacher + dump] == [(60.0, 60.0)] * 3  # the dump's un-augmented pass, then its epochs


@pytest.mark.parametrize("again", [["--force"], []], ids=["force", "before-its-first-checkpoint"])
def test_a_diverged_run_records_it_the_report_tells_it_apart_and_training_it_again_clears_it(tmp_path, data_dir, again):
    """A run stopped by a loss that is not finite is a result of its setting, not a run yet to finish: its folder
    says so, and the report tells it apart from unfinished runs (a paper table would drop the seed unsaid). Trained
    at --lr 1e30, it is of another recipe than `good`: a report of both refuses it as it would a finished one, since
    named under good's table it would pass for a seed that diverged at good's lr. Trained again (--force; or, with no
    checkpoint to keep, run again), it finishes as any run does, with no such record.
    Seed 2: the default 777 of `good` would be one seed counted twice once `bad` finishes."""
    runs = tmp_path / "runs"
    assert kdcli(*teacher_args(data_dir, runs / "good")).exit_code == 0
    assert not (runs / "good" / "diverged.json").exists()
    diverged = kdcli(*teacher_args(data_dir, runs / "bad", "--seed", 2, "--lr", "1e30"))
    assert_clean_error(diverged, "not finite at epoch 1, step", "--force", codes=(1,))
    record = json.loads((runs / "bad" / "diverged.json").read_text())
    assert f"error: {record['error']}" == diverged.stderr.splitlines()[-1]
    assert (record["epoch"], record["step"]) == (1, int(re.search(r"step (\d+)", record["error"])[1]))
    assert_clean_error(kdcli("report", runs / "bad"), "no finished run", "(1 diverged)", codes=(1,))
    assert_clean_error(kdcli("report", runs), "the lenet5 runs were trained with other lr", "good", "bad", codes=(1,))
    assert not (runs / "results.md").exists()
    retrained = kdcli(*teacher_args(data_dir, runs / "bad", "--seed", 2, *again))
    assert retrained.exit_code == 0, retrained.output
    assert not (runs / "bad" / "diverged.json").exists()
    reported = kdcli("report", runs)
    assert reported.exit_code == 0 and "diverged" not in reported.stdout and "| lenet5 | baseline | 0 | 2 |" in reported.stdout, reported.output
