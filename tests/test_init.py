"""Initializers: statistics, bit-identical draws on every backend, unit norm, orthogonality."""

from __future__ import annotations

import numpy as np
import pytest

import portgd
from portgd import init
from portgd.layers import Dense

SHAPE = (300, 200)


def _draw(name, shape=SHAPE, seed=0):
    return init.get(name)(np, np.random.default_rng(seed), shape)


@pytest.mark.parametrize("name", sorted(init.INITIALIZERS))
def test_same_seed_gives_bit_identical_weights_everywhere(backend, name):
    reference = portgd.get_backend("numpy")
    a = init.draw(reference, name, (6, 4), reference.rng(11), "float32")
    b = init.draw(backend, name, (6, 4), backend.rng(11), "float32")
    assert backend.owns(b)
    np.testing.assert_array_equal(backend.to_numpy(b), a)


@pytest.mark.parametrize(
    "name,std",
    [
        ("glorot_uniform", np.sqrt(2 / 500)),  # var of U(-a,a) is a^2/3, a^2 = 6/500
        ("glorot_normal", np.sqrt(2 / 500)),
        ("he_uniform", np.sqrt(2 / 300)),
        ("he_normal", np.sqrt(2 / 300)),
        ("lecun_normal", np.sqrt(1 / 300)),
        ("normal", 0.05),
        ("uniform", 0.05 / np.sqrt(3)),
    ],
)
def test_scale(name, std):
    w = _draw(name)
    assert abs(w.mean()) < 0.05 * std
    assert w.std() == pytest.approx(std, rel=0.02)  # 60,000 draws: std error ~0.3%


def test_uniform_bounds():
    w = _draw("glorot_uniform")
    limit = np.sqrt(6 / 500)
    assert w.max() <= limit and w.min() >= -limit and w.max() > 0.99 * limit


def test_zeros_ones():
    assert not _draw("zeros").any()
    assert (_draw("ones") == 1).all()


def test_unit_norm_columns():
    w = _draw("unit_norm", (7, 5))
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, rtol=1e-14)


@pytest.mark.parametrize("shape", [(8, 5), (5, 8), (6, 6)])
def test_orthogonal(shape):
    w = _draw("orthogonal", shape)
    small = min(shape)
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-12)


def test_unknown_initializer():
    with pytest.raises(portgd.InputError, match="glorot_uniform"):
        Dense(3, 2, init="glorot")
