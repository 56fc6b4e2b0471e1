"""Callbacks: hooks ``fit`` calls at the start and end of training, of every epoch and after
every training step (``on_batch_end``, a host-side call with no device read).

A callback sees the model (``self.model``), the optimizer and the History; setting
``model.stop_training = True`` ends training after the current epoch. The ``logs`` passed to
``on_epoch_end`` are host floats (``"loss"``, ``"val_loss"``, metric names), read once per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError


class Callback:
    """Base class; override the hooks you need."""

    model: Any = None
    optimizer: Any = None
    history: Any = None
    #: The Communicator of a data-parallel ``fit`` (None in one process). Every rank runs
    #: every callback with the same logs; a callback that writes files writes on rank 0.
    distributed: Any = None

    def on_train_begin(self) -> None: ...

    def on_epoch_begin(self, epoch: int) -> None: ...

    def on_batch_end(self, batch: int) -> None:
        """After training step ``batch`` (0-based within the epoch) has updated every layer."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self) -> None: ...


class CallbackList:
    """Calls each hook on every callback in order."""

    def __init__(self, callbacks: Sequence[Callback], *, model: Any, optimizer: Any,
                 history: Any, distributed: Any = None) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise InputError(f"{cb!r} is not a portgd.callbacks.Callback")
            cb.model, cb.optimizer, cb.history = model, optimizer, history
            cb.distributed = distributed

    def on_train_begin(self) -> None:
        for cb in self.callbacks:
            cb.on_train_begin()

    def on_epoch_begin(self, epoch: int) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch)

    def on_batch_end(self, batch: int) -> None:
        for cb in self.callbacks:
            cb.on_batch_end(batch)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_end(self) -> None:
        for cb in self.callbacks:
            cb.on_train_end()


def _monitored(logs: dict[str, float], monitor: str) -> float:
    if monitor not in logs:
        raise InputError(
            f"cannot monitor {monitor!r}: this fit reports {', '.join(sorted(logs))}"
        )
    return logs[monitor]


def _mode(monitor: str, mode: str) -> str:
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    if mode not in ("min", "max"):
        raise InputError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return mode


class _BestTracker:
    """Remembers the best monitored value; ``improved(value)`` says if a new one beats it."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0) -> None:
        self.monitor = monitor
        self.sign = 1.0 if _mode(monitor, mode) == "min" else -1.0
        self.min_delta = abs(min_delta)
        self.best = math.inf

    def improved(self, value: float) -> bool:
        score = self.sign * value
        if score < self.best - self.min_delta:
            self.best = score
            return True
        return False


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best=True`` the parameters of the best epoch are put back at the end.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = False) -> None:
        self.tracker = _BestTracker(monitor, mode, min_delta)
        self.patience = patience
        self.restore_best = restore_best

    def on_train_begin(self) -> None:
        self.wait = 0
        self.best_epoch: int | None = None
        self.best_state: dict[str, Any] | None = None
        self.stopped_epoch: int | None = None
        self.tracker.best = math.inf

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.tracker.improved(_monitored(logs, self.tracker.monitor)):
            self.wait, self.best_epoch = 0, epoch
            if self.restore_best:
                self.best_state = self.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self) -> None:
        if self.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)


class ModelCheckpoint(Callback):
    """Save a checkpoint (``portgd.save``) after every epoch, or only when ``monitor`` improves.

    ``path`` may contain ``{epoch}`` (1-based) and any key of the logs, e.g.
    ``"ckpt-{epoch:03d}-{val_loss:.4f}.npz"``.

    In a data-parallel ``fit`` every rank holds the same parameters: rank 0 writes the file
    (atomically) once every rank has finished the epoch, and the others wait until it is
    written, so any rank may read it afterwards.
    """

    def __init__(self, path: str | Path, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto") -> None:
        self.path = str(path)
        self.save_best_only = save_best_only
        self.tracker = _BestTracker(monitor, mode)
        self.saved: list[Path] = []

    def on_train_begin(self) -> None:
        self.tracker.best = math.inf

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.save_best_only and not self.tracker.improved(
            _monitored(logs, self.tracker.monitor)
        ):
            return
        from .checkpoint import save  # NumPy (the host format) loads on first use, not at import

        target = Path(self.path.format(epoch=epoch + 1, **logs))
        comm = self.distributed
        if comm is not None:
            comm.barrier()  # every rank has finished the epoch
        if comm is None or comm.rank == 0:
            save(target, self.model, self.optimizer, epoch=epoch + 1, logs=logs)
        if comm is not None:
            comm.barrier()  # the file exists for every rank
        self.saved.append(target)


class LearningRateScheduler(Callback):
    """Set ``optimizer.lr = schedule(epoch, lr)`` at the start of every epoch (0-based)."""

    def __init__(self, schedule: Callable[[int, float], float]) -> None:
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int) -> None:
        self.optimizer.lr = float(self.schedule(epoch, self.optimizer.lr))


class TerminateOnNaN(Callback):
    """Stop training quietly (no exception) after an epoch whose loss is NaN or infinite."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if not math.isfinite(logs["loss"]):
            self.model.stop_training = True
