"""One training step's road from backprop to the optimizer: the gradient seam.

``fit`` runs each step as::

    step = TrainingStep(model, optimizer, reducer)
    model.loss_and_backward(yhat, y, loss, after_layer=step)
    step.finish()

``model.backward`` calls ``step(index, layer)`` right after each layer's backward. The
layer's gradients leave the model there, once, and go through ``reducer`` (if any) to the
optimizer, which sees them as name-keyed dicts (``"<layer index>.<name>"``) and updates the
layer's parameters. This is the one place where gradients pass between backprop and the
optimizer: a :class:`GradientReducer` (averaging across processes, see
:mod:`portgd.distributed`) plugs in here and nowhere else.

Without a reducer each layer is updated as soon as its backward is done, which gives the
numbers of one whole-model ``optimizer.update(model)`` after the backward pass bit for bit,
and each layer's gradients are released once applied (``model.grads`` is empty after the
step), so a step never holds all of them at once. With a reducer, a layer is updated when
its reduction is complete: the reducer may start a non-blocking exchange for one layer while
backprop continues with the layers below, and :meth:`TrainingStep.finish` waits for the rest.
Clipping by global norm needs every gradient first: then the layers keep their (reduced)
gradients until :meth:`TrainingStep.finish`, which applies the whole update.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .model import param_prefix

if TYPE_CHECKING:
    from .layers import Layer
    from .model import Sequential
    from .optim import Optimizer

__all__ = ["GradientReducer", "TrainingStep"]


class GradientReducer(Protocol):
    """What happens to gradients between backprop and the optimizer.

    ``start(index, grads)`` receives layer ``index``'s gradients ``{name: array}`` (the
    reducer owns them from then on); ``ready()`` returns the reductions complete so far
    without waiting, and ``wait()`` all the remaining ones, each as ``(index, grads)`` with
    the same keys, shapes and dtypes. Every started index comes back exactly once.
    """

    def start(self, index: int, grads: dict[str, Any]) -> None: ...

    def ready(self) -> Iterable[tuple[int, dict[str, Any]]]: ...

    def wait(self) -> Iterable[tuple[int, dict[str, Any]]]: ...


def _present(grads: dict[str, Any]) -> dict[str, Any]:
    return {key: g for key, g in grads.items() if g is not None}


class TrainingStep:
    """The ``after_layer`` hook of one training step: gradients -> (reducer) -> optimizer.

    Args:
        model: the model being trained (its device must be current, as in ``fit``).
        optimizer: its optimizer; loaded optimizer state is checked against every
            parameter here, before any layer changes.
        reducer: optional; see :class:`GradientReducer`.

    If the backward pass raises part-way (or is interrupted), the layers updated so far
    have taken the step and the others have not (see :class:`portgd.optim.LayerwiseStep`).
    """

    def __init__(self, model: Sequential, optimizer: Optimizer,
                 reducer: GradientReducer | None = None) -> None:
        self.model = model
        self.reducer = reducer
        params = model.params if optimizer.needs_params_to_begin else {}
        self.update = optimizer.begin_step(params, model.backend)

    def __call__(self, index: int, layer: Layer) -> None:
        """Hand the gradients ``layer`` (``model.layers[index]``) just stored onward."""
        update = self.update
        if update.finished:
            update._already_finished()
        if self.reducer is None:
            if layer.grads and update.layerwise:
                self._apply(index, layer, layer.grads)
            return
        if layer.grads:
            self.reducer.start(index, _present(layer.grads))
            layer.grads = {}
        for done, reduced in self.reducer.ready():  # every layer: MPI progresses in calls
            self._deliver(done, reduced)

    def finish(self) -> None:
        """Wait for outstanding reductions, apply what is left, and count the step."""
        update = self.update
        if update.finished:
            update._already_finished()
        if self.reducer is not None:
            for done, reduced in self.reducer.wait():
                self._deliver(done, reduced)
        if update.layerwise:
            update.finish()
        else:
            model = self.model
            model.params = update.finish(model.params, model.grads)
            model.zero_grad()

    def _deliver(self, index: int, grads: dict[str, Any]) -> None:
        layer = self.model.layers[index]
        if self.update.layerwise:
            self._apply(index, layer, grads)
        else:
            layer.grads = grads  # held for the whole-model update in finish()

    def _apply(self, index: int, layer: Layer, grads: dict[str, Any]) -> None:
        """Update ``layer``'s parameters from ``grads`` now and release its gradients."""
        layer.params.update(self.update.apply(layer.params, grads, _name_of(index)))
        layer.grads = {}


@functools.lru_cache(maxsize=1024)
def _name_of(index: int) -> Callable[[str], str]:
    """``key -> "<index>.<key>"``: layer ``index``'s parameter names in the optimizer's state
    (one function per index, made once)."""
    return param_prefix(index).__add__
