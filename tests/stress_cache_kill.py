"""Stress check of the cache's crash safety (not part of the suite: about a minute per 100 kills).

    .venv/bin/python tests/stress_cache_kill.py --kills 200            # the cache writer, CIFAR-10-sized epochs
    .venv/bin/python tests/stress_cache_kill.py --kills 50 --dump      # the whole dump-logits, tiny data

Starts a writer in a subprocess, SIGKILLs it at a random moment (creation included),
then checks that the file opens and that every epoch it counts as complete is right,
and starts the writer again, which resumes; until the cache is finished, then it
starts over with a new file. --dump also checks each finished cache against an
unbroken dump, array for array.
"""

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from kdcli import KdcliError, augment, cache  # noqa: E402

N, C, E = 50_000, 10, 60
IDENTITY = {"teacher_sha256": "a" * 64, "train_fingerprint": "b" * 64, "seed": 0, "epochs": E, "dtype": "float16"}


def expected(e):
    """Epoch e of the synthetic cache: its real augmentation parameters and logits that depend on e
    (cheap to make, so that the child spends its time writing)."""
    logits = (np.arange(N * C).reshape(N, C) * (e + 1) % 1000 / 100).astype(np.float16)
    return augment.params(0, e, N).numpy(), logits


def writer(path):
    """The child: what dump_logits does around the teacher, with synthetic logits."""
    with cache.write_lock(path):
        if cache.resume_point(path, IDENTITY, force=False) is None:
            attrs = {**IDENTITY, "teacher_model": "none", "teacher_test_accuracy": 0.0, "config": {}}
            zeros = np.zeros((N, C), np.float16)
            cache.create(path, attrs, np.zeros(N, np.int64), zeros, zeros[:100], E)
        with cache.CacheWriter(path) as w:
            for e in range(w.epochs_complete, E):
                w.write_epoch(e, *expected(e))


def check(path, precomputed):
    """The file opens and its complete epochs are right; returns epochs_complete (-1: no file yet)."""
    if not path.exists():
        return -1
    done = cache.cache_info(path)["epochs_complete"]  # raises if the file cannot be opened
    if done:
        with cache.open_cache(path, allow_partial=True) as c:
            for e in range(done):
                aug, logits = c.epoch(e)
                assert np.array_equal(aug.numpy(), precomputed[e][0]), e
                assert np.array_equal(logits.numpy(), precomputed[e][1]), e
    return done


DUMP_CHILD = """
import json, sys
from kdcli.dump import DumpConfig, dump_logits
dump_logits(DumpConfig(**json.loads(sys.argv[1])), progress=False)
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--dump", action="store_true", help="kill the real dump-logits instead of the bare writer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="kdcli-stress-"))
    path = tmp / "c.h5"
    if args.dump:
        command, window, precomputed, finished_check = setup_dump(tmp, path)
    else:
        command, window = [sys.executable, __file__, "--child", str(path)], (0.8, 4.2)  # import ~1 s, writing ~3 s
        precomputed, finished_check = [expected(e) for e in range(E)], None
    kills = finished = 0
    landed = {"before the file existed": 0, "mid-epoch": 0, "between epochs": 0}
    while kills < args.kills:
        child = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(*window))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait()
            kills += 1
            done = check(path, precomputed)
            where = "before the file existed" if done < 0 else "mid-epoch" if in_flight(path, done, len(precomputed)) else "between epochs"
            landed[where] += 1
        elif child.returncode != 0:
            raise SystemExit(f"child failed with status {child.returncode}: {child.stderr.read().decode()}")
        if check(path, precomputed) == len(precomputed):  # finished (perhaps killed on its way out)
            if finished_check:
                finished_check(path)
            finished += 1
            path.unlink()
    print(f"{kills} kills, {finished} caches finished; every file opened and its complete epochs were right; kills landed: {landed}")


def in_flight(path, done, epochs):
    """Whether some bytes of epoch `done` (not yet counted) were on disk when the kill came."""
    import h5py

    if done >= epochs:
        return False
    with h5py.File(path, "r", locking=False) as f:
        return bool(f["aug"][done].any()) or bool(f["logits"][done].any())


def setup_dump(tmp, path):
    """Tiny data and a LeNet-5 teacher; an unbroken dump to compare finished caches with."""
    import json

    import torch
    from conftest import write_cifar_folder
    from test_dump import assert_same_cache

    from kdcli.dump import DumpConfig, dump_logits
    from kdcli.models import create_model

    data_dir = write_cifar_folder(tmp / "data", train_per_batch=400)  # 2,000 images
    torch.manual_seed(0)
    (tmp / "teacher").mkdir()
    torch.save({"model": create_model("lenet5").state_dict(), "model_name": "lenet5", "num_classes": 10}, tmp / "teacher/checkpoint.pt")
    options = dict(teacher=str(tmp / "teacher"), data_dir=str(data_dir), epochs=40, device="cpu", download=False, quiet=True)
    dump_logits(DumpConfig(**options, out=str(tmp / "reference.h5")), progress=False)
    command = [sys.executable, "-c", DUMP_CHILD, json.dumps({**options, "out": str(path)})]
    with cache.open_cache(tmp / "reference.h5") as ref:
        precomputed = [tuple(t.numpy() for t in ref.epoch(e)) for e in range(ref.epochs)]
    return command, (1.5, 9.0), precomputed, lambda p: assert_same_cache(p, tmp / "reference.h5")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        writer(Path(sys.argv[2]))
    else:
        try:
            main()
        except KdcliError as e:
            raise SystemExit(f"FAILED: {e}")
