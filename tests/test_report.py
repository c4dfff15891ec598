"""Tests for kdcli/report.py: the t quantile, Welch's interval, finding and aggregating runs, the written files.

Run folders are faked with summary.json / config.json in tmp_path: nothing is trained.
"""

import csv
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys

import pytest
from conftest import dead_pid

from kdcli import KdcliError
from kdcli import report as report_module
from kdcli.report import RECIPE, aggregate, collect, report, t_cdf, t_quantile, teacher_accuracy, welch_ci, write_report

TEACHER = {"cache_teacher_test_accuracy": 95.21, "cache_teacher_sha256": "ab" * 32}


def make_run(folder, acc, model="lenet5", seed=777, temperature=None, weight=None, config=None, finished=True, val=None):
    """A fake run folder; temperature/weight None writes a teacher-style summary without KD keys; `val` is
    the accuracy on 5,000 held-out training images."""
    folder.mkdir(parents=True)
    summary = {"model": model, "epochs": 300, "seed": seed, "test_accuracy": acc, "train_accuracy": 90.0, "train_seconds": 1.0, "trained_together": 1}
    if val is not None:
        summary["val_accuracy"], config = val, {"val_size": 5000, **(config or {})}
    if weight is not None:
        summary |= {"temperature": temperature, "distillation_weight": weight, "hard_weight": 1.0}
    (folder / "config.json").write_text(json.dumps({"model": model, "seed": seed, **(config or {})}))
    if finished:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def make_sweep(root):
    """The reference table's student runs: 4 baseline seeds (logged at two temperatures), KD at T = 10 (2 seeds) and 30 (1 seed)."""
    for seed, acc, t in [(777, 73.26, 4.0), (10, 75.12, 4.0), (20, 73.91, 30.0), (30, 75.64, 30.0)]:
        make_run(root / f"base-s{seed}", acc, seed=seed, temperature=t, weight=0.0)
    make_run(root / "kd" / "T10-s777", 74.62, temperature=10.0, weight=0.1, config=TEACHER)
    make_run(root / "kd" / "T10-s10", 75.02, seed=10, temperature=10.0, weight=0.1, config=TEACHER)
    make_run(root / "kd" / "T30-s777", 75.81, temperature=30.0, weight=0.1, config=TEACHER)
    return root


# ---------------------------------------------------------------- t quantile


@pytest.mark.parametrize("df, expected", [(1, 12.706), (3, 3.182), (10, 2.228), (30, 2.042), (1e6, 1.960)])
def test_t_quantile_known_values(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_t_quantile_fractional_df_lies_between_neighbours():
    assert t_quantile(0.975, 5) < t_quantile(0.975, 4.5) < t_quantile(0.975, 4)


def test_t_quantile_inverts_the_cdf_and_is_symmetric():
    for df in (1, 2.5, 7, 100):
        for p in (0.6, 0.9, 0.995):
            assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)
            assert t_quantile(1 - p, df) == pytest.approx(-t_quantile(p, df))
    assert t_cdf(0.0, 3) == 0.5


# ---------------------------------------------------------------- Welch interval


def test_welch_ci_matches_hand_computation():
    # a: mean 75, var 1; b: mean 73.5, var 0.5 -> se^2 = 1/3 + 0.5/2 = 7/12
    # df = (7/12)^2 / ((1/3)^2 / 2 + (1/4)^2 / 1) = 2.882..., t_{0.975, 2.882} = 3.25721 (mpmath)
    se = math.sqrt(7 / 12)
    df = (7 / 12) ** 2 / ((1 / 3) ** 2 / 2 + (1 / 4) ** 2 / 1)
    assert df == pytest.approx(2.88235, abs=1e-5)
    low, high = welch_ci([74.0, 75.0, 76.0], [73.0, 74.0])
    assert low == pytest.approx(1.5 - 3.25721 * se, abs=1e-4)
    assert high == pytest.approx(1.5 + 3.25721 * se, abs=1e-4)
    assert (low, high) == pytest.approx((-0.98773, 3.98773), abs=1e-4)


def test_welch_ci_needs_two_runs_each_side():
    assert welch_ci([75.0], [73.0, 74.0]) is None
    assert welch_ci([74.0, 75.0], [73.0]) is None
    assert welch_ci([75.0, 75.0], [74.0, 74.0]) == (1.0, 1.0)  # no spread at all: a point, not a crash


# ---------------------------------------------------------------- collect


def test_collect_finds_nested_runs_and_skips_unfinished(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    (sweep / "config.json").write_text("{}")  # a sweep's own config: a container, not an unfinished run
    make_run(sweep / "kd" / "T50-s777", 0.0, temperature=50.0, weight=0.1, finished=False)
    make_run(sweep / "kd" / "T100-s777", 0.0, temperature=100.0, weight=0.1, finished=False)
    for name in ("T50-s10", "T100-s10"):  # claimed by the sweep (it locks every student's folder first), not started yet
        (sweep / "kd" / name).mkdir()
        (sweep / "kd" / name / ".kdcli.lock").write_text("")
    (sweep / ".kdcli.lock").write_text("")  # the sweep's own lock: a container still
    runs = collect([sweep])
    assert len(runs) == 7
    assert len(runs.unfinished) == 4
    assert {r["summary"]["seed"] for r in runs} == {777, 10, 20, 30}
    assert all(set(r) == {"run_dir", "summary", "config"} for r in runs)


def test_collect_accepts_a_run_folder_and_does_not_count_a_run_twice(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    assert len(collect([sweep / "base-s777"])) == 1
    assert len(collect([sweep, sweep / "kd"])) == 7


def test_collect_follows_links_to_run_folders_and_walks_each_folder_once(tmp_path):
    """A sweep keeps and counts the students a link in its folder names (another sweep's baselines, say): its table
    must hold them too. A link to a folder above, or to one walked already, adds nothing."""
    other = make_sweep(tmp_path / "other")
    sweep = tmp_path / "sweep"
    make_run(sweep / "kd" / "T50-s777", 74.0, temperature=50.0, weight=0.1, config=TEACHER)
    (sweep / "base-s777").symlink_to(other / "base-s777")
    (sweep / "kd" / "up").symlink_to(sweep)  # a loop
    (sweep / "again").symlink_to(sweep / "kd")
    runs = collect([sweep])
    assert sorted(r["summary"]["test_accuracy"] for r in runs) == [73.26, 74.0]


def test_a_report_of_no_folders_says_so(tmp_path):
    """A library caller's report([], out): not "no finished run under : ..." naming nothing."""
    with pytest.raises(KdcliError, match="^no folders given: pass run folders"):
        report([], tmp_path)


def test_report_takes_one_folder_given_alone(tmp_path):
    """A library caller's report("runs/sweep") is that folder, not one path per character."""
    sweep = make_sweep(tmp_path / "sweep")
    assert report(str(sweep), tmp_path) == report([sweep], tmp_path)
    assert len(collect(sweep)) == 7


def test_collect_errors_on_nothing_found(tmp_path):
    make_run(tmp_path / "run", 0.0, finished=False)
    with pytest.raises(KdcliError, match=r"no finished run.*\(1 unfinished\)"):
        collect([tmp_path])
    with pytest.raises(KdcliError, match="missing does not exist"):
        collect([tmp_path / "missing"])
    (tmp_path / "results.md").write_text("")
    with pytest.raises(KdcliError, match="results.md is not a folder"):
        collect([tmp_path / "results.md"])


def test_students_of_caches_of_other_lengths_are_not_pooled(tmp_path):
    make_run(tmp_path / "a", 74.0, temperature=4.0, weight=0.1, config={**TEACHER, "cache_epochs": 3})
    make_run(tmp_path / "b", 75.0, seed=5, temperature=4.0, weight=0.1, config={**TEACHER, "cache_epochs": 1})
    with pytest.raises(KdcliError, match=r"replayed 3 and 1 cached epochs of views \(e.g. .*a and .*b\): report each cache's runs separately"):
        aggregate(collect([tmp_path]))
    for run, epochs in (("a", 1), ("b", 1)):  # 1-epoch students replay cached epoch 0 only, from either cache
        config = json.loads((tmp_path / run / "config.json").read_text())
        (tmp_path / run / "config.json").write_text(json.dumps({**config, "epochs": epochs}))
    assert [r["n"] for r in aggregate(collect([tmp_path]))] == [2]


def test_a_finished_run_without_its_config_is_named(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    (sweep / "kd" / "T10-s10" / "config.json").unlink()
    with pytest.raises(KdcliError, match=r"T10-s10/config.json is missing: kdcli writes it beside summary.json"):
        collect([sweep])


def test_collect_errors_on_unreadable_summary(tmp_path):
    make_run(tmp_path / "run", 75.0)
    (tmp_path / "run" / "summary.json").write_text('{"model": "lenet5", "test_acc')
    with pytest.raises(KdcliError, match="cannot read .*summary.json"):
        collect([tmp_path])
    for summary, error in [
        ('{"model": "lenet5"}', "has no test_accuracy: is it a kdcli run"),
        ('{"test_accuracy": 75.0}', "has no model"),  # a row needs its model
        ('{"model": "lenet5", "test_accuracy": "n/a"}', 'its test_accuracy is "n/a", where kdcli writes a percentage'),
        ('{"model": "lenet5", "test_accuracy": NaN}', "its test_accuracy is NaN, where kdcli writes a percentage"),  # json reads it; statistics.stdev would raise
        ('{"model": "lenet5", "test_accuracy": 1e308}', "its test_accuracy is 1e\\+308, where kdcli writes a percentage"),  # a 300-digit mean, or Welch's overflow
        ('{"model": "lenet5", "test_accuracy": 75.0, "val_accuracy": NaN}', "its val_accuracy is NaN, where kdcli writes a percentage or null"),
        ('{"model": "lenet5", "test_accuracy": 75.0, "distillation_weight": 0.1, "temperature": Infinity}', "its temperature is Infinity"),
        ('{"model": "lenet5", "test_accuracy": 75.0, "distillation_weight": 0.1}', "a distillation weight but no temperature"),
        ('{"model": "lenet5", "test_accuracy": 75.0, "distillation_weight": "abc"}', 'its distillation_weight is "abc", where kdcli writes a weight'),
        ('{"model": ["lenet5"], "test_accuracy": 75.0}', "its model is \\[\"lenet5\"\\], where kdcli writes a model's name"),
        ('{"model": "lenet5", "test_accuracy": 75.0, "seed": null}', "its seed is null, where kdcli writes a seed"),
    ]:
        (tmp_path / "run" / "summary.json").write_text(summary)
        with pytest.raises(KdcliError, match=error):
            collect([tmp_path])


@pytest.mark.parametrize("config, said", [
    ({"cache_teacher_test_accuracy": "16.49"}, 'its cache_teacher_test_accuracy is "16.49", where kdcli writes a percentage'),
    ({"cache_teacher_test_accuracy": -7}, "its cache_teacher_test_accuracy is -7"),
    ({"cache_epochs": "2"}, 'its cache_epochs is "2", where kdcli writes a number of epochs'),
    ({"cache_teacher_sha256": ["a"]}, "its cache_teacher_sha256 is"),
])  # fmt: skip
def test_a_config_json_edited_in_a_field_the_report_reads_is_one_line(tmp_path, config, said):
    """Each was a traceback (a format code, min() of a str and an int, an unhashable list), or a teacher of -7.00%."""
    make_run(tmp_path / "run", 75.0, temperature=4.0, weight=0.1, config=config)
    with pytest.raises(KdcliError, match=f"run/config.json: {said}"):
        collect([tmp_path])


def test_a_diverged_run_whose_config_json_was_edited_is_one_line(tmp_path):
    make_run(tmp_path / "done", 75.0)
    diverged = make_run(tmp_path / "gone", 0.0, finished=False, config={"kdcli_version": "0.1.0"})
    (diverged / "config.json").write_text(json.dumps({"model": ["lenet5"], "seed": 1, "kdcli_version": "0.1.0"}))
    (diverged / "diverged.json").write_text(json.dumps({"error": "loss is not finite", "epoch": 1, "step": 1}))
    with pytest.raises(KdcliError, match="gone/config.json: its model is"):
        report([tmp_path], tmp_path / "out")


def test_a_recipe_refusal_shows_the_examples_values_of_every_field_it_names(tmp_path):
    """Three recipes: the fields that differ among them all are named, and both examples show their values of each,
    not only of those the first two differ in (epochs was named, and shown nowhere)."""
    make_run(tmp_path / "a", 70.0, seed=1, config={"epochs": 1, "scheduler": "multistep"})
    make_run(tmp_path / "b", 71.0, seed=2, config={"epochs": 3, "scheduler": "multistep"})
    make_run(tmp_path / "c", 72.0, seed=3, config={"epochs": 1, "scheduler": "onecycle"})
    folder = re.escape(str(tmp_path))
    with pytest.raises(KdcliError, match=rf"other epochs, scheduler \(e.g. {folder}/a: epochs 1, scheduler multistep; {folder}/[bc]: epochs [13], scheduler \w+\)"):
        aggregate(collect([tmp_path]))


def test_a_boolean_is_not_an_accuracy(tmp_path):
    make_run(tmp_path / "run", 75.0)
    (tmp_path / "run" / "summary.json").write_text('{"model": "lenet5", "test_accuracy": true}')
    with pytest.raises(KdcliError, match="its test_accuracy is true, where kdcli writes a percentage"):
        collect([tmp_path])


def test_teacher_accuracy_from_kd_configs(tmp_path):
    runs = collect([make_sweep(tmp_path / "sweep")])
    assert teacher_accuracy(runs) == 95.21
    assert teacher_accuracy([r for r in runs if r["summary"]["distillation_weight"] == 0]) is None
    make_run(tmp_path / "sweep" / "other", 75.0, temperature=10.0, weight=0.1, config={"cache_teacher_test_accuracy": 93.0, "cache_teacher_sha256": "cd" * 32})
    with pytest.raises(KdcliError, match=r"2 different teachers \(e.g. .*sweep/kd/T10-s10, .*sweep/other\)"):
        teacher_accuracy(collect([tmp_path / "sweep"]))


def test_one_teacher_whose_caches_recorded_accuracies_a_few_hundredths_apart_is_one_teacher(tmp_path):
    """A cache dumped before 2026-11-27 took the accuracy from float16 logits; a new dump of the same teacher does not."""
    make_sweep(tmp_path / "sweep")
    make_run(tmp_path / "sweep" / "redumped", 75.0, temperature=10.0, weight=0.1, config={**TEACHER, "cache_teacher_test_accuracy": 95.23})
    assert teacher_accuracy(collect([tmp_path / "sweep"])) in (95.21, 95.23)


# ---------------------------------------------------------------- aggregate


def test_aggregate_groups_seeds_and_puts_all_baselines_together(tmp_path):
    rows = aggregate(collect([make_sweep(tmp_path / "sweep")]))
    assert [(r["temperature"], r["n"]) for r in rows] == [(None, 4), (10.0, 2), (30.0, 1)]  # baseline first, then by T
    base, t10, t30 = rows
    assert base["distillation_weight"] == 0.0
    assert base["mean"] == pytest.approx(74.4825)  # the reference's 74.48 ± 1.09 (README's "The reference")
    assert base["std"] == pytest.approx(1.0906, abs=1e-4)
    assert (base["min"], base["max"]) == (73.26, 75.64)
    assert base["delta"] is None and base["ci_low"] is None
    assert t10["delta"] == pytest.approx(74.82 - 74.4825)
    assert (t10["ci_low"], t10["ci_high"]) == pytest.approx(welch_ci([74.62, 75.02], [73.26, 75.12, 73.91, 75.64]))
    assert t30["std"] is None  # n = 1: no spread
    assert t30["delta"] == pytest.approx(75.81 - 74.4825)
    assert t30["ci_low"] is None and t30["ci_high"] is None


def test_aggregate_keeps_models_apart_and_treats_a_teacher_as_its_models_baseline(tmp_path):
    make_run(tmp_path / "teacher", 95.21, model="resnet18")
    make_run(tmp_path / "kd", 75.0, temperature=4.0, weight=0.1)
    rows = aggregate(collect([tmp_path]))
    assert [(r["model"], r["temperature"]) for r in rows] == [("lenet5", 4.0), ("resnet18", None)]
    assert rows[0]["delta"] is None  # no lenet5 baseline to compare with
    assert "| lenet5 | 4 | 0.1 | 1 | 75.00 ± n/a | 75.00 | 75.00 | no baseline |" in write_report(rows, tmp_path / "report")


def with_hard_weight(run, hard):
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "hard_weight": hard}))


def test_a_kd_setting_is_compared_with_the_baseline_of_its_hard_weight(tmp_path):
    for seed, acc in ((1, 70.0), (2, 72.0)):
        make_run(tmp_path / f"base{seed}", acc, seed=seed, temperature=1.0, weight=0.0)
        with_hard_weight(make_run(tmp_path / f"base-half{seed}", acc - 10, seed=seed, temperature=1.0, weight=0.0), 0.5)
        with_hard_weight(make_run(tmp_path / f"kd-half{seed}", acc - 5, seed=seed, temperature=4.0, weight=0.9), 0.5)
        with_hard_weight(make_run(tmp_path / f"kd-quarter{seed}", acc, seed=seed, temperature=4.0, weight=0.9), 0.25)
    rows = {(r["temperature"], r["hard_weight"]): r for r in aggregate(collect([tmp_path]))}
    assert rows[4.0, 0.5]["delta"] == pytest.approx(66.0 - 61.0)  # not 66 - 71, against the baseline at hard weight 1
    assert rows[4.0, 0.25]["delta"] is None  # no baseline at that hard weight


def test_aggregate_refuses_runs_of_other_recipes(tmp_path):
    """Two sweeps of the same seeds, 30 and 300 epochs: one table would average two experiments as one."""
    for epochs in (30, 300):
        make_run(tmp_path / f"e{epochs}" / "base", 70.0, weight=0.0, temperature=1.0, config={"epochs": epochs, "lr": 0.1})
    with pytest.raises(KdcliError, match=r"the lenet5 runs were trained with other epochs \(e.g. .*e30/base: epochs 30; .*e300/base: epochs 300\)"):
        aggregate(collect([tmp_path]))
    assert len(aggregate(collect([tmp_path / "e30"]))) == 1


@pytest.mark.parametrize("field", [f for f in RECIPE if f != "train_fingerprint"])  # that one: the next tests
def test_every_recipe_field_splits_a_report(tmp_path, field):
    """Runs that differ in any of them are two experiments, not one setting's seeds."""
    for value in (1, 2):
        make_run(tmp_path / f"{field}{value}" / "base", 70.0, seed=value, weight=0.0, temperature=1.0, config={field: value})
    with pytest.raises(KdcliError, match=f"trained with other {field}"):
        aggregate(collect([tmp_path]))


@pytest.mark.parametrize(("shared", "unused"), [
    ({"scheduler": "cosine", "optimizer": "sgd"}, {"lr_milestones": [[150, 225], []], "lr_gamma": [0.1, 0.5]}),
    ({"scheduler": "none", "optimizer": "sgd"}, {"lr_milestones": [[150, 225], [30]]}),
    ({"scheduler": "multistep", "optimizer": "adam"}, {"momentum": [0.9, 0.0], "nesterov": [True, False]}),
])  # fmt: skip
def test_options_a_run_never_used_do_not_split_a_report(tmp_path, shared, unused):
    """A cosine run given --lr-milestones trained exactly as one without them: the same experiment, one row."""
    for i in range(2):
        config = {**shared, **{k: values[i] for k, values in unused.items()}}
        make_run(tmp_path / f"run{i}", 70.0 + i, seed=i, weight=0.0, temperature=1.0, config=config)
    (row,) = aggregate(collect([tmp_path]))
    assert row["n"] == 2


def test_a_recipe_refusal_names_only_the_fields_that_differ_where_both_runs_read_them(tmp_path):
    """A cosine and a multistep run of the same --lr-milestones differ in their scheduler, not in their milestones."""
    for i, scheduler in enumerate(["multistep", "cosine"]):
        make_run(tmp_path / scheduler, 70.0, seed=i, weight=0.0, temperature=1.0, config={"scheduler": scheduler, "lr_milestones": [150, 225]})
    with pytest.raises(KdcliError, match=r"trained with other scheduler \(e.g."):
        aggregate(collect([tmp_path]))


def test_aggregate_refuses_runs_that_held_out_other_images(tmp_path):
    make_run(tmp_path / "held-out" / "base", 70.0, weight=0.0, temperature=1.0, val=71.0)
    make_run(tmp_path / "all" / "base", 70.0, seed=10, weight=0.0, temperature=1.0)
    with pytest.raises(KdcliError, match="trained with other val_size"):
        aggregate(collect([tmp_path]))


def test_aggregate_refuses_runs_trained_on_other_images(tmp_path):
    """Baselines on the official CIFAR-10 and on a re-encoded copy (the JPEG proxy) are not one experiment."""
    make_run(tmp_path / "official" / "base", 75.0, weight=0.0, temperature=1.0, config={"train_fingerprint": "aa" * 32})
    make_run(tmp_path / "proxy" / "base", 70.0, seed=10, weight=0.0, temperature=1.0, config={"train_fingerprint": "bb" * 32})
    with pytest.raises(KdcliError, match=r"the lenet5 runs were trained with other training images \(e.g. "):
        aggregate(collect([tmp_path]))


def test_runs_on_the_same_images_pool_however_their_subset_was_said(tmp_path):
    """--subset N of an N-image training set is every image, as no --subset is: the images decide, not the flag."""
    same = {"train_fingerprint": "aa" * 32}
    make_run(tmp_path / "all" / "base", 70.0, weight=0.0, temperature=1.0, config={**same, "subset": None})
    make_run(tmp_path / "subset" / "base", 71.0, seed=10, weight=0.0, temperature=1.0, config={**same, "subset": 200})
    assert aggregate(collect([tmp_path]))[0]["n"] == 2


def test_a_model_recorded_by_its_alias_is_one_model_with_it(tmp_path):
    make_run(tmp_path / "alias" / "base", 70.0, model="1", weight=0.0, temperature=1.0)  # as kdcli until 2026-11-27 recorded --model 1
    make_run(tmp_path / "name" / "base", 72.0, seed=10, weight=0.0, temperature=1.0)
    (row,) = aggregate(collect([tmp_path]))
    assert (row["model"], row["n"]) == ("lenet5", 2)


def test_runs_from_before_val_size_count_as_holding_out_nothing(tmp_path):
    make_run(tmp_path / "old" / "base", 70.0, weight=0.0, temperature=1.0, config={"epochs": 300})  # no val_size recorded
    make_run(tmp_path / "new" / "base", 71.0, seed=10, weight=0.0, temperature=1.0, config={"epochs": 300, "val_size": 0})
    assert aggregate(collect([tmp_path]))[0]["n"] == 2


def test_aggregate_refuses_a_seed_twice_in_a_setting(tmp_path):
    make_run(tmp_path / "a", 70.0, seed=1, temperature=4.0, weight=0.1)
    make_run(tmp_path / "copy-of-a", 70.0, seed=1, temperature=4.0, weight=0.1)
    with pytest.raises(KdcliError, match="a and .*copy-of-a are the same setting and seed"):
        aggregate(collect([tmp_path]))


def test_runs_that_record_no_hard_weight_are_baselines_of_hard_weight_1(tmp_path):
    """A teacher's summary (or a student's of before --hard-weight) has no hard_weight: it learnt from the labels at weight 1."""
    for seed, acc in ((1, 70.0), (2, 72.0)):
        make_run(tmp_path / f"teacher{seed}", acc, seed=seed)  # no KD keys
        make_run(tmp_path / f"kd{seed}", acc + 2, seed=seed, temperature=4.0, weight=0.1)
    rows = aggregate(collect([tmp_path]))
    assert [(r["temperature"], r["hard_weight"]) for r in rows] == [(None, 1.0), (4.0, 1.0)]
    assert rows[1]["delta"] == pytest.approx(2.0)
    assert "| lenet5 | baseline | 0 | 2 | 71.00 ± 1.41 |" in write_report(rows, tmp_path / "report")


def test_rows_are_ordered_by_setting_not_by_folder_name(tmp_path):
    make_run(tmp_path / "a-T30", 75.0, temperature=30.0, weight=0.1)
    make_run(tmp_path / "b-T4", 74.0, temperature=4.0, weight=0.1)
    make_run(tmp_path / "c-base", 73.0, temperature=1.0, weight=0.0)
    assert [r["temperature"] for r in aggregate(collect([tmp_path]))] == [None, 4.0, 30.0]


def test_a_setting_whose_runs_did_not_all_record_a_val_accuracy_gets_none(tmp_path):
    """A mean over the runs that have one would pass for the setting's: the row has no val instead."""
    make_run(tmp_path / "a", 70.0, seed=1, temperature=1.0, weight=0.0, val=71.0)
    make_run(tmp_path / "b", 72.0, seed=2, temperature=1.0, weight=0.0, config={"val_size": 5000})  # no val_accuracy recorded
    (row,) = aggregate(collect([tmp_path]))
    assert row["n"] == 2 and row["val_mean"] is None and row["val_std"] is None

# ---------------------------------------------------------------- write_report


def test_write_report_writes_table_csv_and_png(tmp_path):
    pytest.importorskip("matplotlib")  # in the dev extra; the path without it is the next test
    runs = collect([make_sweep(tmp_path / "sweep")])
    text = write_report(aggregate(runs), tmp_path / "report", teacher_accuracy(runs), unfinished=3)
    md = (tmp_path / "report" / "results.md").read_text()
    assert text == md
    assert "| lenet5 | baseline | 0 | 4 | 74.48 ± 1.09 | 73.26 | 75.64 |  |" in md
    assert "| lenet5 | 30 | 0.1 | 1 | 75.81 ± n/a | 75.81 | 75.81 | +1.33 [n/a] |" in md
    assert "Teacher: 95.21%. 3 runs unfinished, left out." in md
    with open(tmp_path / "report" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["temperature"] for r in rows] == ["", "10.0", "30.0"]
    assert float(rows[0]["mean"]) == 74.48 and rows[2]["std"] == ""
    assert float(rows[1]["ci_low"]) < float(rows[1]["delta"]) < float(rows[1]["ci_high"])
    assert {r["teacher_test_accuracy"] for r in rows} == {"95.21"}
    png = tmp_path / "report" / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_folder_named_in_another_encoding_than_utf8_is_one_line_not_a_traceback(tmp_path):
    """Bytes Python hands over as lone surrogates: results.md and runs.csv, which name the runs, could not be written."""
    make_run(tmp_path / "runs" / "a", 69.0, seed=1, temperature=1.0, weight=0.0)
    make_run(tmp_path / "runs" / os.fsdecode(b"caf\xe9"), 71.0, seed=2, temperature=1.0, weight=0.0)
    with pytest.raises(KdcliError, match=re.escape(f"{tmp_path}/runs/caf\\xe9 is not valid UTF-8: kdcli needs UTF-8 names; rename it")):
        report(tmp_path / "runs", tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_a_report_without_runs_that_cannot_remove_an_older_runs_csv_is_one_line(tmp_path):
    """write_report given rows but not their runs (a library caller) removes an older runs.csv, which would list other
    runs beside the new table; where that fails (here a folder of that name) it says so, not with an OSError."""
    runs = collect([make_sweep(tmp_path / "sweep")])
    (tmp_path / "report" / "runs.csv").mkdir(parents=True)
    with pytest.raises(KdcliError, match=f"^cannot write the report into {re.escape(str(tmp_path / 'report'))}: Is a directory; pass --out a folder you can write$"):
        write_report(aggregate(runs), tmp_path / "report")


def test_runs_csv_lists_every_run_of_the_table_by_its_folder_in_the_tables_order(tmp_path):
    """The numbers each results.csv row summarises, one line per run: a baseline's logged temperature is not its setting's."""
    report(make_sweep(tmp_path / "sweep"), tmp_path / "sweep")
    with open(tmp_path / "sweep" / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert list(runs[0]) == ["run", "model", "temperature", "distillation_weight", "hard_weight", "seed", "test_accuracy", "train_accuracy", "epochs", "train_seconds"]
    assert [(r["run"], r["temperature"], r["seed"], r["test_accuracy"]) for r in runs] == [
        ("base-s10", "", "10", "75.12"), ("base-s20", "", "20", "73.91"), ("base-s30", "", "30", "75.64"), ("base-s777", "", "777", "73.26"),
        ("kd/T10-s10", "10.0", "10", "75.02"), ("kd/T10-s777", "10.0", "777", "74.62"), ("kd/T30-s777", "30.0", "777", "75.81"),
    ]  # fmt: skip
    assert {(r["model"], r["distillation_weight"], r["hard_weight"]) for r in runs[4:]} == {("lenet5", "0.1", "1.0")}


def test_runs_csv_has_the_val_column_where_runs_held_out_images_and_no_stale_file_stays(tmp_path):
    make_run(tmp_path / "runs" / "a", 69.0, seed=1, temperature=1.0, weight=0.0, val=70.0)
    make_run(tmp_path / "runs" / "b", 71.0, seed=2, temperature=1.0, weight=0.0, val=72.0)
    report(tmp_path / "runs", tmp_path / "report")
    with open(tmp_path / "report" / "runs.csv", newline="") as f:
        runs = [(r["run"], r["val_accuracy"], r["test_accuracy"]) for r in csv.DictReader(f)]
    assert runs == [(str((tmp_path / "runs" / name).resolve()), val, test) for name, val, test in [("a", "70.0", "69.0"), ("b", "72.0", "71.0")]]  # outside --out: whole
    write_report(aggregate(collect(tmp_path / "runs")), tmp_path / "report")  # rows alone: the runs of the old file may not be these
    assert not (tmp_path / "report" / "runs.csv").exists()


def test_the_plot_legend_is_beside_the_axes_not_over_the_teacher_line(tmp_path):
    """Inside the axes, matplotlib's "best" place for it was the top right: over the teacher's line, the highest."""
    pytest.importorskip("matplotlib")
    runs = collect([make_sweep(tmp_path / "sweep")])
    fig = report_module._figure(aggregate(runs), teacher_accuracy(runs))
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    legend, axes = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 > axes.x1
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"teacher 95.21%", "lenet5 KD w=0.1"}


def test_a_report_of_runs_with_held_out_images_shows_their_accuracy_beside_the_test_set(tmp_path):
    for seed, (val, test) in {1: (70.0, 69.0), 2: (72.0, 71.0)}.items():
        make_run(tmp_path / f"base{seed}", test, seed=seed, temperature=1.0, weight=0.0, val=val)
        make_run(tmp_path / f"kd{seed}", test + 1, seed=seed, temperature=4.0, weight=0.1, val=val + 2)
    text = write_report(aggregate(collect([tmp_path])), tmp_path / "report")
    assert "| model | T | w | n | val ± std | test ± std | min | max | Δ vs baseline [95% CI] |" in text
    assert "| lenet5 | baseline | 0 | 2 | 71.00 ± 1.41 | 70.00 ± 1.41 | 69.00 | 71.00 |  |" in text
    assert "| lenet5 | 4 | 0.1 | 2 | 73.00 ± 1.41 | 71.00 ± 1.41 | 70.00 | 72.00 | +1.00 [" in text
    assert "choose a setting by it" in text and "Best lenet5 by validation: T = 4, w = 0.1 (73.00% val, 71.00% test)." in text
    with open(tmp_path / "report" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(float(r["val_mean"]), float(r["val_std"]), float(r["mean"])) for r in rows] == [(71.0, 1.41, 70.0), (73.0, 1.41, 71.0)]
    assert [r["teacher_test_accuracy"] for r in rows] == ["", ""]  # these runs record no teacher


def test_a_tie_on_validation_accuracy_is_said_as_one(tmp_path):
    for seed in (1, 2):
        make_run(tmp_path / f"base{seed}", 70.0, seed=seed, temperature=1.0, weight=0.0, val=72.0)
        make_run(tmp_path / f"kd{seed}", 71.0, seed=seed, temperature=4.0, weight=0.1, val=72.0)
    text = write_report(aggregate(collect([tmp_path])), tmp_path / "report")
    assert "Tied best lenet5 by validation: baseline (72.00% val, 70.00% test) and T = 4, w = 0.1 (72.00% val, 71.00% test)." in text


def test_a_model_without_held_out_images_shows_no_validation_accuracy_beside_one_with(tmp_path):
    make_run(tmp_path / "lenet", 70.0, seed=1, temperature=4.0, weight=0.1, val=72.0)
    make_run(tmp_path / "resnet", 80.0, model="resnet8", seed=1, temperature=4.0, weight=0.1)
    rows = aggregate(collect([tmp_path / "lenet", tmp_path / "resnet"]))
    text = write_report(rows, tmp_path / "report")
    assert "| lenet5 | 4 | 0.1 | 1 | 72.00 ± n/a | 70.00 ± n/a |" in text and "| resnet8 | 4 | 0.1 | 1 | n/a ± n/a | 80.00 ± n/a |" in text
    assert "Best lenet5 by validation" in text and "Best resnet8" not in text


def test_the_best_by_validation_names_the_hard_weight_of_a_baseline(tmp_path):
    make_run(tmp_path / "base", 60.0, seed=1, temperature=1.0, weight=0.0, val=70.0)
    (tmp_path / "base" / "summary.json").write_text((tmp_path / "base" / "summary.json").read_text().replace('"hard_weight": 1.0', '"hard_weight": 0.5'))
    text = write_report(aggregate(collect([tmp_path])), tmp_path / "report")
    assert "Best lenet5 by validation: baseline (hard 0.5) (70.00% val, 60.00% test)." in text and "*" not in text


def test_the_best_by_validation_is_chosen_by_validation_not_by_test(tmp_path):
    make_run(tmp_path / "base", 74.0, seed=1, temperature=1.0, weight=0.0, val=71.0)
    make_run(tmp_path / "T4", 70.0, seed=1, temperature=4.0, weight=0.1, val=75.0)
    make_run(tmp_path / "T30", 73.0, seed=1, temperature=30.0, weight=0.1, val=72.0)
    text = write_report(aggregate(collect([tmp_path])), tmp_path / "report")
    assert "Best lenet5 by validation: T = 4, w = 0.1 (75.00% val, 70.00% test)." in text


def test_a_report_without_held_out_images_has_no_validation_column(tmp_path):
    text = write_report(aggregate(collect([make_sweep(tmp_path / "sweep")])), tmp_path / "report")
    assert "val ± std" not in text and "val_mean" not in (tmp_path / "report" / "results.csv").read_text()


def test_write_report_into_a_read_only_folder_is_one_clear_error(tmp_path):
    runs = collect([make_sweep(tmp_path / "sweep")])
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "results.md").mkdir()  # unwritable as a file, for root too
    with pytest.raises(KdcliError, match="cannot write .*report/results.md: .*pass --out"):
        write_report(aggregate(runs), tmp_path / "report")


def test_a_report_that_cannot_be_written_whole_leaves_the_earlier_files_whole(tmp_path):
    """A full disk mid-write (here a file size limit: EFBIG) must not leave a torn results.md or .csv to be read as a report."""
    runs = collect([make_sweep(tmp_path / "sweep")])
    write_report(aggregate(runs), tmp_path / "report", runs=runs)
    earlier = {p.name: p.read_bytes() for p in (tmp_path / "report").iterdir()}
    make_run(tmp_path / "sweep" / "kd" / "T30-s3", 75.0, seed=3, temperature=30.0, weight=0.1, config=TEACHER)  # a new report differs
    runs = collect([tmp_path / "sweep"])
    limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not death
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, limits[1]))  # every file of the report is longer
    try:
        with pytest.raises(KdcliError, match="File too large"):
            write_report(aggregate(runs), tmp_path / "report", runs=runs)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert {p.name: p.read_bytes() for p in (tmp_path / "report").iterdir()} == earlier  # no temporary file left either


def test_a_report_deletes_the_temporary_files_a_killed_one_left(tmp_path):
    runs = collect([make_sweep(tmp_path / "sweep")])
    (tmp_path / "report").mkdir()
    for name in ("results.png", "runs.csv"):
        (tmp_path / "report" / f".{name}.tmp-{dead_pid()}").write_bytes(b"half")
    write_report(aggregate(runs), tmp_path / "report", runs=runs)
    assert [p.name for p in (tmp_path / "report").iterdir() if p.name.startswith(".")] == []


def test_a_report_keeps_the_temporary_file_of_another_report_writing_into_its_folder_now(tmp_path):
    runs = collect([make_sweep(tmp_path / "sweep")])
    (tmp_path / "report").mkdir()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other_report:
        writing = tmp_path / "report" / f".results.md.tmp-{other_report.pid}"
        writing.write_bytes(b"half")
        try:
            write_report(aggregate(runs), tmp_path / "report", runs=runs)
        finally:
            other_report.kill()
    assert writing.read_bytes() == b"half"  # its rename would otherwise fail: "cannot write the report"


def test_write_report_without_matplotlib_skips_the_png(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes `import` raise ImportError
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    runs = collect([make_sweep(tmp_path / "sweep")])
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "results.png").write_bytes(b"a plot of other runs")  # a report with matplotlib, earlier
    with pytest.warns(UserWarning, match=r"results.png skipped: matplotlib is not installed \(pip install 'kdcli\[plot\]'"):
        text = write_report(aggregate(runs), tmp_path / "report")
    assert text == (tmp_path / "report" / "results.md").read_text()  # the table alone, as `kdcli report > table.md` writes it
    assert (tmp_path / "report" / "results.csv").exists()
    assert not (tmp_path / "report" / "results.png").exists()  # not the old plot beside the new table


def test_write_report_with_a_matplotlib_that_fails_to_import_says_why(tmp_path, monkeypatch):
    """Installed but broken (one built for numpy 1, under numpy 2) is not "not installed": that would send the user
    to install what they have."""
    broken = tmp_path / "site" / "matplotlib"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('numpy.core.multiarray failed to import')\n")
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    runs = collect([make_sweep(tmp_path / "sweep")])
    with pytest.warns(UserWarning) as warned:
        write_report(aggregate(runs), tmp_path / "report")
    assert [str(w.message) for w in warned] == [
        "results.png skipped: matplotlib is installed but cannot be imported (numpy.core.multiarray failed to import)"
    ]
    assert not (tmp_path / "report" / "results.png").exists()


def test_a_val_accuracy_of_students_whose_teacher_saw_the_held_out_images_is_starred(tmp_path):
    for seed in (1, 2):
        make_run(tmp_path / f"base{seed}", 70.0, seed=seed, temperature=1.0, weight=0.0, val=71.0)
        make_run(tmp_path / f"kd{seed}", 71.0, seed=seed, temperature=4.0, weight=0.1, val=74.0, config={"teacher_saw_val_images": 5000})
    text = write_report(aggregate(collect([tmp_path])), tmp_path / "report")
    assert "| lenet5 | baseline | 0 | 2 | 71.00 ± 0.00 | 70.00 ± 0.00 |" in text  # its own runs trained without a teacher
    assert "| lenet5 | 4 | 0.1 | 2 | 74.00 ± 0.00* | 71.00 ± 0.00 |" in text
    assert "*: distilled from a teacher that trained on the held-out images, so this val accuracy favours KD." in text
    with open(tmp_path / "report" / "results.csv", newline="") as f:  # the star in the csv too, where a paper's table is made from
        assert [(r["val_mean"], r["teacher_saw_val"]) for r in csv.DictReader(f)] == [("71.0", "False"), ("74.0", "True")]


def test_the_best_by_validation_is_chosen_within_each_model(tmp_path):
    make_run(tmp_path / "lenet-base", 60.0, seed=1, temperature=1.0, weight=0.0, val=61.0)
    make_run(tmp_path / "lenet-T4", 62.0, seed=1, temperature=4.0, weight=0.1, val=63.0)
    make_run(tmp_path / "resnet-base", 80.0, model="resnet8", seed=1, temperature=1.0, weight=0.0, val=81.0)
    make_run(tmp_path / "resnet-T4", 79.0, model="resnet8", seed=1, temperature=4.0, weight=0.1, val=78.0)
    text = write_report(aggregate(collect([tmp_path])), tmp_path / "report")
    assert "Best lenet5 by validation: T = 4, w = 0.1 (63.00% val, 62.00% test)." in text
    assert "Best resnet8 by validation: baseline (81.00% val, 80.00% test)." in text


def test_report_notes_the_teacher_and_a_single_unfinished_run(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # no plot: not what this test is about, and the slow part
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    sweep = make_sweep(tmp_path / "sweep")
    make_run(sweep / "kd" / "T50-s777", 0.0, temperature=50.0, weight=0.1, finished=False)
    with pytest.warns(UserWarning, match="results.png skipped"):
        text = report([sweep], tmp_path / "report")
    assert "Teacher: 95.21%. 1 run unfinished, left out." in text
    assert text.startswith((tmp_path / "report" / "results.md").read_text())


def test_a_run_that_diverged_is_named_apart_from_the_unfinished_ones(tmp_path, monkeypatch):
    """A diverged seed is a result of its setting: a table that drops it must say which, where "unfinished" would
    pass for runs still to come. Named from the report's folder where inside it, else whole."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # no plot: not what this test is about
    sweep = make_sweep(tmp_path / "sweep")
    waiting = make_run(sweep / "kd" / "T50-s777", 0.0, temperature=50.0, weight=0.1, finished=False)
    diverged = make_run(sweep / "kd" / "T50-s10", 0.0, seed=10, temperature=50.0, weight=0.1, finished=False)
    (diverged / "diverged.json").write_text(json.dumps({"error": "loss is not finite at epoch 3, step 7 (...)", "epoch": 3, "step": 7}))
    runs = collect([sweep])
    assert (runs.unfinished, runs.diverged) == ([waiting.resolve()], [diverged.resolve()])
    with pytest.warns(UserWarning, match="results.png skipped"):
        assert "Teacher: 95.21%. 1 run diverged, left out: kd/T50-s10. 1 run unfinished, left out." in report([sweep], sweep)
        assert f"1 run diverged, left out: {diverged.resolve()}. 1 run unfinished" in report([sweep], tmp_path / "elsewhere")
    with pytest.raises(KdcliError, match=r"no finished run .*\(1 diverged, 1 unfinished\)"):
        collect([sweep / "kd" / "T50-s10", sweep / "kd" / "T50-s777"])


def test_runs_csv_lists_a_run_that_diverged_with_where_it_did_and_no_accuracy(tmp_path, monkeypatch):
    """A seed that blew up is a line of the analysis too, by its setting and seed (its config.json), not a gap."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    sweep = make_sweep(tmp_path / "sweep")
    options = {"kdcli_version": "0.1.0", "temperature": 50.0, "distillation_weight": 0.1, "hard_weight": 1.0, **TEACHER}  # the recipe of make_sweep's runs
    diverged = make_run(sweep / "kd" / "T50-s10", 0.0, seed=10, config=options, finished=False)
    (diverged / "diverged.json").write_text(json.dumps({"error": "loss is not finite at epoch 3, step 7 (...)", "epoch": 3, "step": 7}))
    make_run(sweep / "kd" / "T50-s20", 0.0, seed=20, config={k: v for k, v in options.items() if k != "kdcli_version"}, finished=False)
    (sweep / "kd" / "T50-s20" / "diverged.json").write_text("{}")  # not a kdcli run's folder: no setting to list it by
    with pytest.warns(UserWarning, match="results.png skipped"):
        report([sweep], sweep)
    with open(sweep / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert list(runs[0])[-2:] == ["diverged_epoch", "diverged_step"]
    assert runs[-1] == {"run": "kd/T50-s10", "model": "lenet5", "temperature": "50.0", "distillation_weight": "0.1", "hard_weight": "1.0", "seed": "10",
                        "test_accuracy": "", "train_accuracy": "", "epochs": "", "train_seconds": "", "diverged_epoch": "3", "diverged_step": "7"}  # fmt: skip
    assert len(runs) == 8 and all(r["diverged_epoch"] == "" for r in runs[:-1])


@pytest.mark.parametrize("other, refusal", [({"lr": 1e4}, r"the lenet5 runs were trained with other lr \(e.g. {sweep}/\S+: lr not recorded; {sweep}/kd/T50-s10: lr 10000.0\): report each recipe's runs separately"),
                                             ({"cache_teacher_sha256": "cd" * 32}, r"distilled from 2 different teachers \(e.g. {sweep}/\S+, {sweep}/kd/T50-s10\): report each teacher's runs separately")], ids=["lr", "teacher"])
def test_a_run_that_diverged_under_another_recipe_or_teacher_is_refused_as_a_finished_one_is(tmp_path, other, refusal):
    """Named under the table, a diverged seed is told as a result of the table's setting; one that diverged at --lr 1e4,
    or from another teacher, is not one: it is refused as a finished run of it is (and as a sweep into its folder is)."""
    sweep = make_sweep(tmp_path / "sweep")
    options = {"kdcli_version": "0.1.0", "temperature": 50.0, "distillation_weight": 0.1, "hard_weight": 1.0, **TEACHER}
    diverged = make_run(sweep / "kd" / "T50-s10", 0.0, seed=10, config={**options, **other}, finished=False)
    (diverged / "diverged.json").write_text(json.dumps({"error": "loss is not finite at epoch 1, step 3 (...)", "epoch": 1, "step": 3}))
    refusal = refusal.format(sweep=re.escape(str(sweep)))  # the folder as it is: a temporary folder's name may hold a space
    with pytest.raises(KdcliError, match=refusal):
        report([sweep], tmp_path / "report")
    assert not (tmp_path / "report").exists()
    (diverged / "summary.json").write_text(json.dumps({"model": "lenet5", "seed": 10, "test_accuracy": 10.0, "temperature": 50.0, "distillation_weight": 0.1}))
    with pytest.raises(KdcliError, match=refusal):  # as it is finished: the same refusal
        report([sweep], tmp_path / "report")


def test_the_csv_rounds_the_teachers_accuracy_as_the_table_does(tmp_path):
    write_report(aggregate(collect([make_sweep(tmp_path / "sweep")])), tmp_path / "report", teacher_accuracy=95.2137)
    assert "Teacher: 95.21%." in (tmp_path / "report" / "results.md").read_text()
    with open(tmp_path / "report" / "results.csv", newline="") as f:
        assert {r["teacher_test_accuracy"] for r in csv.DictReader(f)} == {"95.21"}


# ---------------------------------------------------------------- from mutation testing report.py


def test_a_kd_row_shows_its_difference_and_interval_low_then_high(tmp_path):
    text = write_report(aggregate(collect([make_sweep(tmp_path / "sweep")])), tmp_path / "report")
    # welch_ci([74.62, 75.02], [73.26, 75.12, 73.91, 75.64]) = (-1.3355, +2.0105); delta 74.82 - 74.4825
    assert "| lenet5 | 10 | 0.1 | 2 | 74.82 ± 0.28 | 74.62 | 75.02 | +0.34 [-1.34, +2.01] |" in text


@pytest.mark.parametrize("val", [None, 71.0], ids=["test-only", "with-val"])
def test_every_line_of_the_table_has_as_many_cells_as_its_header(tmp_path, val):
    """A separator line with a column too few or too many makes a markdown viewer drop the table."""
    for seed in (1, 2):
        make_run(tmp_path / f"base{seed}", 70.0 + seed, seed=seed, temperature=1.0, weight=0.0, val=val)
        make_run(tmp_path / f"kd{seed}", 71.0 + seed, seed=seed, temperature=4.0, weight=0.1, val=val)
    text = write_report(aggregate(collect([tmp_path])), tmp_path / "report")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 4 and table[1].startswith("| --- | ---: |")
    assert {line.count("|") for line in table} == {table[0].count("|")}, table


def test_the_csv_columns_are_the_setting_then_the_accuracies_then_the_teacher(tmp_path):
    write_report(aggregate(collect([make_sweep(tmp_path / "sweep")])), tmp_path / "report", teacher_accuracy=95.21)
    header = (tmp_path / "report" / "results.csv").read_text().splitlines()[0]
    assert header == "model,temperature,distillation_weight,hard_weight,n,mean,std,min,max,delta,ci_low,ci_high,teacher_test_accuracy"


def test_a_folder_holding_only_unfinished_runs_is_a_container_not_one_more_unfinished_run(tmp_path):
    """A sweep's folder with a stray config.json (an old --out .) whose students have all only started."""
    make_run(tmp_path / "done", 70.0, weight=0.0, temperature=1.0)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "config.json").write_text("{}")
    make_run(tmp_path / "sweep" / "T4" / "seed1", 0.0, seed=1, temperature=4.0, weight=0.1, finished=False)
    (tmp_path / "sweep" / "T4" / "seed2").mkdir()
    (tmp_path / "sweep" / "T4" / "seed2" / ".kdcli.lock").write_text("")
    runs = collect([tmp_path])
    assert len(runs) == 1
    assert [d.name for d in runs.unfinished] == ["seed1", "seed2"]


def test_a_folder_given_twice_by_a_relative_and_an_absolute_path_is_collected_once(tmp_path, monkeypatch):
    """`kdcli report runs/sweep $PWD/runs/sweep --out r`: one sweep, not each run twice (then refused as a repeated seed)."""
    make_sweep(tmp_path / "sweep")
    monkeypatch.chdir(tmp_path)
    runs = collect(["sweep", tmp_path / "sweep"])
    assert len(runs) == 7
    assert [r["n"] for r in aggregate(runs)] == [4, 2, 1]


def test_a_kd_setting_no_better_than_its_baseline_shows_a_difference_of_zero(tmp_path):
    """A delta of exactly 0 (and, with no spread, an interval of [0, 0]) is a result, not a missing baseline."""
    for seed in (1, 2):
        make_run(tmp_path / f"base{seed}", 70.0, seed=seed, temperature=1.0, weight=0.0)
        make_run(tmp_path / f"kd{seed}", 70.0, seed=seed, temperature=4.0, weight=0.1)
    text = write_report(aggregate(collect([tmp_path])), tmp_path / "report")
    assert "| lenet5 | 4 | 0.1 | 2 | 70.00 ± 0.00 | 70.00 | 70.00 | +0.00 [+0.00, +0.00] |" in text


def test_a_report_written_again_replaces_its_files(tmp_path):
    """A sweep run again writes its report into the same folder: the csv must hold the new rows only, once."""
    runs = collect([make_sweep(tmp_path / "sweep")])
    write_report(aggregate(runs), tmp_path / "a" / "b" / "report")  # folders that do not exist yet are made
    write_report(aggregate(runs), tmp_path / "a" / "b" / "report")
    with open(tmp_path / "a" / "b" / "report" / "results.csv", newline="") as f:
        assert [r["n"] for r in csv.DictReader(f)] == ["4", "2", "1"]


def test_sweeps_of_two_teachers_over_the_same_seeds_are_refused_for_their_teachers(tmp_path):
    """Their students share settings and seeds too: the report must name what makes them two experiments."""
    for sweep, sha in (("sweep-a", "ab"), ("sweep-b", "cd")):
        make_run(tmp_path / sweep / "T4" / "seed1", 74.0, seed=1, temperature=4.0, weight=0.1, config={**TEACHER, "cache_teacher_sha256": sha * 32})
    with pytest.raises(KdcliError, match=r"distilled from 2 different teachers \(e.g. .*sweep-a/T4/seed1, .*sweep-b/T4/seed1\): report each teacher's runs separately"):
        report([tmp_path / "sweep-a", tmp_path / "sweep-b"], tmp_path / "report")


# ---------------------------------------------------------------- found by mutation testing (fourth round: stack, group, losses, augment, report, cache)


def test_the_val_spread_is_that_of_the_val_accuracies_not_the_test_ones(tmp_path):
    """Seeds whose held-out accuracies spread wider than their test ones: each ± is its own column's."""
    for seed, (val, test) in {1: (70.0, 69.0), 2: (74.0, 71.0)}.items():
        make_run(tmp_path / f"base{seed}", test, seed=seed, temperature=1.0, weight=0.0, val=val)
    (row,) = aggregate(collect([tmp_path]))
    assert (row["val_std"], row["std"]) == pytest.approx((2 * math.sqrt(2), math.sqrt(2)))
    assert "| lenet5 | baseline | 0 | 2 | 72.00 ± 2.83 | 70.00 ± 1.41 |" in write_report([row], tmp_path / "report")


def test_t_cdf_and_quantile_agree_with_mpmath_to_many_digits():
    """Reference values from mpmath (betainc at 30 digits): the continued fraction runs to convergence, not to a
    first few digits that the round trip of test_t_quantile_inverts_the_cdf_and_is_symmetric would not notice."""
    for df, x, cdf in [(3, 2.0, 0.930337015720578), (30, 2.0, 0.972687477518508), (1000, 2.0, 0.977114826753374), (2.5, -0.7, 0.271702471594774)]:
        assert t_cdf(x, df) == pytest.approx(cdf, abs=1e-12)
    for df, t in [(1, 12.7062047361747), (2.882, 3.25744564216765), (10, 2.22813885198627), (1000, 1.96233908082641)]:
        assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-8)


def test_students_whose_teacher_saw_none_of_the_held_out_images_are_not_starred(tmp_path):
    """Every KD student records how many of its held-out images its teacher trained on: 0 is the clean case."""
    for seed in (1, 2):
        make_run(tmp_path / f"base{seed}", 70.0, seed=seed, temperature=1.0, weight=0.0, val=71.0)
        make_run(tmp_path / f"kd{seed}", 71.0, seed=seed, temperature=4.0, weight=0.1, val=74.0, config={"teacher_saw_val_images": 0})
    text = write_report(aggregate(collect([tmp_path])), tmp_path / "report")
    assert "| lenet5 | 4 | 0.1 | 2 | 74.00 ± 0.00 | 71.00 ± 0.00 |" in text
    assert "*" not in text


def test_the_csv_writes_a_zero_as_0_and_only_a_missing_number_blank(tmp_path):
    """A spread or difference of exactly 0 is a result; an empty cell means n/a (one run, no baseline)."""
    for seed in (1, 2):
        make_run(tmp_path / f"base{seed}", 70.0, seed=seed, temperature=1.0, weight=0.0)
        make_run(tmp_path / f"kd{seed}", 70.0, seed=seed, temperature=4.0, weight=0.1)
    make_run(tmp_path / "kd30", 72.0, seed=1, temperature=30.0, weight=0.1)
    write_report(aggregate(collect([tmp_path])), tmp_path / "report")
    with open(tmp_path / "report" / "results.csv", newline="") as f:
        base, kd, alone = csv.DictReader(f)
    assert (base["std"], base["delta"]) == ("0.0", "")
    assert (kd["std"], kd["delta"], kd["ci_low"], kd["ci_high"]) == ("0.0", "0.0", "0.0", "0.0")
    assert (alone["std"], alone["delta"], alone["ci_low"]) == ("", "2.0", "")


# ---------------------------------------------------------------- found by mutation testing (2026-11-28: sweep, group, report's diverged runs)


def test_runs_csv_lists_a_diverged_run_by_its_own_hard_weight(tmp_path, monkeypatch):
    """Its setting is read from its config.json whole: a seed that blew up at --hard-weight 0.5 is no run of hard weight 1."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    sweep = make_sweep(tmp_path / "sweep")
    options = {"kdcli_version": "0.1.0", "temperature": 50.0, "distillation_weight": 0.1, "hard_weight": 0.5, **TEACHER}
    diverged = make_run(sweep / "kd" / "T50-s10", 0.0, seed=10, config=options, finished=False)
    (diverged / "diverged.json").write_text(json.dumps({"error": "loss is not finite at epoch 3, step 7 (...)", "epoch": 3, "step": 7}))
    with pytest.warns(UserWarning, match="results.png skipped"):
        report([sweep], sweep)
    with open(sweep / "runs.csv", newline="") as f:
        line = next(r for r in csv.DictReader(f) if r["run"] == "kd/T50-s10")
    assert (line["temperature"], line["distillation_weight"], line["hard_weight"], line["diverged_step"]) == ("50.0", "0.1", "0.5", "7")


def test_runs_csv_lists_a_settings_runs_by_seed_not_by_folder_name(tmp_path):
    """Paired analyses match seeds line by line: "s10" sorts before "s9" as a folder name, not as a seed."""
    for seed, acc in [(9, 70.0), (10, 71.0)]:
        make_run(tmp_path / "runs" / f"base-s{seed}", acc, seed=seed, temperature=1.0, weight=0.0)
    write_report(aggregate(runs := collect(tmp_path / "runs")), tmp_path / "runs", runs=runs)
    with open(tmp_path / "runs" / "runs.csv", newline="") as f:
        assert [(r["run"], r["seed"]) for r in csv.DictReader(f)] == [("base-s9", "9"), ("base-s10", "10")]


# ---------------------------------------------------------------- found by mutation testing (2026-11-29)


def test_a_grid_over_the_distillation_weight_is_ordered_by_temperature_then_weight(tmp_path):
    """Baseline first, then by T as the docstring says, each T's weights together: ordered by weight first, a grid's
    rows of one temperature were scattered through the table."""
    for t in (30.0, 1.0):
        for w in (0.5, 0.1):
            make_run(tmp_path / "runs" / f"T{t:g}-w{w}", 70.0, temperature=t, weight=w, config=TEACHER)
    make_run(tmp_path / "runs" / "base", 69.0, temperature=1.0, weight=0.0)
    rows = aggregate(collect(tmp_path / "runs"))
    assert [(r["temperature"], r["distillation_weight"]) for r in rows] == [(None, 0.0), (1.0, 0.1), (1.0, 0.5), (30.0, 0.1), (30.0, 0.5)]
