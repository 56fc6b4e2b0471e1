"""Learning-rate schedules: exact values, torch.optim.lr_scheduler equivalence, configs."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import portgd
from portgd.schedules import (
    CosineDecay,
    ExponentialDecay,
    Schedule,
    StepDecay,
    schedule_from_config,
)


def test_step_decay_values():
    schedule = StepDecay(0.1, step_size=3, gamma=0.5)
    assert [schedule(t) for t in range(7)] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]
    assert StepDecay(1.0, 2)(5) == pytest.approx(0.01, rel=1e-15)


def test_exponential_decay_values():
    schedule = ExponentialDecay(0.2, gamma=0.5)
    assert [schedule(t) for t in range(4)] == [0.2, 0.1, 0.05, 0.025]


def test_cosine_decay_values():
    schedule = CosineDecay(1.0, total_steps=6, warmup_steps=2, min_lr=0.2)
    # warm-up: 0, 1/2; cosine over 4 steps from 1 to 0.2; constant afterwards
    expected = [0.0, 0.5, 1.0, 0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2, 0.6,
                0.2 + 0.8 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.2, 0.2, 0.2]  # fmt: skip
    for t, want in enumerate(expected):
        assert schedule(t) == pytest.approx(want, rel=1e-15, abs=1e-16), t
    no_warmup = CosineDecay(0.1, total_steps=4)
    assert no_warmup(0) == 0.1
    assert no_warmup(2) == pytest.approx(0.05, rel=1e-15)
    assert no_warmup(4) == no_warmup(100) == 0.0


@given(
    lr=st.floats(1e-6, 10.0),
    frac=st.floats(0.0, 1.0),
    total=st.integers(1, 500),
    warmup_frac=st.floats(0.0, 0.99),
    step=st.integers(0, 1000),
)
def test_cosine_decay_stays_in_range_and_decreases_after_warmup(
    lr, frac, total, warmup_frac, step
):
    warmup = min(int(warmup_frac * total), total - 1)
    schedule = CosineDecay(lr, total, warmup, min_lr=lr * frac)
    value = schedule(step)
    assert 0.0 <= value <= lr * (1 + 1e-15)
    if step >= warmup:
        assert value >= schedule.min_lr * (1 - 1e-15)
        assert schedule(step + 1) <= value * (1 + 1e-15)
    else:
        assert schedule(step + 1) >= value


@pytest.mark.parametrize(
    ("ours", "torch_name", "torch_kwargs"),
    [
        (StepDecay(0.1, step_size=4, gamma=0.3), "StepLR", {"step_size": 4, "gamma": 0.3}),
        (ExponentialDecay(0.1, gamma=0.9), "ExponentialLR", {"gamma": 0.9}),
        (CosineDecay(0.1, total_steps=12, min_lr=0.01), "CosineAnnealingLR",
         {"T_max": 12, "eta_min": 0.01}),
    ],
)  # fmt: skip
def test_matches_torch_lr_schedulers(ours, torch_name, torch_kwargs):
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([param], lr=0.1)
    scheduler = getattr(torch.optim.lr_scheduler, torch_name)(opt, **torch_kwargs)
    for t in range(13):  # torch's cosine rises again after T_max; ours holds min_lr
        assert ours(t) == pytest.approx(scheduler.get_last_lr()[0], rel=1e-12), t
        opt.step()
        scheduler.step()


@pytest.mark.parametrize(
    "schedule",
    [StepDecay(0.5, 10, 0.2), ExponentialDecay(0.01, 0.99), CosineDecay(0.1, 100, 5, 0.001)],
)
def test_config_round_trip(schedule):
    config = json.loads(json.dumps(schedule.config()))
    again = schedule_from_config(config)
    assert type(again) is type(schedule) and again == schedule
    assert [again(t) for t in range(0, 120, 7)] == [schedule(t) for t in range(0, 120, 7)]
    assert repr(again) == repr(schedule)
    assert isinstance(again, Schedule)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: StepDecay(-0.1, 3), "StepDecay: lr must be >= 0"),
        (lambda: StepDecay(0.1, 0), "step_size must be >= 1"),
        (lambda: StepDecay(0.1, 2.5), "step_size must be an integer"),
        (lambda: StepDecay(0.1, 2, gamma=0.0), "gamma must be > 0"),
        (lambda: ExponentialDecay(0.1, gamma=-1.0), "gamma must be > 0"),
        (lambda: ExponentialDecay(float("inf"), 0.5), "lr must be finite"),
        (lambda: CosineDecay(0.1, 0), "total_steps must be >= 1"),
        (lambda: CosineDecay(0.1, 10, warmup_steps=10), "warmup_steps must be < total_steps"),
        (lambda: CosineDecay(0.1, 10, min_lr=0.2), "min_lr must be <= lr"),
        (lambda: CosineDecay(0.1, 10, min_lr=-0.1), "min_lr must be >= 0"),
        (lambda: StepDecay(0.1, 2)(-1), "step must be a non-negative Python int"),
        (lambda: CosineDecay(0.1, 2)(1.5), "step must be a non-negative Python int"),
        (lambda: schedule_from_config({"lr": 0.1}), "'type' key"),
        (lambda: schedule_from_config({"type": "Cyclic"}), "unknown schedule type 'Cyclic'"),
        (lambda: schedule_from_config({"type": "StepDecay", "lr": 0.1}), "bad arguments"),
    ],
)
def test_bad_arguments(factory, match):
    with pytest.raises(portgd.InputError, match=match):
        factory()
