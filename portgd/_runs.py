"""What a training run of ``portgd train`` adds to ``fit``: the optimizer built from the
command-line options, early stopping, and the last completed epoch kept for an interrupt.

* :func:`optimizer_from_options`: momentum and Nesterov, weight decay, gradient clipping and
  a learning-rate schedule with linear warm-up, checked against the chosen optimizer before
  any work.
* :class:`LastEpoch`: a callback that keeps a host copy of the model, the optimizer and the
  generator after every epoch, so that Ctrl-C or SIGTERM can save the last completed epoch
  as a checkpoint that ``--resume`` continues exactly.
* :class:`SignalStop`: Ctrl-C and SIGTERM become a request that ``fit`` answers between two
  training steps, so an interrupt never lands inside a step or a save.
"""

from __future__ import annotations

import argparse
import copy
import signal
import threading
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
    one host read per epoch, made only when the run saves a checkpoint. The snapshot is one
    tuple stored by one assignment, so the epoch number always belongs to its state.
    """

    def __init__(self) -> None:
        self._snapshot: tuple[int, dict[str, Any], dict[str, Any] | None,
                              dict[str, Any]] | None = None

    @property
    def epoch(self) -> int | None:
        return None if self._snapshot is None else self._snapshot[0]

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        params = self.model.state_dict()
        optimizer = self.optimizer.state_dict() if self.optimizer is not None else None
        rng = copy.deepcopy(self.model.rng.bit_generator.state)
        self._snapshot = (epoch + 1, params, optimizer, rng)

    def restore(self, model: Any, optimizer: Any) -> None:
        """Put the model, optimizer and generator back to the end of the last epoch."""
        if self._snapshot is None:
            return
        _, params, state, rng = self._snapshot
        model.load_state_dict(params)
        if optimizer is not None and state is not None:
            optimizer.load_state_dict(state)
        model.rng.bit_generator.state = rng


class Interrupted(BaseException):
    """Raised by :class:`SignalStop` between two training steps after Ctrl-C or SIGTERM.

    A BaseException like KeyboardInterrupt, so that ``except Exception`` does not swallow
    it; unlike KeyboardInterrupt it is raised at a clean point, never inside a step.
    """


#: The signals :class:`SignalStop` turns into a request to stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalStop(Callback):
    """Ctrl-C and SIGTERM as a request to stop, answered between two training steps.

    Within ``with stop:`` the first SIGINT or SIGTERM only records itself (``signum``);
    ``fit`` calls :meth:`on_batch_end` after every complete step, which raises
    :class:`Interrupted` once a signal has arrived, so training ends with every layer's
    update either done or not begun. A second signal is recorded too (so a save in
    progress completes); a third restores the previous handlers and delivers itself to
    them, for a user who insists on ending at once. Leaving the block restores the previous
    handlers without delivering the recorded signals: the caller answers them. Only the
    main thread can handle signals; elsewhere the block changes nothing.
    """

    def __init__(self) -> None:
        self.signals: list[int] = []
        #: True: a signal raises :class:`Interrupted` at once (where nothing is left to
        #: keep consistent, e.g. the evaluation after the final save).
        self.immediate = False
        self._previous: dict[int, Any] = {}

    @property
    def signum(self) -> int | None:
        """The first signal that arrived, or None."""
        return self.signals[0] if self.signals else None

    @property
    def status(self) -> int:
        """The exit status for the first signal: 130 for SIGINT, 143 for SIGTERM."""
        return 143 if self.signum == signal.SIGTERM else 130

    @property
    def what(self) -> str:
        return "terminated (SIGTERM)" if self.signum == signal.SIGTERM else "interrupted"

    def _record(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        if len(self.signals) >= 3:
            self._restore()
            signal.raise_signal(signum)
        elif self.immediate:
            raise Interrupted(f"stopped by {signal.Signals(signum).name}")

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> SignalStop:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore()

    def on_batch_end(self, batch: int) -> None:
        if self.signals:
            raise Interrupted(f"stopped by {signal.Signals(self.signals[0]).name}")
