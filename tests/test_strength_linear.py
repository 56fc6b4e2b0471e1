"""solve_linear as a property: for any system, step size, iteration count and logging
interval, its iterate, its logged losses and their iterations are those of the loop its
docstring states, ``x <- x - lr (2/N) A^T (A x - Y)`` from ``x = 0``; and what it says when
gradient descent diverges."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import portgd
from portgd.linear import LinearSolution, divergence_message


def _reference(a, y, lr, iters, log_every):
    n = a.shape[0]
    x = np.zeros((a.shape[1], *y.shape[1:]))
    losses, iterations = [], []
    for i in range(iters + 1):
        r = a @ x - y
        if i % log_every == 0 or i == iters:
            losses.append(float(np.sum(r * r) / n))
            iterations.append(i)
        if i < iters:
            x = x - lr * (2 / n) * a.T @ r
    return x, losses, iterations


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), m=st.integers(1, 4), k=st.sampled_from([None, 1, 2]),
       iters=st.integers(1, 40), log_every=st.integers(1, 50), seed=st.integers(0, 2**16),
       lr=st.sampled_from([0.001, 0.01, 0.05]))
def test_solve_linear_is_the_stated_loop(n, m, k, iters, log_every, seed, lr):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, m))
    y = rng.normal(size=(n,) if k is None else (n, k))
    result = portgd.solve_linear(a, y, lr=lr, iters=iters, log_every=log_every)
    x, losses, iterations = _reference(a, y, lr, iters, log_every)
    assert result.iterations == iterations
    # The residual a @ x - y cancels as x converges, so each loss carries an absolute rounding
    # error of about eps * |r| * |y|: bound it by the problem's scale (the first loss), not
    # relative to a loss that may itself have shrunk to 1e-10.
    np.testing.assert_allclose(result.losses, losses, rtol=1e-12, atol=1e-13 * losses[0])
    got = portgd.to_numpy(result.x)
    assert got.shape == x.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, x, rtol=1e-11, atol=1e-14)
    assert result.diverged == (not losses[-1] <= losses[0])


def test_diverged_compares_the_last_loss_with_the_first():
    assert LinearSolution(None, [2.0, 1.0], [0, 1]).diverged is False
    assert LinearSolution(None, [1.0, 1.0], [0, 1]).diverged is False
    assert LinearSolution(None, [1.0, 1.5], [0, 1]).diverged is True
    a = np.array([[1.0, 0.0], [0.0, 10.0]])
    grows = portgd.solve_linear(a, [1.0, 1.0], lr=0.5, iters=3, log_every=1)
    assert grows.diverged and grows.losses[-1] > grows.losses[0]


def test_a_diverging_run_says_where_and_what_to_do():
    a = np.array([[1.0, 0.0], [0.0, 100.0]])
    with pytest.raises(portgd.NonFiniteLossError) as error:
        portgd.solve_linear(a, [1.0, 1.0], lr=1.0, iters=400, log_every=50)
    with np.errstate(over="ignore", invalid="ignore"):
        _, losses, iterations = _reference(a, np.array([1.0, 1.0]), 1.0, 400, 50)
    first_bad = next(i for i, v in zip(iterations, losses, strict=True) if not np.isfinite(v))
    assert str(error.value) == (
        f"gradient descent diverged: the loss is {losses[iterations.index(first_bad)]} at "
        f"iteration {first_bad}; lower lr below about 0.0002 (N / the largest eigenvalue of "
        f"A^T A)")  # 2 / 100**2
    with pytest.raises(portgd.NonFiniteLossError) as error:
        portgd.solve_linear(a, [np.nan, 1.0], iters=5)
    assert str(error.value) == "the loss is not finite at iteration 0: A or Y contains NaN or inf"


def test_the_divergence_message_for_a_loss_that_grew():
    assert divergence_message([1.0, 2.5, 123456789.0], [0, 10, 20]) == (
        "gradient descent diverged: the loss grew from 1 to 1.23457e+08; lower lr (it must "
        "be below N / the largest eigenvalue of A^T A)")


def test_where_it_runs():
    """Host data goes to the active backend; device arrays keep theirs; an explicit backend
    that does not hold the arrays is an error, not a silent transfer."""
    strict = portgd.get_backend("array_api_strict")
    a, y = [[5.0, 1, -1], [2, -1, 1], [1, 3, -2]], [1.0, 4, 0]
    with portgd.use_backend("array_api_strict"):
        assert portgd.backend_of(portgd.solve_linear(a, y, iters=3).x) == strict
    assert portgd.backend_of(portgd.solve_linear(strict.asarray(np.array(a)), y, iters=3).x) \
        == strict
    with pytest.raises(portgd.BackendMismatchError):
        portgd.solve_linear(strict.asarray(np.array(a)), y, backend="numpy", iters=3)
    device1 = portgd.get_backend("array_api_strict", "device1")
    with pytest.raises(portgd.DeviceNotFoundError):
        portgd.solve_linear(device1.asarray(np.array(a)), y, device="device1", iters=3)


@pytest.mark.parametrize("lr", [0, -0.1, float("inf"), float("nan"), True, "0.1"])
def test_step_sizes_that_are_refused(lr):
    with pytest.raises(portgd.InputError, match="lr must be a positive finite number"):
        portgd.solve_linear([[1.0]], [1.0], lr=lr)


def test_log_every_and_empty_systems():
    for name in ("iters", "log_every"):
        with pytest.raises(portgd.InputError) as error:
            portgd.solve_linear([[1.0]], [1.0], **{name: 0})
        assert str(error.value) == f"{name} must be a positive int, got 0"
    with pytest.raises(portgd.ShapeError, match="at least one row and one column"):
        portgd.solve_linear(np.zeros((2, 0)), [1.0, 2.0])
    with pytest.raises(portgd.ShapeError, match="Y must be shaped"):
        portgd.solve_linear(np.ones((2, 2)), np.ones((2, 2, 2)))
    one = portgd.solve_linear([[2.0]], [4.0], lr=0.1, iters=1, log_every=5)
    assert one.iterations == [0, 1]
    assert one.losses == pytest.approx([16.0, (2 * 1.6 - 4) ** 2], rel=1e-15)


# -- lr_limit: the power iteration it states --------------------------------------------------
def _power_limit(a, rounds=200):
    v = np.ones(a.shape[1], dtype=a.dtype)
    norm = None
    for _ in range(rounds):
        w = a.T @ (a @ v)
        norm = np.sqrt(np.sum(w * w))
        v = w / norm
    return a.shape[0] / float(norm)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lr_limit_is_n_over_200_power_iterations_in_the_systems_dtype(dtype):
    from portgd.linear import lr_limit

    a = np.random.default_rng(3).normal(size=(7, 3)).astype(dtype)  # N != M
    backend = portgd.get_backend("numpy")
    assert lr_limit(backend, a) == _power_limit(a)  # bit for bit: the same operations
    # top eigenvalues 1 and 0.999 of A^T A: the estimate still moves at round 200
    slow = np.vstack([np.diag(np.sqrt([1.0, 0.999, 0.5])), np.zeros((4, 3))]).astype(dtype)
    assert lr_limit(backend, slow) == _power_limit(slow) != _power_limit(slow, rounds=201)
    np.testing.assert_allclose(lr_limit(backend, a),
                               7 / np.linalg.eigvalsh(a.T.astype(float) @ a).max(), rtol=1e-5)


def test_lr_limit_of_a_small_and_of_a_zero_matrix():
    from portgd.linear import lr_limit

    backend = portgd.get_backend("numpy")
    small = np.diag([0.5, 0.25])  # lambda_max(A^T A) = 0.25: below one, still finite
    assert lr_limit(backend, small) == pytest.approx(2 / 0.25, rel=1e-12)
    with np.errstate(invalid="ignore"):  # 0 / 0 in the iteration: lambda_max is 0
        assert lr_limit(backend, np.zeros((3, 2))) == float("inf")


# -- the steps between logging points go through the backend's "linear_steps" ---------------------
def test_solve_linear_runs_the_backends_linear_steps_between_logging_points(monkeypatch):
    from portgd.linear import linear_steps

    backend = portgd.get_backend("numpy")
    counts = []

    def counted(A, At, Y, x, step, count):
        counts.append(count)
        return linear_steps(A, At, Y, x, step, count)

    monkeypatch.setitem(backend.fast, "linear_steps", counted)
    rng = np.random.default_rng(0)
    a, y = rng.normal(size=(5, 3)), rng.normal(size=5)
    result = portgd.solve_linear(a, y, lr=0.01, iters=25, log_every=10, backend="numpy")
    assert result.iterations == [0, 10, 20, 25]
    assert counts == [9, 9, 4]  # a logged step each, then the plain steps up to the next
    _, losses, _ = _reference(a, y, 0.01, 25, 10)
    np.testing.assert_allclose(result.losses, losses, rtol=1e-12)


def test_a_lazy_backend_materialises_between_logging_points_without_logging(monkeypatch):
    backend = portgd.get_backend("numpy")
    seen = []

    def materialize(tree):
        seen.append(len(tree[1]))  # the losses recorded so far
        return tree

    monkeypatch.setattr(backend, "materialize_every", 7)
    monkeypatch.setattr(backend, "materialize", materialize)
    rng = np.random.default_rng(1)
    a, y = rng.normal(size=(4, 2)), rng.normal(size=4)
    result = portgd.solve_linear(a, y, lr=0.02, iters=30, log_every=10, backend="numpy")
    assert result.iterations == [0, 10, 20, 30]
    assert seen == [1, 2, 3, 3]  # after steps 7, 14, 21 and 28
    x, losses, _ = _reference(a, y, 0.02, 30, 10)
    np.testing.assert_allclose(result.losses, losses, rtol=1e-12)
    np.testing.assert_allclose(portgd.to_numpy(result.x), x, rtol=1e-11)


def test_lr_limit_iterates_on_the_systems_device():
    """array-api-strict refuses to mix devices: the start vector must be made on A's."""
    pytest.importorskip("array_api_strict")
    from portgd.linear import lr_limit

    target = portgd.get_backend("array_api_strict", "device1")
    a = np.random.default_rng(4).normal(size=(5, 3))
    assert lr_limit(target, target.asarray(a)) == _power_limit(a)
