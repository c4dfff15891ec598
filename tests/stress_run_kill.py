"""Stress check of the crash safety of training runs and sweeps (not part of the suite: 2 CPU cores).

    .venv/bin/python tests/stress_run_kill.py --kills 25                       # random kills: 75 in ~7 min
    .venv/bin/python tests/stress_run_kill.py --kills 20 --slow-writes 0.1     # more of them inside writes: 60 in ~11 min
    .venv/bin/python tests/stress_run_kill.py --at-every-write 1 --only train-teacher --only train-student   # 44 in ~8 min
    .venv/bin/python tests/stress_run_kill.py --at-every-write 3 --only sweep  # every 3rd of its 96 write points: ~9 min

Makes tiny CIFAR-format data (1,000 images), a resnet8 teacher and a 3-epoch cache, then an
unbroken reference of each command: train-teacher, train-student and a sweep of 6 students
stacked in pairs (--parallel 2). Then, per command, it starts the command into a fresh folder,
SIGKILLs it after a delay drawn uniformly over the reference's duration (start-up included),
and starts it again with --resume (a sweep: the same command, which always resumes), killing
again at random, until one run exits 0; then it starts over in a fresh folder.
--at-every-write instead kills a fresh run at its Nth write point (HOOKS) for every N, then
resumes it once, unbroken.

Each finished folder must equal the reference: the same checkpoint weights (torch.equal), the
same metrics.jsonl lines (timing aside), the same summary.json accuracies, the same report, and
no file the reference lacks (a temporary file, a stale lock). A run that ends otherwise than
killed or with status 0 is a failure (said as a clean `error:` line or not), as is a traceback.
A sweep's student that resumed in a stack of another size logs another trained_together, and
may log a train_loss 1e-6 off (README: Reproducibility); its weights must still be the same.
Children run on one thread (OMP_NUM_THREADS=1), as the reference. Where the random kills
landed is told from what each left in the folder (`landed`); every start, with its exit
status and stderr, is in log.jsonl of the work folder.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from kdcli.checkpoint import CHECKPOINT, load_checkpoint  # noqa: E402

# Imported first by every child (sitecustomize.py, first on PYTHONPATH). Each write kdcli makes passes three points:
# half of a checkpoint written, an fsync, a rename. --slow-writes pauses at each, so that random kills land inside
# writes far more often; --at-every-write kills the child at the Nth point it reaches (KDCLI_STRESS_KILL_AT), after
# noting which point that was in KDCLI_STRESS_POINT. kdcli itself is unchanged.
HOOKS = """import os, signal, time
delay, kill_at = float(os.environ.get("KDCLI_STRESS_WRITE_DELAY") or 0), int(os.environ.get("KDCLI_STRESS_KILL_AT") or 0)
if delay or kill_at:
    import io, torch
    save, fsync, replace, reached = torch.save, os.fsync, os.replace, [0]

    def point(what, path):
        reached[0] += 1
        if reached[0] == kill_at:
            with open(os.environ["KDCLI_STRESS_POINT"], "w") as f:
                f.write(what + "\\t" + str(path))
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(delay)

    def slow_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            return save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        point("half-way through torch.save", f.name)
        f.write(data[len(data) // 2 :])

    def slow_fsync(fd):
        point("before fsync", os.readlink(f"/proc/self/fd/{fd}"))
        return fsync(fd)

    def slow_replace(src, dst, *args, **kwargs):
        point("before the rename", dst)
        return replace(src, dst, *args, **kwargs)

    torch.save, os.fsync, os.replace = slow_save, slow_fsync, slow_replace
"""
TIMING = {"seconds", "images_per_s"}  # what two identical runs may log differently
REGROUPED = {"trained_together"}  # and a sweep's student resumed in a stack of another size
REGROUPED_SEEN = set()  # the students compared that were (each, once per folder)
SUMMARY_SAME = ("model", "epochs", "seed", "test_accuracy", "val_accuracy", "train_accuracy", "temperature", "distillation_weight", "hard_weight")
COMMON = ["--device", "cpu", "--quiet", "--no-download", "--batch-size", "50", "--lr", "0.05", "--eval-every", "1", "--save-every", "1"]


def commands(tmp):
    """{name: (the command's arguments but --out, whether it takes --resume)}."""
    data, cache = str(tmp / "data"), str(tmp / "cache.h5")
    return {
        "train-teacher": (["train-teacher", "--model", "resnet8", "--epochs", "3", "--val-size", "100", "--data-dir", data, *COMMON], True),
        "train-student": (["train-student", "--cache", cache, "--temperature", "4", "--epochs", "6", "--seed", "3", *COMMON], True),
        "sweep": (["sweep", "--cache", cache, "--temperatures", "1,4", "--seeds", "1,2", "--epochs", "3", "--parallel", "2", *COMMON], False),
    }


CHILD_ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # main() puts the HOOKS first on the path, and --slow-writes


def kdcli(*args, **hook_env):
    """`python -m kdcli ARGS` as a child, with the HOOKS; stderr to a pipe."""
    env = {**os.environ, **CHILD_ENV, **hook_env}
    return subprocess.Popen([sys.executable, "-m", "kdcli", *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def ok(*args):
    child = kdcli(*args)
    _, stderr = child.communicate()
    if child.returncode:
        raise SystemExit(f"setup failed ({' '.join(map(str, args))}): {stderr}")


def setup(tmp):
    """Tiny data (1,000 training images), a resnet8 teacher of 2 epochs and a 3-epoch cache of it."""
    from conftest import write_cifar_folder

    write_cifar_folder(tmp / "data", train_per_batch=200)
    ok("train-teacher", "--model", "resnet8", "--epochs", "2", "--data-dir", tmp / "data", "--out", tmp / "teacher", *COMMON)
    ok("dump-logits", "--teacher", tmp / "teacher", "--epochs", "3", "--device", "cpu", "--quiet", "--out", tmp / "cache.h5")


def reference(args, out) -> float:
    start = time.monotonic()
    ok(*args, "--out", out)
    return time.monotonic() - start


def run_folders(out: Path) -> list:
    return sorted({p.parent for p in out.rglob("config.json")}) if out.is_dir() else []


def snapshot(out: Path) -> dict:
    """{file: (size, mtime)} under `out`, to tell whether a child wrote anything before its kill."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} if out.exists() else {}


def landed(out: Path, runs: int, before: dict) -> str:
    """Where a kill came, told from what it left in `out` (`runs`: run folders in a finished one; `before`: the
    snapshot of `out` when the killed child started)."""
    if snapshot(out) == before:
        return "start-up: nothing written yet (imports, data, cache; or a rerun reading the folder)"
    if any(out.rglob(".*.tmp-*")):
        return "writing a checkpoint or json"
    folders = run_folders(out)
    if not folders:
        return "start-up: --out claimed, no run started"
    states, logged = [], []
    for f in folders:
        lines = len((f / "metrics.jsonl").read_text().splitlines()) if (f / "metrics.jsonl").exists() else 0
        saved = load_checkpoint(f)["epoch"] if (f / CHECKPOINT).exists() else 0
        states.append("finished" if (f / "summary.json").exists() else "logged, not saved" if lines > saved else "training")
        logged.append(lines)
    if "logged, not saved" in states:
        return "after an epoch's line, before its checkpoint"
    if len(states) == runs and all(s == "finished" for s in states):
        return "after the last summary.json (a sweep's report, or exiting)"
    if (out / "T1").exists() or (out / "baseline").exists():  # a sweep
        return "a sweep's group, mid-epoch" if "training" in states else "a sweep, between groups"
    return f"epoch {logged[0] + 1}, training or evaluating"


def compare(out: Path, ref: Path) -> list:
    """What differs between a finished folder and the reference (nothing: [])."""
    problems = []
    files = {str(p.relative_to(ref)) for p in ref.rglob("*") if p.is_file()}
    got = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    if files != got:
        problems.append(f"files: missing {sorted(files - got)}, extra {sorted(got - files)}")
    for f in run_folders(ref):
        rel, mine = f.relative_to(ref), out / f.relative_to(ref)
        a, b = load_checkpoint(mine)["model"], load_checkpoint(f)["model"]
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
            problems.append(f"{rel}: other weights")
        rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (mine, f)]
        if len(rows[0]) != len(rows[1]):
            problems.append(f"{rel}: {len(rows[0])} metrics lines, the reference {len(rows[1])}")
        for x, y in zip(*rows):
            if x["trained_together"] != y["trained_together"]:
                REGROUPED_SEEN.add(str(mine))
                if abs(x["train_loss"] - y["train_loss"]) <= 2e-6:  # its last digit
                    x, y = {**x, "train_loss": 0}, {**y, "train_loss": 0}
            differ = sorted(k for k in x.keys() | y.keys() if k not in TIMING | REGROUPED and x.get(k) != y.get(k))
            if differ:
                problems.append(f"{rel}: epoch {y['epoch']}: {', '.join(f'{k} {x.get(k)} (ref {y.get(k)})' for k in differ)}")
        s, t = (json.loads((d / "summary.json").read_text()) for d in (mine, f))
        if differ := [k for k in SUMMARY_SAME if s.get(k) != t.get(k)]:
            problems.append(f"{rel}: summary.json differs in {differ}")
    for name in ("results.md", "results.csv"):
        if (ref / name).exists() and (out / name).read_text() != (ref / name).read_text():
            problems.append(f"{name} differs")
    if (ref / "runs.csv").exists():
        strip = [[line.split(",")[:-1] for line in (d / "runs.csv").read_text().splitlines()] for d in (out, ref)]  # train_seconds, last
        if strip[0] != strip[1]:
            problems.append("runs.csv differs (train_seconds aside)")
    return problems


def is_clean_refusal(stderr: str) -> bool:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return "Traceback" not in stderr and bool(lines) and lines[-1].startswith("error: ")


def run_once(args, delay):
    """Start the command; SIGKILL it after `delay` seconds (None: let it end). Returns (exit status, stderr)."""
    child = kdcli(*args)
    try:
        _, stderr = child.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        _, stderr = child.communicate()
    return child.returncode, stderr


def stress(name, args, resumable, ref, duration, kills, rng, tmp, log):
    """Kill `args` into fresh folders until `kills` kills, each folder run to its end and compared with `ref`.
    Returns (kills, folders finished, {where: kills}, findings)."""
    done = finished = 0
    where, findings = {}, []
    runs = len(run_folders(ref))
    while done < kills:
        out = tmp / f"out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        attempt, last_failure, unbroken, spot = 0, None, False, "-"
        while True:
            delay = None if unbroken else rng.uniform(0, duration)
            before = snapshot(out)
            status, stderr = run_once([*args, "--out", out, *(["--resume"] if resumable and attempt else [])], delay)
            attempt += 1
            log.write(json.dumps({"command": name, "attempt": attempt, "delay": delay, "status": status, "stderr": stderr}) + "\n")
            log.flush()
            if status == -signal.SIGKILL:
                done += 1
                spot = landed(out, runs, before)
                where[spot] = where.get(spot, 0) + 1
                unbroken = done >= kills  # the last folder is finished without a kill, to be compared
                continue
            if status == 0:
                if "Traceback" in stderr:
                    findings.append(f"{name}: attempt {attempt} exited 0 with a traceback: {stderr.strip()[-2000:]}")
                finished += 1
                findings += [f"{name}: {p}" for p in compare(out, ref)]
                break
            kind = "a clean refusal" if is_clean_refusal(stderr) else "NOT one error line"
            findings.append(f"{name}: attempt {attempt} (after a kill at: {spot}) exited {status}, {kind}: {stderr.strip()[-2000:]}")
            if stderr == last_failure or attempt > 50:  # it refuses to resume: the folder is stuck
                findings.append(f"{name}: gave up on {out} (kept as {out}-stuck)")
                shutil.rmtree(f"{out}-stuck", ignore_errors=True)
                out.rename(f"{out}-stuck")
                break
            last_failure = stderr
    return done, finished, where, findings


def at_every_write(name, args, resumable, ref, tmp, log, stride=1):
    """Kill a fresh run at its 1st write point, resume it to its end and compare; then at its 1+stride-th, and so
    on until a run reaches its end before the point. Returns (kills, {where: kills}, findings)."""
    kills, where, findings, out, noted = 0, {}, [], tmp / f"out-{name}", tmp / "point.txt"
    for k in range(1, 10_000, stride):
        shutil.rmtree(out, ignore_errors=True)
        noted.unlink(missing_ok=True)
        child = kdcli(*args, "--out", out, KDCLI_STRESS_KILL_AT=str(k), KDCLI_STRESS_POINT=str(noted))
        _, stderr = child.communicate()
        if child.returncode == 0:
            break  # no point left: the run ended first
        what, _, path = (noted.read_text() if noted.exists() else "?\t?").partition("\t")
        # which file of which run: .checkpoint.pt.tmp-123 is checkpoint.pt being written, ..renames.tmp-123.tmp-123 the list of renames
        file = re.sub(r"^\.+|(\.tmp-\d+)+$", "", Path(path).name)
        point = f"{what} of {file} in {Path(path).parent.relative_to(out) if Path(path).is_relative_to(out) else path}"
        log.write(json.dumps({"command": name, "kill_at": k, "point": point, "status": child.returncode, "stderr": stderr}) + "\n")
        if child.returncode != -signal.SIGKILL:
            findings.append(f"{name}: exited {child.returncode} before write point {k}: {stderr.strip()[-2000:]}")
            continue
        kills += 1
        where[f"{what} of {file}"] = where.get(f"{what} of {file}", 0) + 1
        status, stderr = run_once([*args, "--out", out, *(["--resume"] if resumable else [])], None)
        log.write(json.dumps({"command": name, "resumed_after": k, "status": status, "stderr": stderr}) + "\n")
        log.flush()
        if status != 0 or "Traceback" in stderr:
            findings.append(f"{name}: killed at write point {k} ({point}), the rerun exited {status}: {stderr.strip()[-2000:]}")
            continue
        findings += [f"{name}: killed at write point {k} ({point}): {p}" for p in compare(out, ref)]
    return kills, where, findings


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=30, help="kills per command")
    parser.add_argument("--only", choices=["train-teacher", "train-student", "sweep"], action="append")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow-writes", type=float, default=0, metavar="SECONDS", help="pause each checkpoint write, fsync and rename so long (try 0.1)")
    parser.add_argument("--at-every-write", type=int, metavar="STRIDE", help="instead of random kills: kill at every STRIDE-th write point, resume, compare")
    parser.add_argument("--keep", help="work in this folder (kept), not a temporary one")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kdcli-stress-run-"))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "hooks").mkdir(exist_ok=True)
    (tmp / "hooks" / "sitecustomize.py").write_text(HOOKS)
    CHILD_ENV["PYTHONPATH"] = f"{tmp / 'hooks'}{os.pathsep}{ROOT}"
    if not (tmp / "cache.h5").exists():
        setup(tmp)
    CHILD_ENV["KDCLI_STRESS_WRITE_DELAY"] = str(args.slow_writes or "")  # after the setup: the references too
    failed = False
    with open(tmp / "log.jsonl", "a") as log:
        for name, (cmd, resumable) in commands(tmp).items():
            if args.only and name not in args.only:
                continue
            ref = tmp / f"ref-{name}"
            shutil.rmtree(ref, ignore_errors=True)
            duration = reference(cmd, ref)
            if args.at_every_write:
                kills, where, findings = at_every_write(name, cmd, resumable, ref, tmp, log, args.at_every_write)
                print(f"{name}: reference {duration:.1f} s; {kills} kills at write points, each resumed and compared; points: {where}", flush=True)
            else:
                kills, finished, where, findings = stress(name, cmd, resumable, ref, duration, args.kills, rng, tmp, log)
                print(f"{name}: reference {duration:.1f} s; {kills} kills, {finished} folders finished and compared; kills landed: {where}", flush=True)
            for f in findings:
                print(f"  FINDING {f}", flush=True)
            failed |= bool(findings)
    print(f"{len(REGROUPED_SEEN)} compared students had resumed in a stack of another size (trained_together differs, allowed)")
    print(f"every start, with its exit status and stderr: {tmp / 'log.jsonl'}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
