"""Optimizers against torch.optim (as in test_optim.py) where the common cases cannot tell:
a weight decay of exactly 1 (a rule testing ``weight_decay != 1`` instead of ``!= 0`` skips
it only there), and gradient arrays the caller reuses between steps."""

from __future__ import annotations

import numpy as np
import pytest
from test_optim import DEFAULT_LR, assert_close, random_problem, run, torch_reference

import portgd
from portgd import optim


@pytest.mark.parametrize("name,extra", [
    ("SGD", {}), ("SGD", {"momentum": 0.9}), ("AdaGrad", {}), ("RMSprop", {}),
    ("RMSprop", {"momentum": 0.9}), ("Adam", {}),
], ids=["sgd", "sgd-momentum", "adagrad", "rmsprop", "rmsprop-momentum", "adam"])
def test_weight_decay_of_one_matches_torch(name, extra):
    kwargs = {"lr": DEFAULT_LR[name], "weight_decay": 1.0, **extra}
    p0, grads_seq = random_problem(seed=7, steps=6)
    expected, _, _ = torch_reference(name, kwargs, p0, grads_seq)
    got = run(portgd.get_backend("numpy"), getattr(optim, name)(**kwargs), p0, grads_seq)
    assert_close(got, expected)


@pytest.mark.parametrize("name,extra", [
    ("SGD", {"momentum": 0.9}), ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("AdaGrad", {}), ("RMSprop", {"momentum": 0.5, "centered": True}),
    ("Adam", {"amsgrad": True}), ("AdamW", {}),
], ids=["momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"])
def test_the_state_keeps_no_reference_to_the_callers_gradients(name, extra):
    """As with torch, where ``.grad`` is overwritten in place between steps: the caller may
    reuse its gradient arrays, and the optimizer's state must not change with them."""
    backend = portgd.get_backend("numpy")
    kwargs = {"lr": DEFAULT_LR[name], **extra}
    p0, grads_seq = random_problem(seed=11, steps=5)
    expected, _, _ = torch_reference(name, kwargs, p0, grads_seq)
    opt = getattr(optim, name)(**kwargs)
    params = {k: backend.asarray(v.copy()) for k, v in p0.items()}
    reused = {k: np.zeros_like(v) for k, v in p0.items()}  # one buffer per parameter
    for grads in grads_seq:
        for k in reused:
            reused[k][...] = grads[k]
        params = opt.step(params, dict(reused))
    assert_close({k: backend.to_numpy(v) for k, v in params.items()}, expected)
