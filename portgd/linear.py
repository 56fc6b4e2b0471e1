"""Linear systems ``A x = Y`` solved by plain gradient descent on the mean squared error."""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

from ._checks import positive_int
from ._registry import backend_of, get_backend
from .errors import InputError, NonFiniteLossError, ShapeError


class LinearSolution(NamedTuple):
    """``x``: the solution on the backend; ``losses[i]``: the loss at ``iterations[i]``."""

    x: Any
    losses: list[float]
    iterations: list[int]

    @property
    def diverged(self) -> bool:
        """Whether the loss ended higher than it started (the step size is too large)."""
        return not self.losses[-1] <= self.losses[0]


def divergence_message(losses: list[float], iterations: list[int],
                       limit: float | None = None) -> str:
    """What went wrong when the loss grew or stopped being finite, and what to do.

    ``limit`` is the step size gradient descent needs to stay below, ``N / lambda_max(A^T A)``
    (see :func:`lr_limit`); without it the hint gives the formula only.
    """
    bad = [i for i, loss in zip(iterations, losses, strict=True) if not math.isfinite(loss)]
    if bad and bad[0] == 0:
        return "the loss is not finite at iteration 0: A or Y contains NaN or inf"
    where = (f"the loss is {losses[iterations.index(bad[0])]} at iteration {bad[0]}" if bad
             else f"the loss grew from {losses[0]:.6g} to {losses[-1]:.6g}")
    if limit is not None and math.isfinite(limit):
        return (f"gradient descent diverged: {where}; lower lr below about {limit:.3g} "
                f"(N / the largest eigenvalue of A^T A)")
    return (f"gradient descent diverged: {where}; lower lr (it must be below "
            f"N / the largest eigenvalue of A^T A)")


def lr_limit(target: Any, A: Any, rounds: int = 200) -> float:
    """``N / lambda_max(A^T A)``: the step sizes below it converge (A shaped (N, M)).

    ``lambda_max`` is estimated by ``rounds`` power iterations ``v <- A^T A v / ||A^T A v||``
    from ``v = 1``; the estimate approaches ``lambda_max`` from below. Only for messages:
    it reads one number back to the host.
    """
    xp = target.xp
    v = xp.ones((A.shape[1],), dtype=A.dtype, device=target.device)
    norm = None
    for _ in range(rounds):
        w = A.T @ (A @ v)
        norm = xp.sqrt(xp.sum(w * w))
        v = w / norm
    largest = float(target.to_numpy(norm))
    return A.shape[0] / largest if largest > 0 else math.inf


def solve_linear(
    A: Any,
    Y: Any,
    lr: float = 0.01,
    iters: int = 10_000,
    log_every: int = 1000,
    backend: Any = None,
    dtype: Any = "float64",
    device: Any = None,
) -> LinearSolution:
    """Minimise ``L(x) = (1/N) sum_n ||A_n x - Y_n||^2`` by gradient descent from ``x = 0``.

    Each step is ``x <- x - lr * (2/N) A^T (A x - Y)``. Shapes: ``A`` (N, M), ``Y`` (N,) or
    (N, K); ``x`` (M,) or (M, K). The loss is recorded (on the device) at iterations
    0, ``log_every``, 2 ``log_every``, ... and after the last step, and read back once.
    On a lazy library the pending work is materialised every
    ``Backend.materialize_every`` iterations.

    ``A`` and ``Y`` may be host data or arrays of any backend; without ``backend=`` the
    backend of ``A`` is used (the active backend for host data). Returns a
    :class:`LinearSolution` ``(x, losses, iterations)``.
    """
    positive_int("iters", iters)
    positive_int("log_every", log_every)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise InputError(f"lr must be a positive finite number, got {lr!r}")
    if backend is None and device is None and not get_backend("numpy").is_host(A):
        target = backend_of(A)
    else:
        target = get_backend(backend, device)
    # the overflow of a diverging run is reported once, as NonFiniteLossError, in portgd's
    # words; the array library's RuntimeWarnings on the way there would only look like a crash
    with target.activate(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _descend(target, A, Y, float(lr), iters, log_every, dtype)


def _descend(target: Any, A: Any, Y: Any, lr: float, iters: int, log_every: int,
             dtype: Any) -> LinearSolution:
    xp = target.xp
    A = target.asarray(A, dtype=dtype)
    Y = target.asarray(Y, dtype=dtype)
    if A.ndim != 2:
        raise ShapeError(f"A must be 2-d, shaped (N, M); got shape {tuple(A.shape)}")
    if Y.ndim not in (1, 2) or Y.shape[0] != A.shape[0]:
        raise ShapeError(
            f"Y must be shaped ({A.shape[0]},) or ({A.shape[0]}, K) to match A {tuple(A.shape)}; "
            f"got {tuple(Y.shape)}"
        )
    n = A.shape[0]
    if n == 0 or A.shape[1] == 0:
        raise ShapeError(f"A must have at least one row and one column; got {tuple(A.shape)}")
    step = 2.0 * lr / n
    At = A.T
    x = xp.zeros((A.shape[1], *Y.shape[1:]), dtype=A.dtype, device=target.device)
    plain_steps = target.op("linear_steps", linear_steps)
    every = target.materialize_every
    recorded, iterations = [], []
    i = 0
    while True:
        start = i
        if i % log_every == 0 or i == iters:  # this step's residual gives the loss too
            residual = A @ x - Y
            recorded.append(xp.sum(residual * residual) / n)
            iterations.append(i)
            if i == iters:
                break
            x = x - step * (At @ residual)
            start = i + 1
        # the steps up to the next logging (or materialising) point log nothing
        upcoming = min(iters, _next_multiple(i, log_every), _next_multiple(i, every))
        x = plain_steps(A, At, Y, x, step, upcoming - start)
        i = upcoming
        if target.due(i):  # a lazy library's graph stays bounded
            x, recorded = target.materialize((x, recorded))
    losses = target.to_numpy(xp.stack(recorded)).tolist()
    if not all(math.isfinite(loss) for loss in losses):
        raise NonFiniteLossError(divergence_message(losses, iterations, lr_limit(target, A)))
    return LinearSolution(x, losses, iterations)


def linear_steps(A: Any, At: Any, Y: Any, x: Any, step: float, count: int) -> Any:
    """``count`` plain steps ``x <- x - step * A^T (A x - Y)`` (``At`` is ``A.T``).

    The generic form of the fast path ``"linear_steps"``: a backend may run these steps its
    own way (as one task of a lazy library, say) if the numbers stay the same.
    """
    for _ in range(count):
        x = x - step * (At @ (A @ x - Y))
    return x


def _next_multiple(i: int, every: int | None) -> float:
    """The smallest multiple of ``every`` above ``i`` (infinity for None)."""
    return math.inf if every is None else (i // every + 1) * every

