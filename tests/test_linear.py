"""solve_linear: the worked 3x3 example on every backend, and its bad input."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import float64_or_skip

import portgd

A = [[5, 1, -1], [2, -1, 1], [1, 3, -2]]
Y = [1, 4, 0]


def test_worked_example_numbers():
    result = portgd.solve_linear(A, Y)
    assert result.losses[0] == 5.666666666666667
    assert result.iterations == list(range(0, 10_001, 1000))
    assert all(b < a for a, b in zip(result.losses, result.losses[1:], strict=False))
    assert result.losses[-1] < 1e-5


def test_matches_a_hand_written_loop():
    a, y = np.array(A, float), np.array(Y, float)
    x = np.zeros(3)
    for _ in range(10_000):
        x = x - 0.01 * (2 / 3) * a.T @ (a @ x - y)
    result = portgd.solve_linear(A, Y)
    np.testing.assert_allclose(portgd.to_numpy(result.x), x, rtol=1e-12)


def test_converges_to_the_exact_solution():
    exact = np.linalg.solve(np.array(A, float), np.array(Y, float))
    result = portgd.solve_linear(A, Y, lr=0.02, iters=60_000, log_every=60_000)
    np.testing.assert_allclose(portgd.to_numpy(result.x), exact, rtol=1e-9)


def test_same_numbers_on_every_backend(backend):
    float64_or_skip(backend)
    reference = portgd.solve_linear(A, Y, iters=2000, log_every=500, backend="numpy")
    result = portgd.solve_linear(A, Y, iters=2000, log_every=500, backend=backend)
    assert backend.owns(result.x)
    assert backend.same_device(backend.device_of(result.x), backend.device)
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(result.x), portgd.to_numpy(reference.x),
                               rtol=1e-12)


def test_backend_follows_the_arrays():
    device1 = portgd.get_backend("array_api_strict", "device1")
    result = portgd.solve_linear(device1.asarray(A), device1.asarray(Y), iters=10)
    assert portgd.backend_of(result.x) == device1


def test_float32_converges_too():
    result = portgd.solve_linear(A, Y, dtype="float32")
    assert portgd.to_numpy(result.x).dtype == np.float32
    assert result.losses[-1] < 1e-5


def test_several_right_hand_sides():
    Y2 = np.stack([Y, [0, 1, 2]], axis=1)
    result = portgd.solve_linear(A, Y2, iters=20_000)
    exact = np.linalg.solve(np.array(A, float), Y2)
    np.testing.assert_allclose(portgd.to_numpy(result.x), exact, atol=1e-3)


def test_bad_input():
    with pytest.raises(portgd.ShapeError, match="Y must be shaped"):
        portgd.solve_linear(A, [1, 2])
    with pytest.raises(portgd.ShapeError, match="A must be 2-d"):
        portgd.solve_linear([1, 2, 3], Y)
    with pytest.raises(portgd.InputError, match="iters"):
        portgd.solve_linear(A, Y, iters=0)
    with pytest.raises(portgd.DTypeNotSupportedError):
        portgd.solve_linear(A, Y, backend="array_api_strict", device="no_float64")
