"""The records of a run folder: config.json and summary.json read and checked, metrics.jsonl kept one line an epoch.

    record = check_record(read_json(path), path)    # one KdcliError line for a file not as kdcli writes it
    write_json(path, obj)                           # replaced whole (checkpoint.write_atomic)
    append_line(run_dir / "metrics.jsonl", line)    # on disk before it returns
    truncate_metrics(path, epoch)  /  read_metrics(path, epochs)
    as_recorded_now(config)                         # recorded options as this kdcli names them (older runs too)

A file is replaced whole (a kill leaves the old one or the new), but metrics.jsonl, appended to one fsynced line
at a time: a torn last line is dropped when the run resumes.
"""

import json
import os
from pathlib import Path

from kdcli import KdcliError, is_count, is_number
from kdcli.checkpoint import write_atomic
from kdcli.models import canonical_name


def read_json(path: Path) -> dict:
    """A JSON object kdcli wrote (config.json, summary.json), or one KdcliError line if it is unreadable or not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise KdcliError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise KdcliError(f"cannot read {path}: expected a JSON object")
    return data


def _is_percent(x) -> bool:
    return is_number(x) and 0 <= x <= 100


def _is_percent_or_null(x) -> bool:  # val_accuracy without --val-size
    return x is None or _is_percent(x)


def _is_non_negative(x) -> bool:
    return is_number(x) and x >= 0


# The fields of summary.json and config.json that kdcli reads back (the report, a kept run), and what kdcli writes in
# each: one hand-edited or damaged is refused by name, not met as a traceback (or a 300-digit mean) later.
RECORD_FIELDS = {
    "model": (lambda x: isinstance(x, str), "a model's name"),
    "seed": (is_count, "a seed (an integer)"),
    "epochs": (is_count, "a number of epochs"),
    "test_accuracy": (_is_percent, "a percentage"),
    "val_accuracy": (_is_percent_or_null, "a percentage or null"),
    "train_accuracy": (_is_percent_or_null, "a percentage or null"),
    "train_seconds": (_is_non_negative, "a number of seconds"),
    "temperature": (lambda x: is_number(x) and x > 0, "a temperature (a number above 0)"),
    "distillation_weight": (_is_non_negative, "a weight (a number from 0)"),
    "hard_weight": (_is_non_negative, "a weight (a number from 0)"),
    "cache_epochs": (lambda x: is_count(x) and x > 0, "a number of epochs"),
    "cache_teacher_sha256": (lambda x: isinstance(x, str), "a checksum (a string)"),
    "cache_teacher_test_accuracy": (_is_percent, "a percentage"),
    "teacher_saw_val_images": (is_count, "a number of images"),
}


def check_record(record: dict, path: Path, required=()) -> dict:
    """`record`, read from `path` (a summary.json or config.json), if it has the `required` fields and each of its
    RECORD_FIELDS holds what kdcli writes there; else one KdcliError line naming the first that does not."""
    for name in required:
        if name not in record:
            raise KdcliError(f"{path} has no {name}: is it a kdcli run?")
    for name, (holds, what) in RECORD_FIELDS.items():
        if name in record and not holds(record[name]):
            raise KdcliError(f"{path}: its {name} is {json.dumps(record[name])[:40]}, where kdcli writes {what}: was the file edited?")
    return record


def write_json(path: Path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def truncate_metrics(path: Path, epochs: int):
    """Keep one line for each of epochs 1..`epochs` (the last written); drop later ones, a torn line (a write cut short
    by a full disk) and any other that is no epoch's: the summary sums the lines' seconds."""
    if path.exists():
        by_epoch = {}
        for line in path.read_bytes().decode(errors="replace").splitlines():
            try:
                epoch = json.loads(line)["epoch"]
            except (ValueError, KeyError, TypeError):
                continue
            if is_count(epoch) and 1 <= epoch <= epochs:
                by_epoch[epoch] = line
        write_text_atomic(path, "".join(by_epoch[e] + "\n" for e in sorted(by_epoch)))  # a kill now leaves the old lines or the new


def read_metrics(path: Path, epochs: int) -> list[dict]:
    """The lines of a finished run's epochs 1..`epochs`, as truncate_metrics left them and the epochs since added; one
    KdcliError line where the last epoch's is missing or lacks what the summary takes from it."""
    damaged = KdcliError(f"{path} lacks epoch {epochs}'s line, or a line lacks its numbers (edited or damaged since): pass --force to train the run again")
    try:
        logged = [json.loads(line) for line in path.read_text().splitlines()]
    except (ValueError, FileNotFoundError):  # a line that is no JSON, or the file deleted: damage too
        raise damaged from None
    if not logged or not all(isinstance(m, dict) and is_number(m.get("seconds")) for m in logged):
        raise damaged
    if logged[-1].get("epoch") != epochs or not is_number(logged[-1].get("train_accuracy")):
        raise damaged
    return logged


def write_text_atomic(path: Path, text: str):
    write_atomic(path, lambda f: f.write(text.encode()))


def append_line(path: Path, line: str):
    """Append one line, on disk before this returns. A full disk is one error line; the torn line it may leave
    is dropped when the run resumes (truncate_metrics)."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise KdcliError(f"cannot write {path}: {e.strerror or e}") from None


# Options that runs written by an earlier kdcli do not record, and the value those runs trained as: a
# resumed or reported old run compares as this value, not as a different option.
OPTIONS_ADDED_LATER = {"val_size": 0}


def as_recorded_now(config: dict) -> dict:
    """A run's (or cache's) recorded options as this kdcli records them: options added later at the value
    old runs trained with, --amp (before 2026-11-27 a flag, true meaning bf16) as a precision, and the
    model by its own name (kdcli until 2026-11-27 recorded an alias as given: "1" for lenet5)."""
    now = {**OPTIONS_ADDED_LATER, **config}
    if isinstance(now.get("amp"), bool):
        now["amp"] = "bf16" if now["amp"] else "off"
    if "model" in now:
        now["model"] = canonical_name(now["model"])
    return now


def plain(value):
    """An option's value as JSON records it (a tuple as a list), so that a given value and a recorded one compare."""
    return list(value) if isinstance(value, tuple) else value
