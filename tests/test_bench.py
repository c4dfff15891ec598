"""bench/bench.py --smoke runs end to end on the CPU, so the benchmark never rots. It asserts nothing
about speed: that every measurement is there, with positive numbers, in the JSON it writes, and how it times."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_benchmark_writes_every_measurement(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--smoke", "--device", "cpu", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    keys = [m["key"] for m in result["measurements"]]
    assert keys == ["teacher", "dump", "dump_no_io", "student_vs_no_kd", "student_vs_online", "students_1", "students_2"]
    for m in result["measurements"]:
        for field in ("kdcli", "baseline", "ratio"):
            assert m[field] > 0, (m["key"], field, m[field])
    assert result["command"] and result["device"] and result["torch"] and result["date"]
    assert "ratio" in proc.stdout and "teacher epoch ResNet18" in proc.stdout  # the table was printed
    assert "--smoke: sizes so small that these numbers only show the benchmark runs" in proc.stdout


def test_a_count_below_one_is_refused_before_any_measurement(tmp_path):
    """--repeat 0 divided by zero after the teacher's warm-up, in a traceback; now a usage error, at once."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--smoke", "--device", "cpu", "--repeat", "0", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "argument --repeat: must be a whole number >= 1, got '0'" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, said", [
    (["--smoke", "--repeat", "0"], "argument --repeat: must be a whole number >= 1, got '0'"),
    (["--smoke", "--images", "0"], "argument --images: must be a whole number >= 1, got '0'"),
    (["infer", "--images", "1000"], "--images 1000 is fewer than the largest of --batches (4096), which infer times"),
])
def test_variants_refuse_sizes_they_cannot_time_before_any_measurement(args, said):
    """--repeat 0 divided by zero, and infer's batches of more images than there are made an empty epoch: tracebacks."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "variants.py"), "--device", "cpu", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "bench" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_synthetic_data_of_fewer_images_than_batch_files_loads(tmp_path):
    """--images 1 to 4 left a batch file empty, which the loader refuses as corrupt."""
    from kdcli.data import load_cifar10

    root = load_bench().write_synthetic_cifar(tmp_path, 3, 16)
    data = load_cifar10(root, torch.device("cpu"), subset=3, download=False)
    assert data.train_images.shape == (3, 3, 32, 32)


def test_smoke_variants_print_every_section():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "variants.py"), "--smoke", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("teacher  kdcli default") and "s/epoch" in line for line in lines), proc.stdout
    assert sum(line.startswith("infer ") and "img/s" in line for line in lines) == 4, proc.stdout  # eager and folded, 2 batch sizes
    assert sum(line.startswith("dump ") and "img/s" in line for line in lines) == 6, proc.stdout  # 2 batch sizes, 4 variants
    assert "Self CPU" in proc.stdout  # the profile table


@pytest.mark.skipif(shutil.which("g++") is None, reason="Inductor's CPU backend compiles C++")
def test_compile_start_compiles_the_dumps_labeller_once():
    """bench/compile_start.py with Inductor on the CPU: a dump's passes (200 = 3 x 64 + 8 training images, 60 test
    images) compile the labeller once, from an empty cache."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compile_start.py"), "--device", "cpu", "--model", "lenet5",
         "--images", "200", "--test-images", "60", "--batch-size", "64"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unique_graphs 1;" in proc.stdout, proc.stdout


def test_interleaved_rounds_take_turns_at_going_first():
    """What runs first in a round may find the GPU's clock or caches in another state: no side always does."""
    bench = load_bench()
    calls = []
    seconds = bench.timed_rounds({"kd": lambda: calls.append("kd"), "no_kd": lambda: calls.append("no_kd")}, torch.device("cpu"), 3, 50_000)
    assert calls == ["kd", "no_kd"] + ["kd", "no_kd", "no_kd", "kd", "kd", "no_kd"]  # the warm-ups, then rounds 1-3
    assert [len(v) for v in seconds.values()] == [3, 3]
