"""LayerwiseStep: one optimizer step applied part by part, as the gradients arrive."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..errors import InputError
from .rules import Array

if TYPE_CHECKING:
    from portgd.backends import Backend

    from .optimizer import Optimizer

__all__ = ["LayerwiseStep"]


class LayerwiseStep:
    """One optimizer step, applied to each group of parameters as soon as its gradients exist.

    Made by :meth:`Optimizer.begin_step`. ``fit`` drives it through
    :class:`portgd.step.TrainingStep`, which calls :meth:`apply` right after each layer's
    backward (that backward has already used the layer's current weights for the gradient
    it passes down, so updating them then gives the numbers of one whole-model update, bit
    for bit) and :meth:`finish` at the end::

        step = optimizer.begin_step(params, backend)
        new = step.apply({"weight": w, "bias": b}, {"weight": gw, "bias": gb},
                         name_of=lambda key: f"2.{key}")
        ...
        step.finish()

    The optimizer sees name-keyed dicts only. Clipping by global norm needs every gradient
    before the first update: then :attr:`layerwise` is False, :meth:`apply` refuses, and
    :meth:`finish` takes every parameter and gradient and applies the whole update.

    If the caller stops part-way (a backward pass that raises), the parts applied so far
    have taken the step and the others have not. Each parameter's update count
    (``param_steps``, which Adam's bias correction reads) stays exact; ``step_count``
    (which schedules read) advances only in :meth:`finish`. Within one :meth:`apply`, a held
    state that does not fit its parameter raises before that parameter changes, and the new
    states and counts are committed together after the last parameter's update: an update
    that raises part-way commits nothing of that call. An in-place rule (NumPy's, torch's)
    has by then written into the parameters and states before it, whose counts then lag by
    one; restore a checkpoint after such a failure.
    """

    def __init__(self, optimizer: Optimizer, backend: Backend) -> None:
        self.optimizer = optimizer
        self.backend = backend
        #: False with ``clip_norm``: the whole update waits for :meth:`finish`.
        self.layerwise = optimizer.clip_norm is None
        self.finished = False
        if self.layerwise:
            self._update, self._hp = optimizer._rule(backend, in_place=True,
                                                     may_overwrite_grad=True)

    def apply(
        self,
        params: Mapping[str, Array],
        grads: Mapping[str, Array | None],
        name_of: Callable[[str], str] | None = None,
    ) -> dict[str, Array]:
        """New values for the parameters that ``grads`` names, keyed like ``grads`` (without
        the keys whose gradient is None).

        ``params`` and ``grads`` are keyed alike (``grads`` may name fewer; a None gradient
        leaves its parameter as it is);
        ``name_of(key)`` is the parameter's name in the optimizer's state (default: the
        key). The caller hands over both: a backend's in-place rule may overwrite the
        parameter arrays and keep its intermediates in the gradients
        (``may_overwrite_grad``), so release the gradients afterwards.
        """
        if self.finished:
            self._already_finished()
        if not self.layerwise:
            raise InputError(
                "clip_norm needs every gradient before the first update; pass them all "
                "to finish(params, grads) instead of apply()"
            )
        return self.optimizer._updated(params, grads, self.backend, self._update, self._hp,
                                       name_of)

    def finish(
        self,
        params: Mapping[str, Array] | None = None,
        grads: Mapping[str, Array | None] | None = None,
    ) -> dict[str, Array]:
        """End the step and count it; returns the parameters it changes now.

        Layer by layer nothing is left to do: returns ``{}``. With ``clip_norm``, ``params``
        and ``grads`` are every parameter and gradient (in the same order as a whole-model
        update, which sums the global norm in that order); the update is applied now, in
        place where the backend allows, and the new parameters are returned.
        """
        if self.finished:
            self._already_finished()
        if self.layerwise:
            self.optimizer.step_count += 1
            result: dict[str, Array] = {}
        else:
            if params is None or grads is None:
                raise InputError(
                    "this step clips by global norm: finish(params, grads) needs every "
                    "parameter and gradient"
                )
            result = self.optimizer._apply(params, grads, in_place=True, trusted=True)
        self.finished = True
        return result

    @staticmethod
    def _already_finished() -> None:
        raise InputError(
            "this optimizer step has already finished; start the next one with "
            "optimizer.begin_step(params)"
        )
