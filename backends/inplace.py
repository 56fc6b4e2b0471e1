"""In-place optimizer rules, written once for every library whose elementwise functions write
into an ``out=`` array: NumPy's ufuncs and torch's functions.

On the CPU the cost of a training step beyond its matrix products is mostly memory: every
``p - lr * g`` of the generic (functional) optimizer allocates two parameter-sized arrays,
and fresh large allocations cost page faults. These versions update parameters and
optimizer state in place and reuse one scratch buffer per shape, performing the same
floating-point operations in the same order as the generic rules in ``portgd.optim``, so
their results are bit-identical (the conformance suite checks it on every backend that
registers them; tests/test_fast_paths.py on NumPy and torch).

They are registered under ``"<name>:inplace"``: the optimizer uses them only where the model
owns its parameter arrays (``Optimizer.update(model)`` and the layer-by-layer step of
``fit``); the functional ``Optimizer.step`` stays pure. Signature: ``(param, grad, state, hp,
step, *, xp) -> (param, state)``, mutating ``param`` and the arrays of ``state``. A rule may
also take ``may_overwrite_grad=False``: ``fit`` passes True because it releases each gradient
once applied, so the rule may keep its intermediates there instead of in a scratch buffer,
as a hand-written loop would. Only SGD takes it: the other rules need the gradient and a
second buffer at the same time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def _decayed(param: Any, grad: Any, weight_decay: float) -> Any:
    """``grad + weight_decay * param`` (a new array, as the generic rule computes it)."""
    return grad + weight_decay * param if weight_decay != 0.0 else grad


def _overwritable(g: Any, grad: Any, may_overwrite_grad: bool) -> Any | None:
    """``g`` if the rule may write into it (the caller gave ``grad`` up, or weight decay made
    ``g`` a new array), else None."""
    return g if may_overwrite_grad or g is not grad else None


def in_place_rules(
    *,
    add: Callable[..., Any],
    subtract: Callable[..., Any],
    multiply: Callable[..., Any],
    divide: Callable[..., Any],
    sqrt: Callable[..., Any],
    maximum: Callable[..., Any],
    empty_like: Callable[[Any], Any],
    copy: Callable[[Any], Any],
) -> dict[str, Callable[..., Any]]:
    """The ``"<name>:inplace"`` rules of every optimizer, made from one library's functions.

    ``add(a, b, out=c)`` and the others write ``a + b`` into ``c`` (which may be ``a``);
    ``empty_like(a)`` is a new uninitialised array, ``copy(a)`` a new array with ``a``'s
    values. The functions are bound once here: a name looked up in a closure costs less per
    call than an attribute of a module, and an Adam step on one parameter makes 13 calls.
    """
    local = threading.local()

    def _scratch(like: Any) -> Any:
        """A reusable buffer shaped like ``like`` (one per shape, dtype, device and thread).

        Buffers live as long as the thread: at most the size of the largest parameter per
        distinct parameter shape (64 MiB after a 4096x4096 float32 layer).
        """
        buffers = getattr(local, "buffers", None)
        if buffers is None:
            buffers = local.buffers = {}
        key = (tuple(like.shape), like.dtype, getattr(like, "device", None))
        buf = buffers.get(key)
        if buf is None:
            buf = buffers[key] = empty_like(like)
        return buf

    def sgd_inplace(param, grad, state, hp, step, *, xp, may_overwrite_grad=False):
        momentum = hp["momentum"]
        if may_overwrite_grad and momentum == 0.0 and hp["weight_decay"] == 0.0:
            # plain SGD in fit, the common case, as a hand-written loop does it: the two calls
            # below the general path would make, without its helper calls
            multiply(grad, hp["lr"], out=grad)
            subtract(param, grad, out=param)
            return param, {}
        g = _decayed(param, grad, hp["weight_decay"])
        # Nesterov reads g after the momentum update, so g cannot hold the intermediates there
        s = None if hp["nesterov"] else _overwritable(g, grad, may_overwrite_grad)
        if s is None:
            s = _scratch(param)
        if momentum == 0.0:
            multiply(g, hp["lr"], out=s)
            subtract(param, s, out=param)
            return param, {}
        if step == 1:
            buf = copy(g)
        else:
            buf = state["momentum_buffer"]
            multiply(buf, momentum, out=buf)
            multiply(g, 1.0 - hp["dampening"], out=s)
            add(buf, s, out=buf)
        if hp["nesterov"]:
            multiply(buf, momentum, out=s)
            add(g, s, out=s)
            multiply(s, hp["lr"], out=s)
        else:
            multiply(buf, hp["lr"], out=s)
        subtract(param, s, out=param)
        return param, {"momentum_buffer": buf}


    def adagrad_inplace(param, grad, state, hp, step, *, xp):
        g = _decayed(param, grad, hp["weight_decay"])
        rate = hp["lr"] / (1 + (step - 1) * hp["lr_decay"])
        total = state["sum"]
        s = _scratch(param)
        multiply(g, g, out=s)
        add(total, s, out=total)
        sqrt(total, out=s)
        add(s, hp["eps"], out=s)
        divide(g, s, out=s)
        multiply(s, rate, out=s)
        subtract(param, s, out=param)
        return param, {"sum": total}


    def rmsprop_inplace(param, grad, state, hp, step, *, xp):
        g = _decayed(param, grad, hp["weight_decay"])
        alpha = hp["alpha"]
        s = _scratch(param)
        square_avg = state["square_avg"]
        multiply(square_avg, alpha, out=square_avg)
        multiply(g, g, out=s)
        multiply(s, 1.0 - alpha, out=s)
        add(square_avg, s, out=square_avg)
        new_state = {"square_avg": square_avg}
        if hp["centered"]:
            grad_avg = state["grad_avg"]
            multiply(grad_avg, alpha, out=grad_avg)
            multiply(g, 1.0 - alpha, out=s)
            add(grad_avg, s, out=grad_avg)
            new_state["grad_avg"] = grad_avg
            multiply(grad_avg, grad_avg, out=s)
            subtract(square_avg, s, out=s)
            sqrt(s, out=s)
        else:
            sqrt(square_avg, out=s)
        add(s, hp["eps"], out=s)
        divide(g, s, out=s)  # g / rms
        if hp["momentum"] > 0.0:
            buf = state["momentum_buffer"]
            multiply(buf, hp["momentum"], out=buf)
            add(buf, s, out=buf)
            new_state["momentum_buffer"] = buf
            multiply(buf, hp["lr"], out=s)
        else:
            multiply(s, hp["lr"], out=s)
        subtract(param, s, out=param)
        return param, new_state


    def adam_inplace(param, grad, state, hp, step, *, xp):
        lr = hp["lr"]
        beta1, beta2 = hp["betas"]
        g = grad
        weight_decay = hp["weight_decay"]
        if weight_decay != 0.0:
            if hp["decoupled_weight_decay"]:
                multiply(param, 1.0 - lr * weight_decay, out=param)
            else:
                g = g + weight_decay * param
        s = _scratch(param)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        multiply(exp_avg, beta1, out=exp_avg)
        multiply(g, 1.0 - beta1, out=s)
        add(exp_avg, s, out=exp_avg)
        multiply(exp_avg_sq, beta2, out=exp_avg_sq)
        multiply(g, g, out=s)
        multiply(s, 1.0 - beta2, out=s)
        add(exp_avg_sq, s, out=exp_avg_sq)
        new_state = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        second = exp_avg_sq
        if hp["amsgrad"]:
            second = state["max_exp_avg_sq"]
            maximum(second, exp_avg_sq, out=second)
            new_state["max_exp_avg_sq"] = second
        step_size = lr / (1.0 - beta1**step)
        correction2_sqrt = (1.0 - beta2**step) ** 0.5
        sqrt(second, out=s)
        divide(s, correction2_sqrt, out=s)
        add(s, hp["eps"], out=s)
        divide(exp_avg, s, out=s)
        multiply(s, step_size, out=s)
        subtract(param, s, out=param)
        return param, new_state

    return {
        "sgd:inplace": sgd_inplace,
        "adagrad:inplace": adagrad_inplace,
        "rmsprop:inplace": rmsprop_inplace,
        "adam:inplace": adam_inplace,
        "adamw:inplace": adam_inplace,
    }
