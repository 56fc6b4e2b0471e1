"""The update rules: each optimizer's arithmetic for one parameter, as one pure function.

Written once against the array API standard::

    update(param, grad, state, hp, step, *, xp) -> (new_param, new_state)

- ``param``, ``grad``: arrays of the same shape and dtype on the optimizer's device. ``grad``
  has already been clipped and, with ``maximize=True``, negated.
- ``state``: this parameter's state, a dict ``{key: array}`` shaped like ``param`` with the
  keys of the optimizer's :meth:`~portgd.optim.Optimizer.state_keys`. It is read, never
  modified.
- ``hp``: a dict of Python floats and bools, the optimizer's hyperparameters (its
  ``config()`` without the clipping options) with ``"lr"`` set to this step's rate. Read
  it, never change it: steps at the same rate share one dict.
- ``step``: a Python int, how many updates this parameter has had including this one
  (1 on its first update).
- ``xp``: the array namespace.

It returns the new parameter and a new state dict with the same keys; it creates new
arrays and mutates nothing. The optimizer looks the function up as
``backend.op(name, generic)`` (``name`` is ``"sgd"``, ``"adagrad"``, ``"rmsprop"``,
``"adam"`` or ``"adamw"``), so a backend can register a fused or in-place fast path with
this signature in its ``fast`` table; the generic function stays the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Array", "UpdateFn", "adagrad_update", "adam_update", "rmsprop_update", "sgd_update"]

Array = Any
UpdateFn = Callable[..., tuple[Array, dict[str, Array]]]


def sgd_update(
    param: Array, grad: Array, state: dict[str, Array], hp: Mapping[str, Any], step: int,
    *, xp: Any,
) -> tuple[Array, dict[str, Array]]:  # fmt: skip
    """Stochastic gradient descent with momentum, dampening, Nesterov and L2 decay.

    With ``mu = momentum``, ``tau = dampening``, ``lambda = weight_decay``::

        g = grad + lambda * p
        b = g                                 on the first step
        b = mu * b_prev + (1 - tau) * g       afterwards
        d = g + mu * b  if nesterov,  b  if mu > 0,  g  if mu == 0
        p' = p - lr * d

    State: ``momentum_buffer`` (only when ``momentum > 0``), shaped like ``p``.
    """
    g = grad
    if hp["weight_decay"] != 0.0:
        g = g + hp["weight_decay"] * param
    momentum = hp["momentum"]
    if momentum == 0.0:
        return param - hp["lr"] * g, {}
    if step == 1:
        buf = xp.asarray(g, copy=True)  # the caller may reuse its gradient array
    else:
        buf = momentum * state["momentum_buffer"] + (1.0 - hp["dampening"]) * g
    direction = g + momentum * buf if hp["nesterov"] else buf
    return param - hp["lr"] * direction, {"momentum_buffer": buf}


def adagrad_update(
    param: Array, grad: Array, state: dict[str, Array], hp: Mapping[str, Any], step: int,
    *, xp: Any,
) -> tuple[Array, dict[str, Array]]:  # fmt: skip
    """AdaGrad: per-coordinate rates from the sum of squared gradients.

    With ``t = step`` (1 on the first update)::

        g = grad + weight_decay * p
        lr_t = lr / (1 + (t - 1) * lr_decay)
        s = s_prev + g * g                    (s starts at initial_accumulator_value)
        p' = p - lr_t * g / (sqrt(s) + eps)

    State: ``sum``, shaped like ``p``.
    """
    g = grad
    if hp["weight_decay"] != 0.0:
        g = g + hp["weight_decay"] * param
    rate = hp["lr"] / (1 + (step - 1) * hp["lr_decay"])
    total = state["sum"] + g * g
    std = xp.sqrt(total) + hp["eps"]
    return param - rate * (g / std), {"sum": total}


def rmsprop_update(
    param: Array, grad: Array, state: dict[str, Array], hp: Mapping[str, Any], step: int,
    *, xp: Any,
) -> tuple[Array, dict[str, Array]]:  # fmt: skip
    """RMSprop, optionally centered and with momentum.

    With ``a = alpha`` and ``mu = momentum``::

        g = grad + weight_decay * p
        v = a * v_prev + (1 - a) * g * g
        m = a * m_prev + (1 - a) * g          (centered only)
        r = sqrt(v - m * m) + eps  if centered,  sqrt(v) + eps  otherwise
        b = mu * b_prev + g / r;  p' = p - lr * b      if mu > 0
        p' = p - lr * g / r                            otherwise

    State: ``square_avg``; ``momentum_buffer`` when ``momentum > 0``; ``grad_avg`` when
    ``centered``; each shaped like ``p`` and starting at zero.
    """
    g = grad
    if hp["weight_decay"] != 0.0:
        g = g + hp["weight_decay"] * param
    alpha = hp["alpha"]
    square_avg = alpha * state["square_avg"] + (1.0 - alpha) * (g * g)
    new_state = {"square_avg": square_avg}
    if hp["centered"]:
        grad_avg = alpha * state["grad_avg"] + (1.0 - alpha) * g
        new_state["grad_avg"] = grad_avg
        rms = xp.sqrt(square_avg - grad_avg * grad_avg) + hp["eps"]
    else:
        rms = xp.sqrt(square_avg) + hp["eps"]
    if hp["momentum"] > 0.0:
        buf = hp["momentum"] * state["momentum_buffer"] + g / rms
        new_state["momentum_buffer"] = buf
        return param - hp["lr"] * buf, new_state
    return param - hp["lr"] * (g / rms), new_state


def adam_update(
    param: Array, grad: Array, state: dict[str, Array], hp: Mapping[str, Any], step: int,
    *, xp: Any,
) -> tuple[Array, dict[str, Array]]:  # fmt: skip
    """Adam and AdamW (``hp["decoupled_weight_decay"]``), optionally AMSGrad.

    With ``(b1, b2) = betas``, ``lambda = weight_decay`` and ``t = step``::

        p = p * (1 - lr * lambda)             decoupled (AdamW)
        g = grad + lambda * p                 coupled L2 (Adam)
        m = b1 * m_prev + (1 - b1) * g
        v = b2 * v_prev + (1 - b2) * g * g
        v_max = max(v_max_prev, v)            (amsgrad; then v_max replaces v below)
        p' = p - lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)

    State: ``exp_avg``, ``exp_avg_sq``, and ``max_exp_avg_sq`` with ``amsgrad``; each shaped
    like ``p`` and starting at zero.
    """
    lr = hp["lr"]
    beta1, beta2 = hp["betas"]
    g = grad
    weight_decay = hp["weight_decay"]
    if weight_decay != 0.0:
        if hp["decoupled_weight_decay"]:
            param = param * (1.0 - lr * weight_decay)
        else:
            g = g + weight_decay * param
    exp_avg = beta1 * state["exp_avg"] + (1.0 - beta1) * g
    exp_avg_sq = beta2 * state["exp_avg_sq"] + (1.0 - beta2) * (g * g)
    new_state = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    second = exp_avg_sq
    if hp["amsgrad"]:
        second = xp.maximum(state["max_exp_avg_sq"], exp_avg_sq)
        new_state["max_exp_avg_sq"] = second
    step_size = lr / (1.0 - beta1**step)
    correction2_sqrt = (1.0 - beta2**step) ** 0.5
    denom = xp.sqrt(second) / correction2_sqrt + hp["eps"]
    return param - step_size * (exp_avg / denom), new_state
