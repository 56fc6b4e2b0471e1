"""The optimizers: SGD, AdaGrad, RMSprop, Adam and AdamW, each a configuration of the
:class:`~portgd.optim.Optimizer` base around one update rule of :mod:`portgd.optim.rules`.

Formulas, defaults and edge cases follow ``torch.optim``; docs/optimizers.md states each one.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._checks import check_real
from ..errors import InputError
from .optimizer import LearningRate, Optimizer, _check_flag
from .rules import Array, adagrad_update, adam_update, rmsprop_update, sgd_update

__all__ = ["SGD", "AdaGrad", "Adam", "AdamW", "RMSprop"]


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum; see :func:`sgd_update`.

    As ``torch.optim.SGD``: the first momentum step sets the buffer to the gradient;
    Nesterov needs ``momentum > 0`` and ``dampening == 0``; ``weight_decay`` is L2 decay
    added to the gradient.
    """

    name = "sgd"
    update_rule = staticmethod(sgd_update)

    def __init__(
        self,
        lr: LearningRate = 0.001,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        maximize: bool = False,
        *,
        clip_value: float | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, clip_value=clip_value, clip_norm=clip_norm, maximize=maximize)
        self._hyper = {
            "momentum": check_real("SGD", "momentum", momentum, low=0.0),
            "dampening": check_real("SGD", "dampening", dampening),
            "nesterov": _check_flag("SGD", "nesterov", nesterov),
            "weight_decay": check_real("SGD", "weight_decay", weight_decay, low=0.0),
        }
        if nesterov and (self._hyper["momentum"] <= 0 or self._hyper["dampening"] != 0):
            raise InputError(
                "SGD: nesterov=True needs momentum > 0 and dampening = 0, got "
                f"momentum={momentum}, dampening={dampening}"
            )

    def state_keys(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self._hyper["momentum"] != 0 else ()


class AdaGrad(Optimizer):
    """AdaGrad (``torch.optim.Adagrad``); see :func:`adagrad_update`."""

    name = "adagrad"
    update_rule = staticmethod(adagrad_update)

    def __init__(
        self,
        lr: LearningRate = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        clip_value: float | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, clip_value=clip_value, clip_norm=clip_norm, maximize=maximize)
        self._hyper = {
            "lr_decay": check_real("AdaGrad", "lr_decay", lr_decay, low=0.0),
            "weight_decay": check_real("AdaGrad", "weight_decay", weight_decay, low=0.0),
            "initial_accumulator_value": check_real(
                "AdaGrad", "initial_accumulator_value", initial_accumulator_value, low=0.0
            ),
            "eps": check_real("AdaGrad", "eps", eps, low=0.0),
        }

    def state_keys(self) -> tuple[str, ...]:
        return ("sum",)

    def init_state(self, param: Array, xp: Any, device: Any) -> dict[str, Array]:
        start = self._hyper["initial_accumulator_value"]
        return {"sum": xp.full(param.shape, start, dtype=param.dtype, device=device)}


class RMSprop(Optimizer):
    """RMSprop (``torch.optim.RMSprop``); see :func:`rmsprop_update`."""

    name = "rmsprop"
    update_rule = staticmethod(rmsprop_update)

    def __init__(
        self,
        lr: LearningRate = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
        clip_value: float | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, clip_value=clip_value, clip_norm=clip_norm, maximize=maximize)
        self._hyper = {
            "alpha": check_real("RMSprop", "alpha", alpha, low=0.0, high=1.0),
            "eps": check_real("RMSprop", "eps", eps, low=0.0),
            "weight_decay": check_real("RMSprop", "weight_decay", weight_decay, low=0.0),
            "momentum": check_real("RMSprop", "momentum", momentum, low=0.0),
            "centered": _check_flag("RMSprop", "centered", centered),
        }

    def state_keys(self) -> tuple[str, ...]:
        keys = ("square_avg",)
        if self._hyper["momentum"] > 0:
            keys += ("momentum_buffer",)
        if self._hyper["centered"]:
            keys += ("grad_avg",)
        return keys


class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient (``torch.optim.Adam``).

    See :func:`adam_update`. For decay applied to the weights directly, use :class:`AdamW`.
    """

    name = "adam"
    update_rule = staticmethod(adam_update)
    _fixed_hp: ClassVar[dict[str, Any]] = {"decoupled_weight_decay": False}

    def __init__(
        self,
        lr: LearningRate = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        clip_value: float | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, clip_value=clip_value, clip_norm=clip_norm, maximize=maximize)
        owner = type(self).__name__
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise InputError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
        self._hyper = {
            "betas": tuple(
                check_real(owner, f"betas[{i}]", b, low=0.0, high=1.0, high_open=True)
                for i, b in enumerate(betas)
            ),
            "eps": check_real(owner, "eps", eps, low=0.0),
            "weight_decay": check_real(owner, "weight_decay", weight_decay, low=0.0),
            "amsgrad": _check_flag(owner, "amsgrad", amsgrad),
        }

    def state_keys(self) -> tuple[str, ...]:
        keys = ("exp_avg", "exp_avg_sq")
        return (*keys, "max_exp_avg_sq") if self._hyper["amsgrad"] else keys


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``).

    Before the Adam update the weights shrink, ``p = p * (1 - lr * weight_decay)``; the
    gradient itself carries no decay term. Same update rule as :class:`Adam`.
    """

    name = "adamw"
    _fixed_hp: ClassVar[dict[str, Any]] = {"decoupled_weight_decay": True}

    def __init__(
        self,
        lr: LearningRate = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        clip_value: float | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         clip_value=clip_value, clip_norm=clip_norm)  # fmt: skip

