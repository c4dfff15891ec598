"""Report: many finished runs -> one table of mean and spread per setting.

    text = report(["runs/sweep", "runs/baseline"], "runs/report")   # results.md, .csv, .png, runs.csv; the table

    runs = collect(["runs/sweep", "runs/baseline"])      # the steps: every summary.json below
    rows = aggregate(runs)                                # one row per setting
    text = write_report(rows, "runs/report", teacher_accuracy(runs), len(runs.unfinished), runs.diverged, runs)

A setting is (model, temperature, distillation weight, hard weight); its runs
differ only by seed (runs of one model trained with other recipes, or a seed
repeated within a setting, or runs on other images, are refused: a row would
mix experiments). All baselines (distillation weight 0) of a model are one
setting whatever their temperature, which they never use. Each KD setting is
compared with its model's baseline: the difference of the means with a 95%
confidence interval from Welch's t-test, because seed noise alone spans about
two points on CIFAR-10 (the reference's baseline: 73.26 to 75.64 over four
seeds), more than most KD gains. Runs trained with --val-size also get their
mean accuracy on the held-out training images: the column to choose a setting
by without selecting on the test set.
"""

import csv
import io
import itertools
import json
import math
import os
import statistics
import warnings
from pathlib import Path

from kdcli import KdcliError, count, utf8_refusal
from kdcli.checkpoint import delete_stale_temporaries, write_atomic
from kdcli.models import canonical_name
from kdcli.records import as_recorded_now, check_record, read_json, write_text_atomic
from kdcli.runs import DIVERGED, LOCK, kdcli_config

SETTING_COLUMNS = ["model", "temperature", "distillation_weight", "hard_weight", "n"]
ACCURACY_COLUMNS = ["mean", "std", "min", "max", "delta", "ci_low", "ci_high"]  # percent; delta and CI vs the baseline
VAL_COLUMNS = ["val_mean", "val_std"]  # percent, on the held-out training images (--val-size); only when a row has them
REPORT_FILES = ("results.md", "results.csv", "runs.csv", "results.png")
# runs.csv: one line per run, the numbers each row of results.csv summarises, for analyses of one's own (paired by seed, ...)
RUN_COLUMNS = ["run", "model", "temperature", "distillation_weight", "hard_weight", "seed", "test_accuracy", "val_accuracy", "train_accuracy", "epochs", "train_seconds"]


# ---------------------------------------------------------------- Student t quantile (no scipy)


def _incomplete_beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction for I_x(a, b), modified Lentz (Numerical Recipes 6.4); converges for x < (a+1)/(a+b+2)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 10_000):  # needs O(sqrt(max(a, b))) terms: a few hundred at df = 1e5
        # each m is two steps of the fraction, with the even and the odd numerator d_2m, d_2m+1
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)), -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return f


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _incomplete_beta_cf(a, b, x) / a
    return 1 - math.exp(log_front) * _incomplete_beta_cf(b, a, 1 - x) / b  # symmetry keeps the fraction convergent


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df (possibly fractional) degrees of freedom."""
    tail = 0.5 * regularized_beta(df / 2, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with t_cdf(t, df) = p, by bisection: the CDF is monotone, so this cannot fail to converge."""
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 2.0
    while t_cdf(hi, df) < p:  # bracket: t_{0.975} is 12.7 at df = 1 and heavier tails go further
        lo, hi = hi, hi * 2
    while hi - lo > 1e-10:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def welch_ci(a: list, b: list, level: float = 0.95):
    """Confidence interval for mean(a) - mean(b) without assuming equal variances; None if a side has n < 2."""
    if len(a) < 2 or len(b) < 2:
        return None
    diff = statistics.mean(a) - statistics.mean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)  # squared standard errors
    if va + vb == 0:  # every run identical on both sides: no spread to test, df would be 0/0
        return diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    half = t_quantile(1 - (1 - level) / 2, df) * math.sqrt(va + vb)
    return diff - half, diff + half


# ---------------------------------------------------------------- finding runs


class Runs(list):
    """The runs found (a list of {"run_dir", "summary", "config"}), plus the run folders left out: unfinished, and
    diverged (stopped by a loss or weights not finite: runs.DIVERGED)."""

    def __init__(self, runs=(), unfinished=(), diverged=()):
        super().__init__(runs)
        self.unfinished, self.diverged = list(unfinished), list(diverged)


def files_below(folder: Path, names: set) -> list[Path]:
    """The files named one of `names` at or below `folder`. os.walk, not Path.rglob: a folder this user may not
    read is an error (an OSError naming it), not runs left out of the table unsaid. Links to folders are followed
    (a sweep keeps the students another's folder links in, and counts them), each folder once: a link to a folder
    above ends there."""

    def refuse(error: OSError):
        raise error

    found, seen = [], set()
    for parent, folders, files in os.walk(folder, onerror=refuse, followlinks=True):
        if (real := os.path.realpath(parent)) in seen:
            folders.clear()  # walked already, through another name
            continue
        seen.add(real)
        found += [Path(parent, name) for name in files if name in names]
    return found


def collect(paths) -> Runs:
    """Every run folder (one with summary.json) at or below each path; folders with only config.json, or only the
    lock a sweep takes on each student's folder before it starts it, are unfinished, and those that record their
    divergence diverged. One path may be given alone."""
    if isinstance(paths, (str, os.PathLike)):  # else a str would be read as one path per character
        paths = [paths]
    if not paths:  # a library caller's empty list (the CLI requires one)
        raise KdcliError("no folders given: pass run folders or a folder holding them (a sweep)")
    finished, started = set(), set()
    for path in map(Path, paths):
        if not path.is_dir():
            raise KdcliError(f"{path} {'is not a folder' if path.exists() else 'does not exist'}: pass run folders or a folder holding them (a sweep)")
        found = files_below(path, {"summary.json", "config.json", LOCK, DIVERGED})
        if refused := next(filter(None, (utf8_refusal(str(f.parent)) for f in found)), None):  # its name could not be written
            raise KdcliError(f"{refused}; rename it")
        finished |= {f.parent.resolve() for f in found if f.name == "summary.json"}
        started |= {f.parent.resolve() for f in found if f.name != "summary.json"}
    # a folder that holds runs (one with a stray config.json) is a container, not an unfinished run. The folders above
    # a run are listed once: each folder left over tested against every run's parents was quadratic, 42 s for a report
    # of 1,000 runs beside 2,000 students a stopped sweep had claimed but not started.
    containers = {parent for d in finished | started for parent in d.parents}
    left_out = sorted(d for d in started - finished if d not in containers)
    # Told apart: a seed that blew up is a result of its setting, which a table must not drop as merely not done yet.
    diverged = [d for d in left_out if (d / DIVERGED).is_file()]
    unfinished = [d for d in left_out if d not in diverged]
    if not finished:
        also = ", ".join(f"{len(found)} {what}" for found, what in ((diverged, "diverged"), (unfinished, "unfinished")) if found)
        raise KdcliError(f"no finished run (summary.json) under {', '.join(map(str, paths))}{f' ({also})' if also else ''}: train some first")
    return Runs(map(_finished_run, sorted(finished)), unfinished=unfinished, diverged=diverged)


def _finished_run(d: Path) -> dict:
    """The finished run in folder d as the report reads it, refused where its summary.json or config.json is not kdcli's."""
    summary = check_record(read_json(d / "summary.json"), d / "summary.json", required=("model", "test_accuracy"))
    if summary.get("distillation_weight") and "temperature" not in summary:
        raise KdcliError(f"{d / 'summary.json'} has a distillation weight but no temperature: is it a kdcli run?")
    if not (d / "config.json").is_file():
        raise KdcliError(f"{d / 'config.json'} is missing: kdcli writes it beside summary.json, and the report compares runs by it")
    return {"run_dir": str(d), "summary": summary, "config": check_record(read_json(d / "config.json"), d / "config.json")}


def _separately(what: str) -> str:  # a refusal's remedy in the report, where no caller says another
    return f"report each {what}'s runs separately"


def teacher_accuracy(runs, remedy=None) -> float | None:
    """The teacher's test accuracy recorded by the KD runs' caches; None if none records it."""
    teachers = {}  # the teacher's sha256 (its accuracy, for runs that record none) -> (its accuracy, a run distilled from it)
    for r in runs:
        if "cache_teacher_test_accuracy" in r["config"]:
            accuracy = r["config"]["cache_teacher_test_accuracy"]
            # Keyed by sha256, not accuracy: caches dumped before 2026-11-27 took it from float16 logits, a few hundredths off.
            teachers.setdefault(r["config"].get("cache_teacher_sha256") or accuracy, (accuracy, r["run_dir"]))
    if len(teachers) > 1:  # rows would average students of different teachers into one setting
        examples = ", ".join(run_dir for _, run_dir in teachers.values())
        raise KdcliError(f"these runs were distilled from {len(teachers)} different teachers (e.g. {examples}): {remedy or _separately('teacher')}")
    return next(iter(teachers.values()))[0] if teachers else None


# ---------------------------------------------------------------- aggregation


def _setting(summary: dict) -> tuple:
    """(model, temperature, distillation weight, hard weight); temperature None for a baseline (or a teacher)."""
    w = float(summary.get("distillation_weight", 0.0))  # a teacher summary has no KD keys: a baseline of its model
    temperature = float(summary["temperature"]) if w != 0 else None
    return canonical_name(summary["model"]), temperature, w, float(summary.get("hard_weight", 1.0))


def _order(setting: tuple) -> tuple:
    model, temperature, w, hard = setting
    return model, temperature is not None, temperature or 0.0, w, hard  # baseline (None) first, then by T


RECIPE = ("epochs", "batch_size", "lr", "optimizer", "momentum", "nesterov", "weight_decay", "scheduler", "lr_milestones", "lr_gamma", "val_size",
          "train_fingerprint")  # the images themselves, not --subset: the official CIFAR-10 and a re-encoded copy are not one experiment
SAID_AS = {"train_fingerprint": "training images"}  # recipe fields whose name would not tell a reader what differs


def _recipe(config: dict) -> tuple:
    """The RECIPE fields the run's schedule and optimizer read, as (name, JSON) pairs: a cosine run given
    --lr-milestones trained as one without, and Adam ignores --momentum."""
    unused = set()
    if config.get("scheduler", "multistep") != "multistep":
        unused |= {"lr_milestones", "lr_gamma"}
    if config.get("optimizer", "sgd") == "adam":
        unused |= {"momentum", "nesterov"}
    return tuple((k, json.dumps(config.get(k))) for k in RECIPE if k not in unused)


def _described(recipe: dict, run_dir: str, fields: list) -> str:
    """A run and its values of the recipe `fields` (a _recipe's JSON, read back): "runs/a: epochs 30, scheduler onecycle"."""
    values = [f"{k} {'not recorded' if (v := json.loads(recipe[k])) is None else v}" for k in fields if k in recipe]
    return f"{run_dir}: {', '.join(values)}" if values else run_dir


def check_comparable(runs, remedy=None):
    """Refuse runs whose accuracies are not samples of one experiment. `remedy`: what to do, said instead of the
    report's own."""
    _check_one_recipe_per_model(runs, remedy)
    _check_one_cache_length(runs, remedy)
    teacher_accuracy(runs, remedy)  # before the seeds: two teachers' sweeps of the same seeds differ by their teacher, not by a run counted twice
    _check_each_seed_once(runs, remedy)


def _check_one_recipe_per_model(runs, remedy):
    """Runs of a model trained with other recipes or on other images (config.json) are other experiments."""
    by_recipe: dict[str, dict[tuple, str]] = {}  # model -> recipe ((field, JSON) pairs) -> a run with it
    for r in runs:
        recipe = _recipe(as_recorded_now(r["config"]))
        by_recipe.setdefault(canonical_name(r["summary"]["model"]), {}).setdefault(recipe, r["run_dir"])
    for model, found in by_recipe.items():
        if len(found) > 1:
            recipes = [(dict(recipe), run) for recipe, run in found.items()]
            differ = [k for k in RECIPE if len({r[k] for r, _ in recipes if k in r}) > 1]  # of the fields both read
            a = recipes[0]
            b = max(recipes[1:], key=lambda other: sum(other[0].get(k) != a[0].get(k) for k in differ))  # the example most unlike the first
            shown = [k for k in differ if k not in SAID_AS]  # the images' fingerprint by name alone
            raise KdcliError(f"the {model} runs were trained with other {', '.join(SAID_AS.get(k, k) for k in differ)} "
                             f"(e.g. {_described(*a, shown)}; {_described(*b, shown)}): {remedy or _separately('recipe')}")  # fmt: skip


def _check_one_cache_length(runs, remedy):
    """KD runs from caches of other lengths saw other views: a student replays cached epoch e mod E."""
    # Cached epoch e's views depend on (seed, e) alone: students of E >= their epochs replayed the same ones.
    replayed = {min(c["cache_epochs"], c.get("epochs", c["cache_epochs"])): r["run_dir"] for r in runs if "cache_epochs" in (c := r["config"])}
    if len(replayed) > 1:
        (e1, a), (e2, b) = list(replayed.items())[:2]
        raise KdcliError(f"these runs replayed {e1} and {e2} cached epochs of views (e.g. {a} and {b}): {remedy or _separately('cache')}")


def _check_each_seed_once(runs, remedy):
    """Two runs of one setting with the same seed are one run reported twice."""
    seen = {}
    for r in runs:
        key = (_setting(r["summary"]), r["summary"].get("seed"))
        if key in seen:
            raise KdcliError(f"{seen[key]} and {r['run_dir']} are the same setting and seed: {remedy or 'report one of them'}")
        seen[key] = r["run_dir"]


def aggregate(runs) -> list[dict]:
    """One row per setting, baseline first within each model, then by temperature."""
    check_comparable(runs)
    test: dict[tuple, list[float]] = {}  # setting -> its runs' test accuracies (val: held-out ones)
    val: dict[tuple, list[float]] = {}
    teacher_saw_val = set()  # settings with a run whose teacher trained on its held-out images
    for r in runs:
        setting = _setting(r["summary"])
        test.setdefault(setting, []).append(float(r["summary"]["test_accuracy"]))
        if r["summary"].get("val_accuracy") is not None:
            val.setdefault(setting, []).append(float(r["summary"]["val_accuracy"]))
        if r["config"].get("teacher_saw_val_images"):
            teacher_saw_val.add(setting)
    # a baseline has the same hard weight as the KD runs it is compared with (it scales the CE loss)
    baselines = {(model, hard): accs for (model, temperature, w, hard), accs in test.items() if w == 0}
    rows = []
    for setting, accs in sorted(test.items(), key=lambda kv: _order(kv[0])):
        model, temperature, w, hard = setting
        base = baselines.get((model, hard)) if w != 0 else None
        ci = welch_ci(accs, base) if base else None
        vals = val.get(setting, [])
        validated = len(vals) == len(accs)  # every run of the setting held out images, or the row has no val
        rows.append({
            "model": model, "temperature": temperature, "distillation_weight": w, "hard_weight": hard,
            "n": len(accs), "mean": statistics.mean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else None,  # sample std (ddof=1)
            "min": min(accs), "max": max(accs),
            "delta": statistics.mean(accs) - statistics.mean(base) if base else None,
            "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
            "val_mean": statistics.mean(vals) if validated else None,
            "val_std": statistics.stdev(vals) if validated and len(vals) > 1 else None,
            "teacher_saw_val": setting in teacher_saw_val,
        })
    return rows


# ---------------------------------------------------------------- writing


def _f(x, signed=False) -> str:
    return "n/a" if x is None else f"{x:+.2f}" if signed else f"{x:.2f}"


def _validated(rows) -> bool:
    return any(r["val_mean"] is not None for r in rows)


def _hard(r) -> str:
    return f" (hard {r['hard_weight']:g})" if r["hard_weight"] != 1 else ""


def _weights(r) -> str:
    # settings keep their own precision (w = 0.001 is not 0.00); accuracies get 2 decimals
    return f"{r['distillation_weight']:g}{_hard(r)}"


def _name_from(out: Path, folder) -> str:
    """A run's folder as results.md in `out` names it: relative where inside it (a sweep's T30/seed1), else whole."""
    folder = Path(folder).resolve()
    return str(folder.relative_to(out.resolve())) if folder.is_relative_to(out.resolve()) else str(folder)


def _markdown(rows, teacher_accuracy, unfinished, diverged) -> str:
    validated = _validated(rows)
    accuracy_header = " val ± std | test ± std |" if validated else " mean ± std |"
    lines = [f"| model | T | w | n |{accuracy_header} min | max | Δ vs baseline [95% CI] |", "| --- | ---: | ---: | ---: |" + " ---: |" * validated + " ---: | ---: | ---: | --- |"]
    for r in rows:
        w = _weights(r)
        if r["temperature"] is None:
            temperature, delta = "baseline", ""
        else:
            temperature = f"{r['temperature']:g}"
            ci = "n/a" if r["ci_low"] is None else f"{_f(r['ci_low'], True)}, {_f(r['ci_high'], True)}"
            delta = "no baseline" if r["delta"] is None else f"{_f(r['delta'], True)} [{ci}]"
        val = f" {_f(r['val_mean'])} ± {_f(r['val_std'])}{'*' * r['teacher_saw_val']} |" if validated else ""
        lines.append(f"| {r['model']} | {temperature} | {w} | {r['n']} |{val} {_f(r['mean'])} ± {_f(r['std'])} | {_f(r['min'])} | {_f(r['max'])} | {delta} |")
    return "\n".join(lines) + "\n\n" + " ".join(_notes(rows, teacher_accuracy, unfinished, diverged)) + "\n"


def _notes(rows, teacher_accuracy, unfinished, diverged) -> list[str]:
    """The sentences under the table: what its numbers are, the setting validation picks, the teacher, what was left out."""
    notes = ["Test accuracy in %, final epoch, over seeds."]
    if _validated(rows):
        notes.append("val: accuracy on the training images held out by --val-size; choose a setting by it, and the test columns report that choice without selecting on the test set.")
        if any(r["teacher_saw_val"] for r in rows):
            notes.append("*: distilled from a teacher that trained on the held-out images, so this val accuracy favours KD.")
        for model in dict.fromkeys(r["model"] for r in rows if r["val_mean"] is not None):
            scored = [r for r in rows if r["model"] == model and r["val_mean"] is not None]
            top = max(r["val_mean"] for r in scored)
            best = [r for r in scored if r["val_mean"] == top]  # a tie is said as one: picking the first would be arbitrary
            settings = " and ".join(f"{_setting_name(r)} ({_f(r['val_mean'])}% val, {_f(r['mean'])}% test)" for r in best)
            notes.append(f"Best {model} by validation: {settings}." if len(best) == 1 else f"Tied best {model} by validation: {settings}.")
    if teacher_accuracy is not None:
        notes.append(f"Teacher: {teacher_accuracy:.2f}%.")
    if diverged:
        notes.append(f"{count(len(diverged), 'run')} diverged, left out: {', '.join(diverged)}.")
    if unfinished:
        notes.append(f"{count(unfinished, 'run')} unfinished, left out.")
    return notes


def _setting_name(r) -> str:
    return f"baseline{_hard(r)}" if r["temperature"] is None else f"T = {r['temperature']:g}, w = {_weights(r)}"


def _write_csv(rows, path: Path, teacher_accuracy=None):
    accuracies = ACCURACY_COLUMNS + (VAL_COLUMNS if _validated(rows) else [])
    starred = ["teacher_saw_val"] if _validated(rows) else []  # the table's star: a val accuracy that favours KD
    teacher = "" if teacher_accuracy is None else round(teacher_accuracy, 2)
    # plain numbers, empty for n/a; accuracies rounded as in the table
    lines = ({**{k: r[k] for k in SETTING_COLUMNS}, **{k: "" if r[k] is None else round(r[k], 2) for k in accuracies},
              **{k: r[k] for k in starred}, "teacher_test_accuracy": teacher} for r in rows)  # fmt: skip
    _write_csv_lines(path, SETTING_COLUMNS + accuracies + starred + ["teacher_test_accuracy"], lines)  # the teacher: a paper table's first row


def _write_csv_lines(path: Path, columns, lines, **options):
    """The CSV of `lines` (dicts) under `columns`, replacing `path` whole (write_atomic); options: csv.DictWriter's."""
    with io.StringIO() as f:
        writer = csv.DictWriter(f, fieldnames=columns, **options)
        writer.writeheader()
        writer.writerows(lines)
        write_text_atomic(path, f.getvalue())


def diverged_run(folder) -> dict | None:
    """The run that diverged in `folder` as collect gives a finished one: its setting and seed from its config.json
    (its options: no number in it was reached), where it stopped from its diverged.json, and that config. None for a
    folder kdcli did not write: it has no setting to be told by."""
    record = kdcli_config(Path(folder))
    if not record:
        return None
    check_record(record, Path(folder) / "config.json", required=("model",))
    stopped = read_json(Path(folder) / DIVERGED)
    setting = {k: record[k] for k in ("model", "seed", "temperature", "distillation_weight", "hard_weight") if k in record}
    return {"run_dir": str(folder), "summary": {**setting, "diverged_epoch": stopped.get("epoch"), "diverged_step": stopped.get("step")}, "config": record}


def diverged_runs(folders) -> list[dict]:
    """diverged_run of each folder, leaving out those kdcli did not write."""
    return [r for r in map(diverged_run, folders) if r is not None]


def _write_runs_csv(runs, path: Path, out: Path, diverged=()):
    """One line per run, in the table's order and then by seed; `run` is its folder as results.md names it. Runs
    that diverged are lines too, with where they did (a seed that blew up is a result of its setting)."""
    runs = list(runs) + diverged_runs(diverged)
    validated = any(r["summary"].get("val_accuracy") is not None for r in runs)
    columns = [c for c in RUN_COLUMNS if validated or c != "val_accuracy"] + (["diverged_epoch", "diverged_step"] if diverged else [])
    ordered = sorted(runs, key=lambda r: (_order(_setting(r["summary"])), r["summary"].get("seed", 0)))
    _write_csv_lines(path, columns, (_run_line(r, out) for r in ordered), extrasaction="ignore")


def _run_line(r, out: Path) -> dict:
    """A run's line of runs.csv: its summary, its setting as the table tells it, and its folder; empty for n/a."""
    model, temperature, w, hard = _setting(r["summary"])
    setting = {"model": model, "temperature": temperature, "distillation_weight": w, "hard_weight": hard}
    return {k: "" if v is None else v for k, v in {**r["summary"], **setting, "run": _name_from(out, r["run_dir"])}.items()}


def _plot(rows, path: Path, teacher_accuracy) -> str | None:
    """Accuracy vs temperature into path; where matplotlib (the optional `plot` extra) cannot be imported, why not."""
    try:
        fig = _figure(rows, teacher_accuracy)
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and (e.name or "").partition(".")[0] == "matplotlib":
            return "matplotlib is not installed (pip install 'kdcli[plot]' for the plot)"
        return f"matplotlib is installed but cannot be imported ({e})"  # e.g. one built for numpy 1, under numpy 2
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))  # tight: the legend beside the axes is in the file
    return None


def _figure(rows, teacher_accuracy):
    """The plot as a matplotlib Figure; ImportError without matplotlib."""
    # Imported here: the report's table and csv must work without it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 4.5))
    FigureCanvasAgg(fig)  # the Agg backend on this figure only: no pyplot, no global backend switch, no display needed
    ax = fig.add_subplot()
    palette = (f"C{i}" for i in itertools.count())  # one colour per baseline band and per KD curve
    kd = {}  # (model, w, hard) -> its rows, one point per temperature
    for r in rows:
        if r["temperature"] is None:
            color, std = next(palette), r["std"] or 0
            ax.axhspan(r["mean"] - std, r["mean"] + std, color=color, alpha=0.15)
            ax.axhline(r["mean"], color=color, lw=1, label=f"{r['model']} baseline (n={r['n']})")
        else:
            kd.setdefault((r["model"], r["distillation_weight"], r["hard_weight"]), []).append(r)
    for (model, w, hard), series in kd.items():
        ax.errorbar([r["temperature"] for r in series], [r["mean"] for r in series], yerr=[r["std"] or 0 for r in series],
                    marker="o", capsize=3, color=next(palette), label=f"{model} KD w={w:g}" + (f" hard={hard:g}" if hard != 1 else ""))
    if kd:
        ax.set_xscale("log")  # temperatures are swept over decades (1 .. 100)
        temperatures = sorted({r["temperature"] for r in rows if r["temperature"] is not None})
        ax.set_xticks(temperatures, [f"{t:g}" for t in temperatures])  # the swept values, not 10^0, 10^1
        ax.minorticks_off()
    if teacher_accuracy is not None:
        ax.axhline(teacher_accuracy, color="k", ls="--", lw=1, label=f"teacher {teacher_accuracy:.2f}%")
    ax.set(xlabel="temperature T", ylabel="test accuracy (%)", title="Knowledge distillation on CIFAR-10 (mean ± std over seeds)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)  # beside the axes: inside, it hid the teacher line
    fig.tight_layout()
    return fig


def report(paths, out_dir) -> str:
    """The report of every run at or below `paths`, written into out_dir; return the markdown for the terminal."""
    return report_of(collect(paths), out_dir)


def report_of(found: Runs, out_dir) -> str:
    """report() of runs collected already. The runs that diverged are checked with them: named under the table as a
    result of its setting, one of another recipe, teacher or cache would be told as this experiment's."""
    check_comparable(list(found) + diverged_runs(found.diverged))
    return write_report(aggregate(found), out_dir, teacher_accuracy(found), unfinished=len(found.unfinished), diverged=found.diverged, runs=found)


def write_report(rows, out_dir, teacher_accuracy=None, unfinished: int = 0, diverged=(), runs=()) -> str:
    """Write results.md, results.csv, results.png and, given the `runs` the rows aggregate, runs.csv into out_dir;
    return the markdown for the terminal. `diverged`: the folders of the runs that diverged, named under the table."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KdcliError(f"cannot create {out}: {e.strerror or e}") from None
    text = _markdown(rows, teacher_accuracy, unfinished, [_name_from(out, d) for d in diverged])
    # Each file replaced whole (write_atomic): one a kill or a full disk cut short would be read as a report.
    try:
        delete_stale_temporaries(out, REPORT_FILES)  # a killed report's; not other files' (--out may hold anything)
        write_text_atomic(out / "results.md", text)
        _write_csv(rows, out / "results.csv", teacher_accuracy)
        if runs:
            _write_runs_csv(runs, out / "runs.csv", out, diverged)
        else:  # an older one beside the new table would list other runs
            (out / "runs.csv").unlink(missing_ok=True)
        not_plotted = _plot(rows, out / "results.png", teacher_accuracy)
        if not_plotted:  # an older plot beside the new table would show other runs
            (out / "results.png").unlink(missing_ok=True)
    except OSError as e:  # an unlink's
        raise KdcliError(f"cannot write the report into {out}: {e.strerror or e}; pass --out a folder you can write") from None
    except KdcliError as e:  # write_atomic's, which names the file
        raise KdcliError(f"{e}; pass --out a folder you can write") from None
    if not_plotted:  # a warning, not a line of the returned table: `kdcli sweep > table.md` keeps the table alone
        warnings.warn(f"results.png skipped: {not_plotted}", stacklevel=2)
    return text
