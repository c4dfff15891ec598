"""Students of the cache (train.py + cache.py together), on the CPU and the tiny data.

The property the design rests on: a student trained from the cache takes exactly
the steps it would take with its teacher run online on the same views.
"""

import json
import os
import re
import signal
import warnings
from dataclasses import fields
from pathlib import Path

import h5py
import pytest
import torch
from conftest import write_lenet_teacher

import kdcli.group as group_module
import kdcli.sweep as sweep_module
from kdcli import Interrupted, KdcliError
from kdcli.cache import open_cache
from kdcli.config import ConfigError, StudentConfig, TeacherConfig
from kdcli.data import load_cifar10
from kdcli.dump import DumpConfig, dump_logits
from kdcli.evaluate import load_model
from kdcli.losses import distillation_loss
from kdcli.models import create_model
from kdcli.report import aggregate, collect
from kdcli.resume import MAY_DIFFER
from kdcli.runs import DrawnAugmentation, Run, claim_folder
from kdcli.sweep import SweepConfig, student_configs, students_at_once, sweep
from kdcli.train import student_runs, train_runs, train_student, train_teacher

CACHE_EPOCHS = 2


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory, data_dir):
    """A float32 cache of a LeNet-5 teacher whose logits are a trained net's size (never modify it)."""
    root = tmp_path_factory.mktemp("student")
    torch.manual_seed(0)
    model = create_model("lenet5")
    with torch.no_grad():
        model.fc3.weight.mul_(50)
    torch.save({"model": model.state_dict(), "model_name": "lenet5", "num_classes": 10, "epoch": 1}, root / "checkpoint.pt")
    out = root / "logits.h5"
    dump_logits(
        DumpConfig(teacher=str(root), epochs=CACHE_EPOCHS, dtype="float32", out=str(out), data_dir=str(data_dir), device="cpu", quiet=True),
        progress=False,
    )
    return out


def student(tmp_path, data_dir, cache_path, name="s", **options):
    defaults = dict(epochs=1, batch_size=32, temperature=4.0, distillation_weight=0.5, device="cpu", quiet=True, scheduler="none")
    return StudentConfig(data_dir=str(data_dir), cache=str(cache_path), out=str(tmp_path / name), **{**defaults, **options})


def weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


class ViewsOfTheCache:
    """The cache's augmentation parameters without its logits, of its first `num_images` images: the teacher
    has to label each batch itself."""

    def __init__(self, cache, num_images=None):
        self.cache, self.num_images = cache, num_images

    def epoch(self, e):
        return self.cache.epoch(e % self.cache.epochs_complete)[0][: self.num_images], None


def train_online(config, cache_path, teacher_dir, targets=None):
    data = load_cifar10(config.data_dir, "cpu", val_size=config.val_size)
    teacher, _ = load_model(teacher_dir, torch.device("cpu"))
    with open_cache(cache_path) as cache:
        run = Run(config, targets or ViewsOfTheCache(cache, len(data.train_labels)))
        train_runs([run], data, torch.device("cpu"), teacher=teacher, progress=False)
    return weights(run.dir)


def test_student_of_the_cache_equals_student_of_the_teacher_online(tmp_path, data_dir, cache_path):
    cached = student(tmp_path, data_dir, cache_path, "cached", epochs=3)  # 3 > 2 cached epochs: replays epoch 0
    with pytest.warns(UserWarning, match="reuses cached epoch"):
        train_student(cached, progress=False)
    online = train_online(student(tmp_path, data_dir, cache_path, "online", epochs=3), cache_path, cache_path.parent)
    for key, value in weights(tmp_path / "cached").items():
        torch.testing.assert_close(value, online[key], atol=1e-5, rtol=1e-5)


def test_a_student_holding_out_images_reads_the_cache_rows_of_the_others(tmp_path, data_dir, cache_path):
    # The cache labels all 200 images; a student holding out the last 50 trains on the first 150, each with its own row.
    with pytest.warns(UserWarning, match="the teacher of .* trained on 50 of the 50 images --val-size holds out"):  # a bare checkpoint: all 200
        summary = train_student(student(tmp_path, data_dir, cache_path, "cached", val_size=50, epochs=2), progress=False)
    online = train_online(student(tmp_path, data_dir, cache_path, "online", val_size=50, epochs=2), cache_path, cache_path.parent)
    for key, value in weights(tmp_path / "cached").items():
        torch.testing.assert_close(value, online[key], atol=1e-5, rtol=1e-5)
    assert 0 <= summary["val_accuracy"] <= 100


def test_a_sweep_holding_out_images_reports_their_accuracy(tmp_path, data_dir, cache_path):
    config = SweepConfig(temperatures=(4.0,), seeds=(1, 2), epochs=1, batch_size=64, lr_milestones=(), val_size=50, device="cpu", quiet=True,
                         data_dir=str(data_dir), cache=str(cache_path), out=str(tmp_path / "sweep"))  # fmt: skip
    with pytest.warns(UserWarning, match="trained on 50 of the 50 images"):
        table = sweep(config, progress=False)["table"]
    assert "| model | T | w | n | val ± std | test ± std |" in table
    # the warning stays with the runs: a report marks the rows whose val accuracy the teacher's knowledge of those images favours
    kd_row = next(line for line in table.splitlines() if line.startswith("| lenet5 | 4 |"))
    assert kd_row.split("|")[5].strip().endswith("*") and "*: distilled from a teacher that trained on the held-out images" in table
    baseline_row = next(line for line in table.splitlines() if line.startswith("| lenet5 | baseline |"))
    assert not baseline_row.split("|")[5].strip().endswith("*")
    summaries = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").rglob("summary.json"))]
    assert len(summaries) == 4 and all(0 <= s["val_accuracy"] <= 100 for s in summaries)


def test_a_student_holding_out_images_its_teacher_never_saw_is_not_warned(tmp_path, data_dir, recwarn):
    teacher = TeacherConfig(model="lenet5", epochs=1, batch_size=64, lr_milestones=(), val_size=50, device="cpu", quiet=True,
                            data_dir=str(data_dir), out=str(tmp_path / "teacher"))  # fmt: skip
    train_teacher(teacher, progress=False)
    dump = DumpConfig(teacher=teacher.out, epochs=1, out=str(tmp_path / "c.h5"), data_dir=str(data_dir), device="cpu", quiet=True)
    dump_logits(dump, progress=False)
    with open_cache(tmp_path / "c.h5") as cache:
        assert cache.attrs["teacher_train_images"] == 150
    for val_size in (50, 80):
        train_student(student(tmp_path, data_dir, tmp_path / "c.h5", f"val{val_size}", val_size=val_size), progress=False)
    assert [str(w.message)[:80] for w in recwarn if "--val-size holds out" in str(w.message)] == [
        f"the teacher of {tmp_path / 'c.h5'} trained on 30 of the 80 images --val-size holds out"[:80]
    ]


def test_the_equivalence_test_can_fail_on_other_views(tmp_path, data_dir, cache_path):
    train_student(student(tmp_path, data_dir, cache_path, "cached"), progress=False)
    other = DrawnAugmentation(seed=12345, num_images=200)  # the teacher online, but on other views
    online = train_online(student(tmp_path, data_dir, cache_path, "other"), cache_path, cache_path.parent, other)
    assert not torch.allclose(weights(tmp_path / "cached")["conv1.weight"], online["conv1.weight"], atol=1e-4)


def test_config_and_summary_record_the_distillation(tmp_path, data_dir, cache_path):
    summary = train_student(student(tmp_path, data_dir, cache_path, temperature=30.0), progress=False)
    assert (summary["temperature"], summary["distillation_weight"], summary["hard_weight"]) == (30.0, 0.5, 1.0)
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["temperature"] == 30.0 and config["cache"] == str(cache_path)
    assert config["cache_epochs"] == CACHE_EPOCHS and len(config["cache_teacher_sha256"]) == 64


@pytest.fixture
def recorded_targets(monkeypatch):
    """The soft targets and hard weight of every training step's loss, as the loop passes them."""
    calls = []

    def recorded(student, labels, targets=None, hard_weight=1.0):
        calls.append((targets, hard_weight))
        return distillation_loss(student, labels, targets, hard_weight)

    monkeypatch.setattr(group_module, "distillation_loss", recorded)
    return calls


def settings_of(targets, hard_weight):
    """Per student of a step: (T, distillation_weight * T^2, hard weight) read back from what its loss got."""
    T = targets.temperatures[..., 0, 1, 0].reshape(-1)
    soft, hard = (targets.weights[..., r, :].sum(-1).reshape(len(T), -1) for r in (1, 0))  # softmax rows sum to 1
    for s in (soft, hard):
        torch.testing.assert_close(s, s[:, :1].expand_as(s))  # one value per student, on every image
    hard_weight = torch.as_tensor(hard_weight).expand(len(T))
    torch.testing.assert_close(hard[:, 0], hard_weight.float())
    return sorted((round(t, 4), round(w, 4), round(h, 4)) for t, w, h in zip(T.tolist(), soft[:, 0].tolist(), hard[:, 0].tolist()))


def test_a_students_temperature_and_weights_reach_its_loss(tmp_path, data_dir, cache_path, recorded_targets):
    train_student(student(tmp_path, data_dir, cache_path, temperature=7.0, distillation_weight=0.3, hard_weight=0.6), progress=False)
    assert len(recorded_targets) == 7  # ceil(200 / 32) steps
    assert {tuple(settings_of(*call)) for call in recorded_targets} == {((7.0, 0.3 * 49, 0.6),)}


def test_a_baselines_hard_weight_reaches_its_loss(tmp_path, data_dir, cache_path, recorded_targets):
    """A student without the teacher learns from the labels alone, scaled by --hard-weight, and reads no soft targets."""
    train_student(student(tmp_path, data_dir, cache_path, distillation_weight=0.0, hard_weight=0.6), progress=False)
    assert len(recorded_targets) == 7 and all(targets is None for targets, _ in recorded_targets)
    for _, hard in recorded_targets:
        torch.testing.assert_close(hard, torch.tensor([0.6]))  # one student: [S] = [1]


def test_stacked_students_each_get_their_own_temperature_and_weights(tmp_path, data_dir, cache_path, recorded_targets):
    config = SweepConfig(temperatures=(2.0, 7.0), seeds=(1,), epochs=1, batch_size=64, lr_milestones=(), distillation_weight=0.3, hard_weight=0.6,
                         parallel=3, device="cpu", quiet=True, data_dir=str(data_dir), cache=str(cache_path), out=str(tmp_path / "sweep"))  # fmt: skip
    sweep(config, progress=False)
    assert len(recorded_targets) == 4  # one group of three students, ceil(200 / 64) steps
    # The baseline of the group gets soft targets of weight 0 and the sweep's hard weight.
    assert {tuple(settings_of(*call)) for call in recorded_targets} == {((1.0, 0.0, 0.6), (2.0, 0.3 * 4, 0.6), (7.0, 0.3 * 49, 0.6))}


def test_a_sweep_in_fp16_on_a_gpu_trains_its_students_one_at_a_time():
    """One loss scale per stack: one student's overflow would skip its stack-mates' steps."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    config = SweepConfig(parallel=0, device="cpu")
    assert (students_at_once(config, cuda), students_at_once(config, cpu)) == (0, 1)  # bf16: all at once on a GPU
    for parallel in (4, 0):  # 0, the default, all at once, too
        assert students_at_once(SweepConfig(parallel=parallel, amp="fp16"), cuda) == 1
        with pytest.warns(UserWarning, match="--amp fp16 trains students one at a time"):  # said as the sweep starts training
            sweep_module.warn_unstacked(SweepConfig(parallel=parallel, amp="fp16"), cuda)
    assert students_at_once(SweepConfig(parallel=1, amp="fp16"), cuda) == 1


def test_kd_students_stacked_with_a_baseline_train_as_each_would_alone(tmp_path, data_dir, cache_path):
    """A sweep's group mixes temperatures and a baseline in one vmapped step: each student's loss, gradient and
    weights are its own, equal to a sweep that trains it alone up to the rounding of vmapped convolutions."""
    shared = dict(temperatures=(2.0, 30.0), seeds=(1,), epochs=2, batch_size=64, lr_milestones=(), device="cpu", quiet=True,
                  data_dir=str(data_dir), cache=str(cache_path))  # fmt: skip
    sweep(SweepConfig(parallel=3, out=str(tmp_path / "stacked"), **shared), progress=False)
    sweep(SweepConfig(parallel=1, out=str(tmp_path / "alone"), **shared), progress=False)
    for student in ("T2/seed1", "T30/seed1", "baseline/seed1"):
        stacked, alone = tmp_path / "stacked" / student, tmp_path / "alone" / student
        assert json.loads((stacked / "summary.json").read_text())["trained_together"] == 3
        for name, w in weights(stacked).items():
            torch.testing.assert_close(w, weights(alone)[name], atol=1e-5, rtol=0, msg=f"{student} {name}")
        losses = [json.loads(line)["train_loss"] for line in (stacked / "metrics.jsonl").read_text().splitlines()]
        assert losses == pytest.approx([json.loads(line)["train_loss"] for line in (alone / "metrics.jsonl").read_text().splitlines()], rel=1e-4)


def test_fp16_stacks_students_where_it_does_not_run():
    """fp16's loss scale is a CUDA matter: on a CPU (autocast off) --parallel is honoured, without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert students_at_once(SweepConfig(parallel=4, amp="fp16"), torch.device("cpu")) == 4
        sweep_module.warn_unstacked(SweepConfig(parallel=4, amp="fp16"), torch.device("cpu"))


def test_all_unfinished_students_at_one_resume_point_train_as_one_group_when_parallel_is_0(tmp_path):
    """--parallel 0 on a GPU: every student at once, not one at a time."""
    configs = sweep_module.student_configs(SweepConfig(temperatures=(4.0, 30.0), seeds=(1, 2), out=str(tmp_path / "sweep")))
    assert [len(g) for g in sweep_module.groups(configs, 0)] == [6]
    assert [len(g) for g in sweep_module.groups(configs, 4)] == [4, 2]


def test_a_sweep_peeks_at_no_checkpoint_of_a_student_it_finished_itself(tmp_path, data_dir, cache_path, monkeypatch):
    """Its groups are made again after each one trains: of every student, each peeked at again, a sweep of S students
    trained one at a time peeked S * (S - 1) / 2 checkpoints (100 students: 8 s on a CPU)."""
    peeked, peek = [], sweep_module.peek_checkpoint
    monkeypatch.setattr(sweep_module, "peek_checkpoint", lambda path: (peeked.append(path), peek(path))[1])
    sweep(SweepConfig(temperatures=(4.0, 30.0), seeds=(1, 2), parallel=1, epochs=1, batch_size=64, lr_milestones=(), device="cpu", quiet=True,
                      data_dir=str(data_dir), cache=str(cache_path), out=str(tmp_path / "sweep")), progress=False)  # fmt: skip
    assert peeked == []
    assert len(collect([tmp_path / "sweep"])) == 6


@pytest.mark.parametrize("options, said", [(dict(temperatures=30), "--temperatures: must be a tuple or list of numbers, got 30"),
                                           (dict(seeds=[1.5]), r"--seeds: must be a tuple or list of integers, got \[1.5\]")])  # fmt: skip
def test_a_sweep_of_values_of_the_wrong_type_is_refused_as_it_is_built(options, said):
    """A library caller's temperatures=30 would fail as "'int' object is not iterable"; seed 1.5 would train in seed1.5/."""
    with pytest.raises(ConfigError, match=said):
        SweepConfig(**options)


def test_a_sweep_leaves_the_callers_random_numbers_alone(tmp_path, data_dir, cache_path):
    torch.manual_seed(0)
    sweep(SweepConfig(temperatures=(4.0,), seeds=(1,), epochs=1, batch_size=64, lr_milestones=(), device="cpu", quiet=True,
                      data_dir=str(data_dir), cache=str(cache_path), out=str(tmp_path / "sweep")), progress=False)  # fmt: skip
    drawn = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(drawn, torch.rand(3))


def test_a_refused_sweep_leaves_no_folders_for_students_it_never_started(tmp_path, data_dir, cache_path):
    shared = dict(temperatures=(4.0,), batch_size=64, lr_milestones=(), device="cpu", quiet=True, data_dir=str(data_dir),
                  cache=str(cache_path), out=str(tmp_path / "sweep"))  # fmt: skip
    sweep(SweepConfig(seeds=(1,), epochs=1, **shared), progress=False)
    with pytest.raises(KdcliError, match="trained with other options"):  # its seed-1 students trained 1 epoch, not 2
        sweep(SweepConfig(seeds=(1, 2), epochs=2, **shared), progress=False)
    assert sorted(str(p.relative_to(tmp_path / "sweep")) for p in (tmp_path / "sweep").glob("*/seed*")) == ["T4/seed1", "baseline/seed1"]
    assert collect([tmp_path / "sweep"]).unfinished == []


def test_a_sweep_adding_students_of_another_recipe_or_teacher_to_a_folder_is_refused(tmp_path, data_dir, cache_path):
    """An earlier sweep's students with other temperatures stay in the folder: students of another recipe or
    teacher beside them would leave a folder that `kdcli report` refuses, found out only after training them."""
    shared = dict(batch_size=64, lr_milestones=(), device="cpu", quiet=True, data_dir=str(data_dir), out=str(tmp_path / "sweep"))
    sweep(SweepConfig(temperatures=(4.0,), seeds=(1,), epochs=1, cache=str(cache_path), **shared), progress=False)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "sweep").rglob("*"))
    state = torch.load(cache_path.parent / "checkpoint.pt")
    (tmp_path / "teacher").mkdir()
    torch.save({**state, "model": {k: v * 1.01 for k, v in state["model"].items()}}, tmp_path / "teacher" / "checkpoint.pt")
    other_teacher = tmp_path / "other.h5"
    dump_logits(DumpConfig(teacher=str(tmp_path / "teacher"), epochs=CACHE_EPOCHS, dtype="float32", out=str(other_teacher),
                           data_dir=str(data_dir), device="cpu", quiet=True), progress=False)  # fmt: skip
    for options, refusal in [(dict(epochs=2, cache=str(cache_path)), "trained with other epochs"),
                             (dict(epochs=1, lr=0.05, cache=str(cache_path), force=True), "trained with other lr"),
                             (dict(epochs=1, cache=str(other_teacher)), "distilled from 2 different teachers")]:  # fmt: skip
        with pytest.raises(KdcliError, match=f"{refusal} .*: {tmp_path / 'sweep'} holds an earlier sweep's students \\(T4/seed1, baseline/seed1\\), .*pass another --out, or delete them"):
            sweep(SweepConfig(temperatures=(30.0,), seeds=(1,), baseline=False, **options, **shared), progress=False)
        assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "sweep").rglob("*")) == before
    sweep(SweepConfig(temperatures=(30.0,), seeds=(1,), baseline=False, epochs=1, cache=str(cache_path), **shared), progress=False)
    assert [(r["temperature"], r["n"]) for r in aggregate(collect([tmp_path / "sweep"]))] == [(None, 1), (4.0, 1), (30.0, 1)]


def test_a_sweep_refused_beside_an_earlier_one_names_both_students_the_same_way(tmp_path, data_dir, cache_path, monkeypatch):
    """--out given relative: the new student and the earlier one are both named by their whole path, not one each way."""
    monkeypatch.chdir(tmp_path)
    shared = dict(temperatures=(4.0,), seeds=(1,), baseline=False, batch_size=64, lr_milestones=(), device="cpu", quiet=True,
                  data_dir=str(data_dir), cache=str(cache_path), out="sweep")  # fmt: skip
    sweep(SweepConfig(epochs=1, **shared), progress=False)
    with pytest.raises(KdcliError) as refused:
        sweep(SweepConfig(**{**shared, "temperatures": (30.0,)}, epochs=2), progress=False)
    named = re.search(r"\(e\.g\. (.+?)(?: \(to train now\))?: epochs \d; (.+?)(?: \(to train now\))?: epochs \d\)", str(refused.value)).groups()
    assert sorted(named) == [str(tmp_path / "sweep" / "T30" / "seed1"), str(tmp_path / "sweep" / "T4" / "seed1")], str(refused.value)
    assert f"{tmp_path / 'sweep' / 'T30' / 'seed1'} (to train now): epochs 2" in str(refused.value)  # not taken for a student trained already


def test_a_student_regrouped_when_its_sweep_resumes_records_the_group_of_each_epoch(tmp_path, data_dir, cache_path, monkeypatch):
    """A sweep stopped after epoch 1 of students stacked in pairs, resumed one at a time: each student's digits
    depend on its groups (README, Reproducibility), so its folder must say it was in both, not only the last."""
    config = dict(temperatures=(4.0,), seeds=(1,), epochs=2, batch_size=64, lr_milestones=(), device="cpu", quiet=True,
                  data_dir=str(data_dir), cache=str(cache_path), out=str(tmp_path / "sweep"))  # fmt: skip
    end_epoch = group_module.Group.end_epoch

    def ctrl_c_after_epoch_1(group, seconds):
        end_epoch(group, seconds)
        if group.epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as patched:
        patched.setattr(group_module.Group, "end_epoch", ctrl_c_after_epoch_1)
        with pytest.raises(Interrupted, match="interrupted after epoch 1 of 2"):
            sweep(SweepConfig(parallel=2, **config), progress=False)
    sweep(SweepConfig(parallel=1, **config), progress=False)
    for student in ("baseline/seed1", "T4/seed1"):
        lines = (tmp_path / "sweep" / student / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["trained_together"] for line in lines] == [2, 1], student
        assert json.loads((tmp_path / "sweep" / student / "summary.json").read_text())["trained_together"] == 1  # the group it finished in


def test_a_student_whose_summary_was_not_yet_written_records_the_group_it_finished_in(tmp_path, data_dir, cache_path):
    """A sweep killed between its stack's summary.json writes (each atomic): the student left without one has
    finished training, and its rerun only writes the summary, alone. The group it finished in was the stack."""
    config = dict(temperatures=(4.0,), seeds=(1,), epochs=1, batch_size=64, lr_milestones=(), device="cpu", quiet=True,
                  data_dir=str(data_dir), cache=str(cache_path), out=str(tmp_path / "sweep"))  # fmt: skip
    sweep(SweepConfig(parallel=2, **config), progress=False)
    summary = tmp_path / "sweep" / "T4" / "seed1" / "summary.json"
    written = json.loads(summary.read_text())
    summary.unlink()
    sweep(SweepConfig(parallel=2, **config), progress=False)
    rewritten = json.loads(summary.read_text())
    assert rewritten["trained_together"] == 2 and rewritten == written


def test_a_grid_over_the_distillation_weight_is_one_sweep_per_weight_and_one_report(tmp_path, data_dir, cache_path):
    """README's recipe: the later sweeps without baselines, the first one's serving them all."""
    shared = dict(temperatures=(4.0,), seeds=(1, 2), epochs=1, batch_size=64, lr_milestones=(), device="cpu", quiet=True,
                  data_dir=str(data_dir), cache=str(cache_path))  # fmt: skip
    sweep(SweepConfig(**shared, out=str(tmp_path / "sweep")), progress=False)
    sweep(SweepConfig(**shared, distillation_weight=0.5, baseline=False, out=str(tmp_path / "sweep-w0.5")), progress=False)
    assert sorted(p.parent.name for p in (tmp_path / "sweep-w0.5").glob("*/seed1")) == ["T4"]
    rows = aggregate(collect([tmp_path / "sweep", tmp_path / "sweep-w0.5"]))
    assert [(r["temperature"], r["distillation_weight"], r["n"]) for r in rows] == [(None, 0.0, 2), (4.0, 0.1, 2), (4.0, 0.5, 2)]
    assert all(r["delta"] is not None for r in rows[1:])  # both against the baselines of the first sweep


def test_a_sweep_holds_every_students_folder_from_its_start(tmp_path, data_dir, cache_path, monkeypatch):
    """A train-student --force into a student's folder, while the sweep trains another, is refused."""
    checked, train = [], sweep_module.train_runs

    def first_checking(runs, *args, **kwargs):
        if not checked:
            for folder in sorted((tmp_path / "sweep").glob("*/seed*")):
                with pytest.raises(KdcliError, match="in use by another kdcli"), claim_folder(folder):
                    pass
                checked.append(f"{folder.parent.name}/{folder.name}")
        return train(runs, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "train_runs", first_checking)
    lifted = []
    monkeypatch.setattr(sweep_module, "allow_open_files", lifted.append)  # a lock file held open per student
    sweep(SweepConfig(temperatures=(4.0,), seeds=(1, 2), epochs=1, batch_size=64, lr_milestones=(), parallel=1, device="cpu", quiet=True,
                      data_dir=str(data_dir), cache=str(cache_path), out=str(tmp_path / "sweep")), progress=False)  # fmt: skip
    assert checked == ["T4/seed1", "T4/seed2", "baseline/seed1", "baseline/seed2"]
    assert lifted == [4 + 64]


def test_a_sweep_lifts_the_soft_limit_on_open_files_for_its_lock_files():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 256 if hard == resource.RLIM_INFINITY else min(256, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
        sweep_module.allow_open_files(low + 100)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == (low + 100 if hard == resource.RLIM_INFINITY else min(low + 100, hard))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_student_of_a_cache_damaged_to_nan_is_told_so_not_to_lower_its_lr(tmp_path, data_dir, cache_path):
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(cache_path.read_bytes())
    with h5py.File(damaged, "r+") as f:
        f["logits"][1, 5] = float("inf")
    with pytest.raises(KdcliError, match=f"{damaged}: epoch 1 holds logits that are not finite .*dump-logits --force"):
        train_student(student(tmp_path, data_dir, damaged, epochs=2), progress=False)


def test_a_kd_loss_overflowing_names_the_kd_weight_and_temperature_besides_the_lr(tmp_path, data_dir, cache_path):
    """w * T^2 * KL overflows float32: --lr alone would send the user the wrong way."""
    with pytest.raises(KdcliError, match=r"not finite at epoch 1, step 1 .*lower --lr \(now 0.1\), or the KD term's weight w \* T\^2 "
                                         r"\(now 1.6e\+39: --distillation-weight 1e\+38, --temperature 4\)"):  # fmt: skip
        train_student(student(tmp_path, data_dir, cache_path, distillation_weight=1e38), progress=False)


def test_a_stacked_student_that_diverges_is_told_its_own_kd_term_not_its_stack_mates(tmp_path, data_dir, cache_path, monkeypatch):
    config = SweepConfig(temperatures=(1.0, 4.0), seeds=(1,), baseline=False, parallel=2, epochs=1, batch_size=64, lr_milestones=(), device="cpu",
                         quiet=True, data_dir=str(data_dir), cache=str(cache_path), out=str(tmp_path / "sweep"))  # fmt: skip
    loss, calls = distillation_loss, [0]

    def t4_diverges_at_step_2(*args, **kwargs):  # the stack's losses [T1, T4]
        calls[0] += 1
        return loss(*args, **kwargs) * (torch.tensor([1.0, float("nan")]) if calls[0] == 2 else 1)

    monkeypatch.setattr(group_module, "distillation_loss", t4_diverges_at_step_2)
    with pytest.warns(UserWarning, match="the sweep goes on without it"):
        told = sweep(config, progress=False)["divergence"]
    assert "T4/seed1" in told and "(now 1.6: --distillation-weight 0.1, T 4 of --temperatures)" in told, told


def test_more_student_epochs_than_cached_warns(tmp_path, data_dir, cache_path):
    with pytest.warns(UserWarning, match="reuses cached epoch e mod 2"):
        train_student(student(tmp_path, data_dir, cache_path, epochs=3), progress=False)


def test_baseline_needs_no_cache(tmp_path, data_dir):
    config = student(tmp_path, data_dir, tmp_path / "nothing-here.h5", distillation_weight=0.0)
    assert train_student(config, progress=False)["distillation_weight"] == 0.0


def test_missing_cache_names_the_command_that_makes_it(tmp_path, data_dir):
    with pytest.raises(KdcliError, match="run `kdcli dump-logits` first"):
        train_student(student(tmp_path, data_dir, tmp_path / "nothing-here.h5"), progress=False)


def test_cache_of_other_data_is_refused(tmp_path, data_dir, cache_path):
    with pytest.raises(KdcliError, match="run dump-logits on it"):
        train_student(student(tmp_path, data_dir, cache_path, subset=100), progress=False)
    assert not (tmp_path / "s" / "checkpoint.pt").exists()

# ---------------------------------------------------------------- found by mutation testing (2026-11-27)


def dump(tmp_path, teacher, data_dir, **options):
    defaults = dict(epochs=2, dtype="float32", batch_size=64, device="cpu", download=False, quiet=True, out=str(tmp_path / "c.h5"))
    config = DumpConfig(teacher=str(teacher), data_dir=str(data_dir), **{**defaults, **options})
    dump_logits(config, progress=False)
    return config.out


def warned(record, words):
    return [str(w.message) for w in record if words in str(w.message)]


@pytest.fixture(scope="module")
def lenet_teacher(tmp_path_factory):
    return write_lenet_teacher(tmp_path_factory.mktemp("teacher"))


def test_a_student_of_as_many_epochs_as_cached_is_not_warned(tmp_path, lenet_teacher, data_dir):
    path = dump(tmp_path, lenet_teacher, data_dir)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        train_student(student(tmp_path, data_dir, path, epochs=2), progress=False)
    assert warned(record, "reuses cached epoch") == []


def test_a_cache_of_before_val_size_counts_as_labelled_by_a_teacher_of_every_image(tmp_path, lenet_teacher, data_dir):
    path = dump(tmp_path, lenet_teacher, data_dir, epochs=1)
    with h5py.File(path, "r+") as f:
        del f.attrs["teacher_train_images"]  # as kdcli wrote caches before --val-size
    with pytest.warns(UserWarning, match="trained on 50 of the 50 images --val-size holds out"):
        train_student(student(tmp_path, data_dir, path, val_size=50), progress=False)


def test_a_student_holding_out_fewer_images_than_its_teacher_did_is_not_warned(tmp_path, data_dir):
    # the teacher trains on the first 150 of the 200 images; the student on the first 180
    train_teacher(TeacherConfig(model="lenet5", epochs=1, lr_milestones=(), batch_size=64, val_size=50, device="cpu", quiet=True,
                                data_dir=str(data_dir), out=str(tmp_path / "t")), progress=False)  # fmt: skip
    path = dump(tmp_path, tmp_path / "t", data_dir, epochs=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        train_student(student(tmp_path, data_dir, path, val_size=20), progress=False)
    assert warned(record, "--val-size holds out") == []
    assert json.loads((tmp_path / "s" / "config.json").read_text())["teacher_saw_val_images"] == 0


# ---------------------------------------------------------------- found by mutation testing of train, group and checkpoint (2026-11-27, second round)


def test_a_student_closes_its_cache_when_done_and_when_it_crashes(tmp_path, data_dir, cache_path, monkeypatch):
    """An open HDF5 file per student would pile up in a process that trains many (a sweep, a notebook)."""
    import kdcli.cache as cache_module

    opened, open_cache_ = [], cache_module.open_cache
    monkeypatch.setattr(cache_module, "open_cache", lambda *a, **kw: opened.append(open_cache_(*a, **kw)) or opened[-1])
    train_student(student(tmp_path, data_dir, cache_path), progress=False)
    monkeypatch.setattr(group_module, "distillation_loss", lambda *a, **kw: 1 / 0)  # a crash while it trains
    with pytest.raises(ZeroDivisionError):
        train_student(student(tmp_path, data_dir, cache_path, name="other"), progress=False)
    assert len(opened) == 2 and not any(c._file.id.valid for c in opened)


# ---------------------------------------------------------------- found by mutation testing (2026-11-27, night)


def test_a_sweep_without_baselines_may_learn_from_the_teacher_alone():
    """--hard-weight 0 is refused only with --baseline (a baseline would learn from nothing): README's later sweeps of
    a grid are --no-baseline, and one of pure distillation is a valid one."""
    configs = sweep_module.student_configs(SweepConfig(temperatures=(4.0,), seeds=(1,), baseline=False, hard_weight=0.0))
    assert [(c.temperature, c.hard_weight) for c in configs] == [(4.0, 0.0)]


def test_a_sweep_of_more_students_than_the_hard_limit_on_open_files_lifts_the_soft_one_to_it():
    """setrlimit refuses a soft limit above the hard one (ValueError): as far as the hard limit allows, not a traceback."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        sweep_module.allow_open_files(hard + 100)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------- found by mutation testing (2026-11-28: locks, runs, resume, config, train, cli)


def test_a_student_of_a_partial_cache_replays_its_complete_epochs_alone(tmp_path, data_dir, cache_path):
    """Epoch e reads cached epoch e mod the epochs complete, not mod those the cache is to hold: they are not written yet."""
    partial = tmp_path / "partial.h5"
    partial.write_bytes(cache_path.read_bytes())
    with h5py.File(partial, "r+") as f:
        f["epochs_complete"][()] = 1  # as a dump stopped after its first epoch leaves it
    with pytest.warns(UserWarning, match="reuses cached epoch e mod 1"):
        summary = train_student(student(tmp_path, data_dir, partial, epochs=2, allow_partial=True), progress=False)
    assert summary["epochs"] == 2


# ---------------------------------------------------------------- found by mutation testing (2026-11-29: a student's own options, stacked hard weights)

# Another value of each option a student has and a teacher does not, that changes what it learns (the run's: T 4, w 0.5, hard 1).
OTHER_DISTILLATION = {"temperature": 7.0, "distillation_weight": 0.3, "hard_weight": 0.5}


def test_resume_refuses_another_value_of_every_distillation_option(tmp_path, data_dir, cache_path):
    """test_train's check of the recipe, for the options a student adds: resumed (or kept) with another --temperature or
    --hard-weight, a run would be half one loss and half another, or a finished run of T 4 returned for T 7."""
    own = {f.name for f in fields(StudentConfig)} - {f.name for f in fields(TeacherConfig)}
    assert own - MAY_DIFFER == set(OTHER_DISTILLATION)  # a new student option must be classed
    train_student(student(tmp_path, data_dir, cache_path), progress=False)
    before = {f.name: f.read_bytes() for f in (tmp_path / "s").iterdir() if f.is_file()}
    for option, value in OTHER_DISTILLATION.items():
        with pytest.raises(KdcliError, match=f"other options: --{option.replace('_', '-')} {value!r} \\(run has "):
            train_student(student(tmp_path, data_dir, cache_path, resume=True, **{option: value}), progress=False)
    assert {f.name: f.read_bytes() for f in (tmp_path / "s").iterdir() if f.is_file()} == before


def test_students_stacked_by_train_runs_each_get_their_own_hard_weight(tmp_path, data_dir, cache_path, recorded_targets):
    """A sweep gives all its students one --hard-weight; train_runs stacks any students, each with its own loss."""
    configs = [student(tmp_path, data_dir, cache_path, name=f"s{h}", hard_weight=h, temperature=t, seed=1) for h, t in ((1.0, 2.0), (0.4, 7.0))]
    data = load_cifar10(str(data_dir), "cpu")
    with open_cache(cache_path) as cache:
        train_runs(student_runs(configs, data, cache), data, torch.device("cpu"), progress=False)
    assert len(recorded_targets) == 7  # one group of two, ceil(200 / 32) steps
    assert {tuple(settings_of(*call)) for call in recorded_targets} == {((2.0, 0.5 * 4, 1.0), (7.0, 0.5 * 49, 0.4))}


def test_a_sweeps_students_of_a_fractional_temperature_have_a_folder_named_by_it(tmp_path):
    """T 0.5 in T0.5, not T0 (nor T 1.5 in T2): a reader takes the temperature from the path."""
    config = SweepConfig(temperatures=(0.5, 1.5, 30), seeds=(1,), out=str(tmp_path / "sweep"), device="cpu")
    assert [Path(c.out).relative_to(tmp_path / "sweep").as_posix() for c in student_configs(config)] == [
        "baseline/seed1", "T0.5/seed1", "T1.5/seed1", "T30/seed1"]  # fmt: skip
