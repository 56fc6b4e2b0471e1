"""Learning-rate schedules as a user meets them: each argument checked with a message that
names the schedule and the argument, the edges of CosineDecay, and how schedules compare,
hash and print. (Values against torch.optim.lr_scheduler: test_schedules.py.)"""

from __future__ import annotations

import pytest

from portgd.errors import InputError
from portgd.schedules import CosineDecay, ExponentialDecay, StepDecay, schedule_from_config

GOOD = {
    StepDecay: {"lr": 0.1, "step_size": 2, "gamma": 0.5},
    ExponentialDecay: {"lr": 0.1, "gamma": 0.9},
    CosineDecay: {"lr": 0.1, "total_steps": 10, "warmup_steps": 2, "min_lr": 0.01},
}

BAD = [
    (StepDecay, "lr", -1.0, "StepDecay: lr must be >= 0, got -1.0"),
    (StepDecay, "step_size", 0, "StepDecay: step_size must be >= 1, got 0"),
    (StepDecay, "step_size", 1.5, "StepDecay: step_size must be an integer, got 1.5"),
    (StepDecay, "gamma", 0.0, "StepDecay: gamma must be > 0, got 0.0"),
    (ExponentialDecay, "lr", -0.5, "ExponentialDecay: lr must be >= 0, got -0.5"),
    (ExponentialDecay, "gamma", 0, "ExponentialDecay: gamma must be > 0, got 0.0"),
    (CosineDecay, "lr", -1.0, "CosineDecay: lr must be >= 0, got -1.0"),
    (CosineDecay, "total_steps", 0, "CosineDecay: total_steps must be >= 1, got 0"),
    (CosineDecay, "warmup_steps", -1, "CosineDecay: warmup_steps must be >= 0, got -1"),
    (CosineDecay, "min_lr", -0.1, "CosineDecay: min_lr must be >= 0, got -0.1"),
    (CosineDecay, "min_lr", 0.2, "CosineDecay: min_lr must be <= lr, got min_lr=0.2, lr=0.1"),
]


@pytest.mark.parametrize("cls,name,value,message", BAD,
                         ids=[f"{c.__name__}-{n}-{v}" for c, n, v, _ in BAD])
def test_each_argument_is_checked_by_name(cls, name, value, message):
    with pytest.raises(InputError) as error:
        cls(**{**GOOD[cls], name: value})
    assert str(error.value) == message


@pytest.mark.parametrize("cls", list(GOOD))
@pytest.mark.parametrize("step", [-1, 1.0, True])
def test_steps_are_non_negative_ints(cls, step):
    with pytest.raises(InputError) as error:
        cls(**GOOD[cls])(step)
    assert str(error.value) == (f"{cls.__name__}: step must be a non-negative Python int "
                                f"(optimizer steps taken), got {step!r}")


def test_cosine_decay_edges():
    flat = CosineDecay(0.1, 10, min_lr=0.1)  # min_lr == lr is allowed: a constant rate
    assert [flat(t) for t in (0, 5, 10, 11)] == [0.1, 0.1, 0.1, 0.1]
    whole = CosineDecay(0.1, 10.0, warmup_steps=2.0)  # integral floats are counts
    assert whole.total_steps == 10 and type(whole.total_steps) is int
    assert whole.warmup_steps == 2 and type(whole.warmup_steps) is int
    assert whole(10) == 0.0 and whole(1) == pytest.approx(0.05, rel=1e-15)


def test_schedules_compare_hash_and_print():
    a, b = StepDecay(0.1, 2), StepDecay(0.1, 2, gamma=0.1)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != StepDecay(0.1, 3)
    assert a != "StepDecay" and a != None and a != {"type": "StepDecay"}  # noqa: E711
    assert repr(a) == "StepDecay(lr=0.1, step_size=2, gamma=0.1)"
    assert repr(ExponentialDecay(0.5, 0.9)) == "ExponentialDecay(lr=0.5, gamma=0.9)"
    assert repr(CosineDecay(0.1, 10)) == (
        "CosineDecay(lr=0.1, total_steps=10, warmup_steps=0, min_lr=0.0)")
    for cls, kwargs in GOOD.items():
        schedule = cls(**kwargs)
        assert schedule_from_config(schedule.config()) == schedule
