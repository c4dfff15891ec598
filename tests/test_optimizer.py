"""kdcli.optimizer: the learning-rate schedules, as pure functions of the fractional epoch.
(That every training step uses them, and the optimizer asked for: test_train.py.)"""

import typing

import pytest

from kdcli.config import ConfigError, TeacherConfig
from kdcli.optimizer import SCHEDULES, learning_rate


def schedule(name, epochs=10, **options):
    cfg = TeacherConfig(epochs=epochs, lr=0.1, scheduler=name, **options)
    return lambda t: learning_rate(cfg, t)


def test_multistep_schedule():
    lr = schedule("multistep", lr_milestones=(3, 6), lr_gamma=0.1)
    assert [lr(t) for t in (0, 2.99, 3, 5.5, 6, 9.99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_cosine_schedule():
    lr = schedule("cosine")
    assert lr(0) == pytest.approx(0.1) and lr(5) == pytest.approx(0.05) and lr(10) == pytest.approx(0, abs=1e-12)
    values = [lr(t / 10) for t in range(101)]
    assert values == sorted(values, reverse=True)


def test_onecycle_schedule():
    lr = schedule("onecycle")
    assert lr(0) == pytest.approx(0.1 / 25) and lr(3) == pytest.approx(0.1) and lr(10) == pytest.approx(0, abs=1e-12)
    warmup, decay = [lr(t / 10) for t in range(31)], [lr(t / 10) for t in range(30, 101)]
    assert warmup == sorted(warmup) and decay == sorted(decay, reverse=True)
    assert max(lr(t / 100) for t in range(1001)) == pytest.approx(0.1)


def test_constant_schedule():
    lr = schedule("none")
    assert {lr(t / 10) for t in range(101)} == {0.1}


def test_every_scheduler_the_option_offers_has_a_schedule():
    assert set(SCHEDULES) == set(typing.get_args(typing.get_type_hints(TeacherConfig)["scheduler"]))


def test_onecycle_warms_up_linearly_to_the_peak():
    cfg = TeacherConfig(epochs=10, lr=0.1, scheduler="onecycle")
    assert learning_rate(cfg, 1.5) == pytest.approx(0.1 * (0.04 + 0.96 * 0.5))
    assert learning_rate(cfg, 3 - 1e-9) == pytest.approx(0.1)  # no jump where the decay starts


def test_the_float32_bound_on_the_lr_counts_only_the_milestones_before_the_last_epoch():
    """A rising lr (--lr-gamma > 1) is refused where it would pass float32's largest number, counting the milestones it
    reaches: one at --epochs or beyond never applies (its warning says so), so it cannot refuse a run."""
    unreached = TeacherConfig(epochs=5, lr=1e30, lr_gamma=1e10, lr_milestones=(5,))
    assert max(learning_rate(unreached, t / 10) for t in range(50)) == pytest.approx(1e30)
    with pytest.raises(ConfigError, match=r"--lr-gamma: 1e\+10 at 1 milestone takes --lr 1e\+30 past"):
        TeacherConfig(epochs=6, lr=1e30, lr_gamma=1e10, lr_milestones=(5,))


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle", "none"])
def test_the_float32_bound_on_the_lr_counts_no_milestone_under_a_schedule_that_does_not_read_them(scheduler):
    """--lr-gamma and --lr-milestones do nothing there (the warning of milestones is multistep's too): the lr never passes --lr."""
    config = TeacherConfig(epochs=6, lr=1e30, lr_gamma=1e10, lr_milestones=(5,), scheduler=scheduler)
    assert max(learning_rate(config, t / 10) for t in range(60)) == pytest.approx(1e30)
