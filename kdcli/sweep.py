"""Many students from one cache: every (temperature, seed), plus a baseline per seed.

    result = sweep(SweepConfig(temperatures=(1, 10, 30), seeds=(777, 10)))
    # {"table": the report's markdown, "students": n, "trained_now": k (finished or diverged now), "diverged_now": those of
    #  the k that diverged, "earlier": students of earlier sweeps in the table,
    #  "diverged": its students that diverged (folders under --out), "divergence": what the first of them recorded, or None}

Each student gets the usual run folder under --out (`T30/seed777/`,
`baseline/seed777/`). Students are trained S at a time as one batched
computation (stack.ModelStack). A killed sweep resumes when run again: finished
students are kept, unfinished ones continue from their checkpoints. A student
that diverges is left (its folder records it) and the sweep goes on without it;
run again, it is kept as diverged, a result of its setting. The report
(report.py) of the whole folder is written at the end: these students and those
an earlier sweep with other seeds or temperatures left there.
"""

import contextlib
import functools
import resource
import sys
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from kdcli import Diverged, Interrupted, KdcliError, count, report
from kdcli.checkpoint import CHECKPOINT, finish_renames, peek_checkpoint
from kdcli.config import ConfigError, DistillOptions, StudentConfig, TrainOptions, check_no_repeats, check_seed, check_temperature
from kdcli.records import read_json
from kdcli.resume import check_resumed_on_its_images, check_same_inputs, check_same_options, check_sweep_can_start, forget_run, state_of_config_json
from kdcli.runs import DIVERGED, LOCK, check_sweep_folder, claim_folder, runs_below
from kdcli.signals import StopOnSignal
from kdcli.stack import stackable
from kdcli.train import device_and_data, epoch_and_step, open_student_cache, student_runs, train_runs, warn_of_cache


@dataclass
class SweepConfig(DistillOptions, TrainOptions):
    model: str = "lenet5"  # student architecture (see `kdcli models`)
    temperatures: tuple[float, ...] = (1.0, 10.0, 30.0, 50.0, 100.0)  # one KD setting per temperature (reference table)
    seeds: tuple[int, ...] = (777, 10, 20, 30)  # every setting is trained once per seed (reference seeds)
    baseline: bool = True  # also train each seed without the teacher (distillation weight 0)
    parallel: int = 0  # students trained at once as one batched computation (0: all on a GPU, 1 on a CPU)
    distillation_weight: float = 0.1  # weight of T^2 * KL (> 0: the students without the teacher are the baselines, --baseline)
    force: bool = False  # train every student again, finished or not
    quiet: bool = False  # no progress lines: the table, and the line that says where it is written, remain
    out: str = "runs/sweep"  # sweep folder: one run folder per student, results.md/csv/png and runs.csv

    # Not options of `kdcli sweep`, which always resumes: typed anyway (as for the other commands), refused with why.
    cli_hidden = {"resume": "a sweep has none: run again with the same options, it goes on where it stopped (--force starts it over)"}

    def check(self):
        super().check()
        if not self.distillation_weight > 0:
            raise ConfigError("--distillation-weight", "must be > 0 in a sweep: its students without the teacher are the baselines (--baseline)")
        if self.baseline and self.hard_weight == 0:
            raise ConfigError("--hard-weight", "must be > 0 with --baseline: a baseline learns from the labels alone")
        for t in self.temperatures:
            check_temperature(t, "--temperatures")
        for seed in self.seeds:
            check_seed(seed, "--seeds")
        if not self.seeds:
            raise ConfigError("--seeds", "give at least one seed")
        check_no_repeats(self.seeds, "--seeds")
        check_no_repeats(self.temperatures, "--temperatures")
        folders = {}  # folder -> the temperatures trained in it
        for t in self.temperatures:
            folders.setdefault(temperature_folder(t), []).append(t)
        for name, ts in folders.items():
            if len(ts) > 1:
                raise ConfigError("--temperatures", f"{' and '.join(map(repr, ts))} would share the folder {name}: give values that differ in their first 6 digits")
        if not self.temperatures and not self.baseline:
            raise ConfigError("--temperatures", "nothing to train: give temperatures or keep --baseline")


def temperature_folder(t: float) -> str:
    return f"T{t:g}"  # T30, T0.5: six significant digits


def student_configs(config: SweepConfig) -> list:
    """One StudentConfig per student of the sweep, each with its own folder; resumed when rerun."""
    shared = {f.name: getattr(config, f.name) for f in fields(StudentConfig) if hasattr(config, f.name)}
    # --force is applied to the whole sweep up front (sweep()); each student then resumes whatever it has.
    shared.update(resume=True, force=False, quiet=True)  # quiet: a student's own log is one line per evaluation
    out = Path(config.out)

    def student(seed, folder, **options):
        return StudentConfig(**{**shared, **options, "seed": seed, "out": str(out / folder / f"seed{seed}")})

    configs = []
    for seed in config.seeds:
        if config.baseline:
            configs.append(student(seed, "baseline", temperature=1.0, distillation_weight=0.0))
        configs += [student(seed, temperature_folder(t), temperature=t) for t in config.temperatures]
    return configs


def checked_state(c: StudentConfig) -> dict | None:
    """A student's options and progress where it started already (None where not), checked to be the options asked
    for now: a student, finished or not, is kept only if it trained with them."""
    folder = Path(c.out)
    ckpt = folder / CHECKPOINT
    # Its options and progress, not its tensors; a finished student's checkpoint may be deleted, its config.json not.
    # One that diverged before its first checkpoint has only its config.json: kept as diverged, it must be checked too.
    if ckpt.exists():
        state = peek_checkpoint(ckpt)
    elif finished(c) or diverged(c):
        state = state_of_config_json(folder)
    else:
        state = None
    if state is not None:
        check_same_options(c, state, folder, "run the sweep with the options it started with, --force to train it again, or another --out")
    return state


def finished(c: StudentConfig) -> bool:
    return (Path(c.out) / "summary.json").exists()


def diverged(c: StudentConfig) -> bool:
    return (Path(c.out) / DIVERGED).is_file()


def groups(configs: list, parallel: int) -> list:
    """Unfinished students in groups that can train together: same resume point, at most `parallel` each.
    A student, finished or not, is kept only if it trained with the options asked for now (checked_state); one that
    diverged is kept as such: trained again on the same options, it would diverge again (--force starts it over)."""
    by_start = {}
    for c in configs:
        state = checked_state(c)
        if finished(c) or diverged(c):
            continue
        by_start.setdefault(epoch_and_step(state), []).append(c)
    size = parallel or len(configs)
    return [members[i : i + size] for members in by_start.values() for i in range(0, len(members), size)]


def students_at_once(config: SweepConfig, device) -> int:
    """--parallel as it can be honoured on `device` (0: all)."""
    if not stackable(config.model):  # e.g. batch norm: vmap keeps no running statistics per student
        return 1
    if config.amp == "fp16" and device.type == "cuda":  # one loss scale per stack: a student's overflow would skip its stack-mates' steps
        return 1  # said by warn_unstacked, once the sweep is checked
    if config.parallel == 0 and device.type == "cpu":
        # A vmapped convolution runs as a grouped one, which on CPUs made 6 LeNet-5 students slower than 6
        # trained one after another (2 cores: 50x in a first probe, 1.4x in bench/README's run 5);
        # stacking pays where kernels launch, on GPUs.
        return 1
    return config.parallel


def warn_unstacked(config: SweepConfig, device):
    """Where students_at_once trains one at a time for --amp fp16, not as --parallel asked."""
    if stackable(config.model) and config.amp == "fp16" and device.type == "cuda" and config.parallel != 1:
        warnings.warn("--amp fp16 trains students one at a time (each needs its own loss scale); --amp bf16 stacks them", stacklevel=2)


def _forget_on_refusal(folders, exc_type, exc, tb):
    """A sweep refused (not stopped, nor ended by a student that diverged: its report counts the students not
    started yet) leaves the student folders it made as if never made, where they still hold only its lock."""
    if exc_type is None or issubclass(exc_type, (Interrupted, Diverged, KeyboardInterrupt)):
        return
    for folder in folders:
        if folder.is_dir() and {p.name for p in folder.iterdir()} <= {LOCK}:  # not made: its claim never came
            (folder / LOCK).unlink(missing_ok=True)
            folder.rmdir()
            with contextlib.suppress(OSError):  # its T30/ or baseline/ parent too, if nothing else is in it
                folder.parent.rmdir()


def allow_open_files(n: int):
    """Lift the soft limit on open files (1,024 on many systems) to n, or as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n if hard == resource.RLIM_INFINITY else min(n, hard), hard))


def _claim_students(config: SweepConfig, configs: list, held: contextlib.ExitStack):
    """Hold every student's folder from the start, so that another kdcli into one is refused and --force never
    deletes another kdcli's files; with --force, forget every student and the old report at once (a --force
    sweep stopped part-way then resumes without --force)."""
    new = [Path(c.out) for c in configs if not Path(c.out).exists()]
    held.push(functools.partial(_forget_on_refusal, new))  # first: a claim refused part-way (EMFILE) leaves none made
    for c in configs:
        held.enter_context(claim_folder(c.out))
    for c in configs:  # under their locks, before a checkpoint is read (or --force deletes it): a stack split by a kill among its renames is whole again
        finish_renames(c.out)
    if config.force:
        for c in configs:
            forget_run(c.out)
        for name in report.REPORT_FILES:  # the old table must not pass for the new one
            (Path(config.out) / name).unlink(missing_ok=True)


def check_students_inputs(runs):
    """A finished or diverged student is kept, and a stopped one resumed, only if it read this cache: checked before any
    group trains, since a student trained now from another cache would be refused with the sweep's own. The first refusal
    is said, with how many others share it: after a new teacher's cache, every one."""
    refused = []
    for r in runs:
        if not any((r.dir / name).exists() for name in ("summary.json", CHECKPOINT, DIVERGED)):
            continue  # not started: nothing read yet
        try:
            check_same_inputs(r)
        except KdcliError as e:
            refused.append(e)
    if refused:
        raise KdcliError(str(refused[0]) + (f"; {len(refused) - 1} more of this sweep's students are refused too" if len(refused) > 1 else ""))


def check_fits_the_folder(out, runs):
    """The students an earlier sweep left in `out` with other temperatures or seeds, and these `runs`, make one
    table: `kdcli report` on the folder would otherwise refuse it, once this sweep has spent its time. Those that
    diverged too: the table names them under it, as a result of its recipe and teacher."""
    own = {r.dir.resolve() for r in runs}
    below = [d for d in runs_below(Path(out), depth=2) if d.resolve() not in own]
    others = sorted(d for d in below if (d / "summary.json").exists())
    gone = sorted(d for d in below if (d / DIVERGED).is_file() and not (d / "summary.json").exists())
    earlier = (report.collect(others) if others else []) + report.diverged_runs(d.resolve() for d in gone)
    if not earlier:
        return
    # Most of these have no summary.json yet: their record holds what the report reads from one (model, seed, temperature, weights).
    planned = [{"run_dir": f"{r.dir.resolve()} (to train now)", "summary": r.record, "config": r.record} for r in runs]  # resolved, as collect's are
    found = {d.resolve(): d for d in below}  # the report resolves its runs: a student linked in from elsewhere is named by its link
    names = [str(found[Path(r["run_dir"])].relative_to(out)) for r in earlier]
    named = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    remedy = f"{out} holds an earlier sweep's students ({named}), which its report could not put in one table with these: pass another --out, or delete them"
    report.check_comparable(planned + earlier, remedy)  # its teachers too


def _train_groups(configs: list, runs: dict, config: SweepConfig, data, device, parallel: int, stop, progress: bool):
    """Train the groups one after another; a stop that came while a group evaluated or saved ends it between two.
    A group in which students diverge leaves them (their folders record it) and the sweep goes on: the groups are
    made again, so that the students stopped with them resume from their checkpoints without them. Progress is
    counted in students, whose number is known from the start; that of groups is not (made again, there are more)."""
    todo, groups_done = groups(configs, parallel), 0
    total = sum(map(len, todo))
    while todo:
        members = todo[0]
        if stop.requested:
            gone = sum(map(diverged, configs))  # not to train either: the run that resumes counts them apart as well
            also = f", {gone} diverged" if gone else ""
            raise Interrupted(f"interrupted between groups of students: {sum(map(finished, configs))} of {len(configs)} finished{also}, each in its folder under {config.out}", stop.signum)
        if progress:
            names = ", ".join(str(Path(c.out).relative_to(config.out)) for c in members)
            together = ", trained together (the progress shows their mean)" if len(members) > 1 else ""
            done = total - sum(map(len, todo))  # finished or diverged
            print(f"group {groups_done + 1} ({done} of {total} students done){together}: {names}", file=sys.stderr, flush=True)  # stdout: the table alone
        try:
            train_runs([runs[c.out] for c in members], data, device, progress=progress, in_sweep=True, stop=stop)
        except Diverged as e:
            if not any(map(diverged, members)):  # its record could not be written (a full disk): made again, its group would diverge again
                raise
            warnings.warn(f"{e}; the sweep goes on without it", stacklevel=2)
        except torch.OutOfMemoryError as e:
            e.students_at_once = len(members)  # what the remedy (cli.OUT_OF_MEMORY) says to go below: one cannot be
            raise
        groups_done += 1
        # Made again of the students still to train: the finished and diverged were checked by the first groups(), and
        # each peek of their checkpoints again after every group made a sweep's bookkeeping grow as its students squared
        # (100 students, one at a time on a CPU: 8 s, 0.12 s after the last group).
        todo = groups([c for c in configs if not (finished(c) or diverged(c))], parallel)


def divergence(config: SweepConfig, configs: list) -> tuple[list, str | None]:
    """The students that diverged (their folders under --out), and what to tell of them: which, and what the first
    one's diverged.json recorded, which says what to lower."""
    gone = [c for c in configs if diverged(c)]
    if not gone:
        return [], None
    names = [str(Path(c.out).relative_to(config.out)) for c in gone]
    first = read_json(Path(gone[0].out) / DIVERGED).get("error", "see its diverged.json")
    if len(gone) == len(configs):  # no table to leave them out of
        told = f"every student diverged ({', '.join(names)})" if len(gone) > 1 else "the sweep's only student diverged"
    else:
        told = f"{len(gone)} of {len(configs)} students diverged and {'is' if len(gone) == 1 else 'are'} left out of the table ({', '.join(names)})"
    return names, (f"{told}; the first: {first}" if len(gone) > 1 else f"{told}: {first}")


def check_can_start(config: SweepConfig):
    """What can be refused before the data and cache load (a refusal then costs nothing): the sweep's folder, the
    cache its KD students read (baselines alone, with no temperatures, read none), and the options of the students
    it started already, but with --force, which trains them again. groups() checks these again, under their locks."""
    check_sweep_can_start(Path(config.out), config.cache if config.temperatures else None)
    if not config.force:
        for c in student_configs(config):
            checked_state(c)


def sweep(config: SweepConfig, progress=True) -> dict:
    """Train every student of the sweep that is not finished yet, then write the report."""
    config.check()  # again, as train_teacher does: a field set since the config was built was never checked
    progress = progress and not config.quiet
    check_can_start(config)
    device, data = device_and_data(config)
    configs = student_configs(config)
    kd = [c for c in configs if c.distillation_weight > 0]
    parallel = students_at_once(config, device)
    stop, cache = StopOnSignal(), None  # one for the whole sweep: a Ctrl-C while a group evaluates or saves its last epoch stops before the next group
    try:
        for c in configs if not config.force else []:  # --force starts them over: their images do not matter
            check_resumed_on_its_images(c, data)
        cache = open_student_cache(kd[0], data) if kd else None
        allow_open_files(len(configs) + 64)  # a lock file held open per student
        with claim_folder(config.out), contextlib.ExitStack() as students:  # a second sweep here is refused meanwhile
            check_sweep_folder(Path(config.out))  # again, now that runs are refused inside: one may have started there while the data loaded
            runs = {c.out: r for c, r in zip(configs, student_runs(configs, data, cache))}
            check_fits_the_folder(config.out, runs.values())  # before --force deletes anything
            _claim_students(config, configs, students)
            check_students_inputs(runs.values())
            todo = groups(configs, parallel)
            to_train = sum(map(len, todo))
            # Warnings once every student is checked: just before a refusal they are noise.
            if kd:
                warn_of_cache(runs[kd[0].out])
            if todo:
                config.warn_ineffective()
                warn_unstacked(config, device)
            before = sum(map(diverged, configs))
            if progress:
                kept = f", {before} diverged before (kept: --force trains every student again)" if before else ""
                print(f"{count(len(configs), 'student')}: {len(configs) - to_train - before} finished before{kept}, {to_train} to train", file=sys.stderr, flush=True)
            _train_groups(configs, runs, config, data, device, parallel, stop, progress)
            gone, told = divergence(config, configs)
            if len(gone) == len(configs) and not any((d / "summary.json").exists() for d in runs_below(Path(config.out), depth=2)):
                raise Diverged(told)  # no finished run in the folder to report: the divergence is the news
            table, earlier = _report_the_folder(config.out, configs)
    finally:
        stop.restore()
        if cache is not None:
            cache.close()
    diverged_now = len(gone) - before  # those kept as diverged are not in to_train
    return {"table": table, "students": len(configs), "trained_now": to_train, "diverged_now": diverged_now, "earlier": earlier, "diverged": gone, "divergence": told}


def _report_the_folder(out, configs) -> tuple[str, int]:
    """The report of every run in the sweep's folder, as `kdcli report` on it writes it: its results.md describes
    the folder, earlier sweeps' students included (check_fits_the_folder found them comparable). Returns the
    table and how many finished students of earlier sweeps it holds besides these."""
    found = report.collect(out)
    table = report.report_of(found, out)
    own = {Path(c.out).resolve() for c in configs}
    return table, sum(Path(r["run_dir"]) not in own for r in found)
