"""What a training run of ``portgd train`` adds to ``fit``: the optimizer built from the
command-line options, early stopping, and the last completed epoch kept for an interrupt.

* :func:`optimizer_from_options`: momentum and Nesterov, weight decay, gradient clipping and
  a learning-rate schedule with linear warm-up, checked against the chosen optimizer before
  any work.
* :class:`LastEpoch`: a callback that keeps a host copy of the model, the optimizer and the
  generator after every epoch, so that Ctrl-C or SIGTERM can save the last completed epoch
  as a checkpoint that ``--resume`` continues exactly.
* :func:`interrupts_raise`: SIGTERM raises :class:`Terminated` (a KeyboardInterrupt), so
  both signals end training the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import signal
import threading
from collections.abc import Iterator
from typing import Any

from .callbacks import Callback
from .errors import InputError

#: Options that configure a new optimizer, refused with --resume (the checkpoint has one).
OPTIMIZER_OPTIONS = ("momentum", "nesterov", "weight_decay", "clip_norm", "clip_value",
                     "schedule", "warmup", "min_lr")
MOMENTUM_OPTIMIZERS = ("sgd", "momentum", "rmsprop")
WEIGHT_DECAY_OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def given_optimizer_options(args: argparse.Namespace) -> list[str]:
    """The optimizer options given on the command line (not left at their defaults)."""
    defaults = {"nesterov": False, "schedule": "constant", "warmup": 0}
    return [_flag(name) for name in OPTIMIZER_OPTIONS
            if getattr(args, name) != defaults.get(name)]


def optimizer_from_options(args: argparse.Namespace, steps_per_epoch: int) -> Any:
    """The optimizer ``--optimizer`` names, configured by the other optimizer options.

    The schedule: ``--schedule cosine`` decays the rate from ``--lr`` to ``--min-lr`` over
    all ``--epochs``; ``--warmup E`` raises it linearly from 0 over the first ``E`` epochs
    (with ``--schedule constant`` it then stays at ``--lr``). Both are
    :class:`portgd.schedules.CosineDecay` over optimizer steps.
    """
    from .optim import make_optimizer
    from .schedules import CosineDecay

    name = args.optimizer
    options: dict[str, Any] = {}
    if args.momentum is not None:
        if name not in MOMENTUM_OPTIMIZERS:
            raise InputError(f"--momentum applies to --optimizer {', '.join(MOMENTUM_OPTIMIZERS)}"
                             f"; {name} has its own moment estimates")
        options["momentum"] = args.momentum
    if args.nesterov:
        momentum = options.get("momentum", 0.9 if name == "momentum" else 0.0)
        if name not in ("sgd", "momentum") or momentum <= 0:
            raise InputError("--nesterov needs SGD with momentum: --optimizer momentum, or "
                             "--optimizer sgd with --momentum > 0")
        options["nesterov"] = True
    if args.weight_decay is not None:
        options["weight_decay"] = args.weight_decay
    for option in ("clip_norm", "clip_value"):
        if getattr(args, option) is not None:
            options[option] = getattr(args, option)
    lr: Any = args.lr
    if args.schedule == "cosine" or args.warmup:
        total, warmup = args.epochs * steps_per_epoch, args.warmup * steps_per_epoch
        if args.warmup >= args.epochs:
            raise InputError(f"--warmup {args.warmup} must be fewer epochs than --epochs "
                             f"{args.epochs}")
        floor = args.lr if args.schedule == "constant" else (args.min_lr or 0.0)
        if floor > args.lr:
            raise InputError(f"--min-lr {args.min_lr:g} must not exceed --lr {args.lr:g}")
        lr = CosineDecay(args.lr, total_steps=total, warmup_steps=warmup, min_lr=floor)
    elif args.min_lr is not None:
        raise InputError("--min-lr applies to --schedule cosine")
    return make_optimizer(name, lr=lr, **options)


def describe_schedule(args: argparse.Namespace) -> str:
    """``""``, or how the rate changes, for the header line."""
    parts = []
    if args.schedule == "cosine":
        parts.append(f"cosine decay to {args.min_lr or 0:g}")
    if args.warmup:
        parts.append(f"{args.warmup} warm-up epoch{'s' if args.warmup > 1 else ''}")
    return f" ({', '.join(parts)})" if parts else ""


class LastEpoch(Callback):
    """Keeps host copies of the parameters, optimizer state and generator after each epoch.

    ``epoch`` is the number of epochs completed (None before the first ends). The copy is
    one host read per epoch, made only when the run saves a checkpoint.
    """

    def __init__(self) -> None:
        self.epoch: int | None = None
        self._state: tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        params = self.model.state_dict()
        optimizer = self.optimizer.state_dict() if self.optimizer is not None else None
        rng = copy.deepcopy(self.model.rng.bit_generator.state)
        self._state, self.epoch = (params, optimizer, rng), epoch + 1  # one assignment each

    def restore(self, model: Any, optimizer: Any) -> None:
        """Put the model, optimizer and generator back to the end of the last epoch."""
        if self._state is None:
            return
        params, state, rng = self._state
        model.load_state_dict(params)
        if optimizer is not None and state is not None:
            optimizer.load_state_dict(state)
        model.rng.bit_generator.state = rng


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``kill``, a job scheduler's time limit)."""


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated`, as Ctrl-C raises
    KeyboardInterrupt (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
