"""The training step's seam (portgd.step.TrainingStep) with a gradient reducer in process:
a reducer that hands the gradients back unchanged, some at once and some only when waited
for, must give the numbers of the step without a reducer, with and without clipping by
global norm (which holds every gradient until the end). The MPI reducer is tested with real
mpiexec runs in test_distributed.py."""

from __future__ import annotations

import numpy as np
import pytest

from portgd import Sequential, optim
from portgd.layers import Dense, Tanh
from portgd.losses import MSE
from portgd.step import TrainingStep


class EchoReducer:
    """Returns each layer's gradients unchanged; every other layer only on ``wait()``."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, dict]] = []
        self.ready_now: list[tuple[int, dict]] = []
        self.started: list[int] = []

    def start(self, index, grads):
        self.started.append(index)
        (self.ready_now if len(self.started) % 2 else self.pending).append((index, grads))

    def ready(self):
        out, self.ready_now = self.ready_now, []
        return out

    def wait(self):
        out, self.pending = self.pending + self.ready_now, []
        self.ready_now = []
        return out


def _train(reducer_factory, make_optimizer, steps=4):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    model = Sequential([Dense(3, 5), Tanh(), Dense(5, 4), Tanh(), Dense(4, 2)], seed=1,
                       dtype="float64")
    optimizer = make_optimizer()
    xb, yb = model.backend.asarray(x), model.backend.asarray(y)
    reducers = []
    for _ in range(steps):
        reducer = reducer_factory()
        reducers.append(reducer)
        step = TrainingStep(model, optimizer, reducer)
        model.loss_and_backward(model.forward(xb), yb, MSE(), after_layer=step)
        step.finish()
        assert model.grads == {}
    return model.state_dict(), optimizer, reducers


@pytest.mark.parametrize("make_optimizer", [
    lambda: optim.SGD(lr=0.1, momentum=0.9),
    lambda: optim.Adam(lr=0.01),
    lambda: optim.Adam(lr=0.01, clip_norm=0.5),  # the whole-model update in finish()
    lambda: optim.SGD(lr=0.1, clip_norm=0.1, clip_value=0.05),
], ids=["sgd", "adam", "adam-clip-norm", "sgd-clip-both"])
def test_a_reducer_that_changes_nothing_changes_nothing(make_optimizer):
    plain, plain_opt, _ = _train(lambda: None, make_optimizer)
    reduced, reduced_opt, reducers = _train(EchoReducer, make_optimizer)
    for name, value in plain.items():
        np.testing.assert_array_equal(reduced[name], value, err_msg=name)
    assert reduced_opt.step_count == plain_opt.step_count == 4
    assert all(r.started == [4, 2, 0] for r in reducers)  # the Dense layers, last first
