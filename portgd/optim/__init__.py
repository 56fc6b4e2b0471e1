"""Optimizers, gradient clipping, and the per-parameter update rules behind them.

Parameters and gradients travel as dicts ``{name: array}`` (names such as ``"0.weight"``);
an optimizer is a function of those dicts and knows nothing else about a model::

    opt = Adam(lr=1e-3)
    new_params = opt.step(params, grads)    # a new dict with the same keys
    opt.update(model)                       # model.params = opt.step(model.params, model.grads)

Formulas, defaults and edge cases follow ``torch.optim``; docs/optimizers.md states each one.

One job per module:

- :mod:`~portgd.optim.rules`: the update rules, one pure function per optimizer
  (``update(param, grad, state, hp, step, *, xp) -> (new_param, new_state)``);
- :mod:`~portgd.optim.clipping`: clipping by value and by global norm;
- :mod:`~portgd.optim.optimizer`: the Optimizer base (state by name, the step, backends);
- :mod:`~portgd.optim.layerwise`: LayerwiseStep, one step applied as gradients arrive;
- :mod:`~portgd.optim.state`: snapshots (``state_dict``) and their checks;
- :mod:`~portgd.optim.optimizers`: SGD, AdaGrad, RMSprop, Adam, AdamW;
- :mod:`~portgd.optim.factory`: optimizers by name and from snapshots.
"""

from .clipping import CLIP_NORM_EPS, clip_by_global_norm, clip_by_value, global_norm
from .factory import OPTIMIZERS, make_optimizer, optimizer_from_state_dict
from .layerwise import LayerwiseStep
from .optimizer import Optimizer
from .optimizers import SGD, AdaGrad, Adam, AdamW, RMSprop
from .rules import adagrad_update, adam_update, rmsprop_update, sgd_update
from .state import STATE_DICT_FORMAT

__all__ = [
    "CLIP_NORM_EPS",
    "OPTIMIZERS",
    "STATE_DICT_FORMAT",
    "SGD",
    "AdaGrad",
    "Adam",
    "AdamW",
    "LayerwiseStep",
    "Optimizer",
    "RMSprop",
    "adagrad_update",
    "adam_update",
    "clip_by_global_norm",
    "clip_by_value",
    "global_norm",
    "make_optimizer",
    "optimizer_from_state_dict",
    "rmsprop_update",
    "sgd_update",
]
