"""The ``portgd`` command line: train, evaluate, solve, bench, backends.

User errors (a bad option, a missing file, an unusable backend) print one line on stderr
and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, _preflight, check
from ._registry import available_backends, get_backend
from .callbacks import Callback
from .errors import DTypeNotSupportedError, InputError, NonFiniteLossError, PortgdError

INTERNAL_ERROR = 1
USER_ERROR = 2
DIVERGED = 3
DIVERGENCE_FACTOR = 10.0
DEFAULT_DATASET = "digits01"
DEFAULT_SEED = 0
DEFAULT_TEST_SIZE = 0.2
DEFAULT_DTYPE = "float32"
LOSSES = ("auto", "bce", "ce", "mse")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` once: not for options without a default (None, False) and not
    where the help text already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action) or text


class TrainingDiverged(PortgdError):
    """The training loss became non-finite or grew far beyond a guess's (exit status 3)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad options as one line and status 2 (argparse's own code)."""

    def error(self, message: str) -> Any:
        self.exit(USER_ERROR, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _test_size(text: str) -> float | int:
    """A fraction in (0, 1), or a whole number of held-out samples."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value >= 1 and value.is_integer():
        return int(value)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a fraction in (0, 1) or a number of samples, got {text!r}")
    return value


def _nonnegative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _float_in(text: str, low: float, high: float, low_open: bool, high_open: bool,
              what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    inside = math.isfinite(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    if not inside:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _fraction(text: str) -> float:
    return _float_in(text, 0.0, 1.0, False, True, "a number in [0, 1)")


def _nonnegative_float(text: str) -> float:
    return _float_in(text, 0.0, math.inf, False, True, "a finite number >= 0")


def _positive_float(text: str) -> float:
    return _float_in(text, 0.0, math.inf, True, True, "a finite number > 0")


def _hidden(text: str) -> list[int]:
    """``"128,64"`` -> [128, 64]; ``""`` -> [] (no hidden layer: a linear model)."""
    try:
        sizes = [int(part) for part in text.split(",")] if text.strip() else []
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden takes comma-separated layer widths such as 128,64; got {text!r}"
        ) from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"--hidden widths must be positive; got {text!r}")
    return sizes


# -- portgd backends ---------------------------------------------------------------------
def _cmd_backends(args: argparse.Namespace) -> int:
    infos = available_backends()
    if args.json:
        print(json.dumps([info.__dict__ for info in infos], indent=2))
        return 0
    rows = [("backend", "usable", "devices", "version", "float64", "reason")]
    for info in infos:
        rows.append((
            info.name,
            "yes" if info.usable else "no",
            ",".join(info.devices) or "-",
            info.version or "-",
            {True: "yes", False: "no", None: "-"}[info.float64],
            info.reason or "",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    return 0


# -- portgd train --------------------------------------------------------------------------
def _loss_and_output(loss: str, num_classes: int | None) -> tuple[str, str, int]:
    """(loss name, output activation, output width) for a task."""
    if loss == "auto":
        loss = "mse" if num_classes is None else ("bce" if num_classes == 2 else "ce")
    if loss == "bce":
        if num_classes != 2:
            raise InputError(
                f"--loss bce needs a two-class dataset; this one has "
                f"{num_classes or 'continuous'} targets. Use --loss ce or --loss mse."
            )
        return loss, "sigmoid", 1
    if loss == "ce":
        if num_classes is None:
            raise InputError("--loss ce needs class labels; this dataset is a regression task")
        return loss, "softmax", num_classes
    if num_classes is not None:
        raise InputError("--loss mse needs continuous targets; for class labels use bce or ce")
    return loss, "identity", 1


def _download_option(args: argparse.Namespace) -> dict[str, Any]:
    spec = args.dataset or ""
    if args.download and args.data:
        raise InputError("--download applies to --dataset mnist:PATH, not to --data")
    if args.download and not spec.startswith("mnist"):
        raise InputError("--download applies to --dataset mnist:PATH only")
    return {"download": True} if args.download else {}


def _recorded(meta: dict[str, Any], checkpoint: str) -> dict[str, Any]:
    """The training settings a checkpoint's metadata records, each checked (absent: None).

    ``portgd train --save`` records ``dataset`` or ``data`` (with ``target``, ``features``
    and ``classes``), ``loss``, ``split`` (``seed``, ``test_size``) and ``epoch``; a value of
    another type (an edited or damaged file) is a CheckpointError here rather than a failure
    deep inside training, evaluation or prediction.
    """
    from .errors import CheckpointError

    split = meta.get("split") or {}
    wrong = [] if isinstance(split, dict) else [f"split={split!r}"]
    split = split if isinstance(split, dict) else {}
    settings = {key: meta.get(key) for key in ("dataset", "data", "target", "features",
                                               "classes", "epoch")}
    settings.update(loss=meta.get("loss") or None, seed=split.get("seed"),
                    test_size=split.get("test_size"))

    def text(v: Any) -> bool:
        return isinstance(v, str) and bool(v)

    def number(v: Any) -> bool:
        return type(v) in (int, float)

    valid = {
        "dataset": text,
        "data": text,
        "target": lambda v: text(v) or type(v) is int,
        "features": lambda v: isinstance(v, list) and all(text(f) for f in v),
        "classes": lambda v: isinstance(v, list) and len(v) >= 2
        and all(text(c) or number(c) for c in v),
        "loss": lambda v: v in LOSSES[1:],
        "seed": lambda v: type(v) is int and v >= 0,
        "test_size": lambda v: number(v) and _test_size(str(v)) == v,
        "epoch": lambda v: type(v) is int and v >= 0,
    }
    wrong += [f"{key}={value!r}" for key, value in settings.items()
              if value is not None and not _accepts(valid[key], value)]
    if wrong:
        raise CheckpointError(
            f"{checkpoint} records {', '.join(wrong)} in its metadata, which portgd train never "
            f"writes; the file is damaged or edited: pass the settings as options (--dataset "
            f"or --data, --loss, --seed, --test-size) or save the checkpoint again"
        )
    return settings


def _accepts(check: Any, value: Any) -> bool:
    try:
        return bool(check(value))
    except argparse.ArgumentTypeError:
        return False


def _resolve_data_settings(args: argparse.Namespace, recorded: dict[str, Any]) -> None:
    """Dataset and held-out split: the options given, else the checkpoint's, else defaults.

    ``recorded`` comes from :func:`_recorded`. Resuming or evaluating with the split the
    model was trained with keeps its training samples out of the held-out figures.
    """
    if args.dataset is not None and args.data is not None:
        raise InputError("give --dataset or --data, not both")
    if args.dataset is None and args.data is None:
        if recorded.get("data"):
            args.data = recorded["data"]
            if args.target is None:
                args.target = recorded.get("target")
        else:
            args.dataset = recorded.get("dataset") or DEFAULT_DATASET
    if args.data is None and args.target is not None:
        raise InputError("--target names a column of a --data file; the built-in datasets "
                         "have their targets already")
    if args.loss == "auto" and recorded.get("loss"):
        args.loss = recorded["loss"]
    if args.seed is None:
        args.seed = DEFAULT_SEED if recorded.get("seed") is None else recorded["seed"]
    if args.test_size is None:
        args.test_size = recorded.get("test_size") or DEFAULT_TEST_SIZE


def _load_data(args: argparse.Namespace, backend: Any, dtype: str,
               classes: Sequence[Any] | None = None) -> Any:
    """The --dataset or the --data file; a file's task follows --loss (mse: regression)."""
    from . import datasets

    options = _download_option(args)
    if args.data is None:
        return datasets.load(args.dataset, backend=backend, dtype=dtype, **options)
    task = {"mse": "regression", "bce": "classification", "ce": "classification"}
    return datasets.from_file(args.data, args.target, task=task.get(args.loss, "auto"),
                              classes=classes, backend=backend, dtype=dtype)


def _source(args: argparse.Namespace) -> str:
    """How the messages name the data: ``--dataset SPEC`` or ``--data FILE``."""
    return f"--data {args.data}" if args.data is not None else f"--dataset {args.dataset}"


def _data_metadata(args: argparse.Namespace, data: Any) -> dict[str, Any]:
    """What predict, evaluate and --resume need to read a --data file the same way."""
    if args.data is None:
        return {"dataset": args.dataset}
    return {"dataset": None, "data": args.data, "target": data.info.get("target"),
            "features": list(data.info.get("features", ())),
            "classes": data.info.get("classes")}


def _split(args: argparse.Namespace, data: Any) -> tuple[Any, Any]:
    """(train, held-out): the same split for train, --resume and evaluate."""
    return data.split(args.test_size, seed=args.seed, stratify=data.num_classes is not None)


def _check_fits(model: Any, data: Any, outputs: int, checkpoint: str, source: str) -> None:
    if model.in_features != data.n_features or model.out_features != outputs:
        raise InputError(
            f"the checkpoint {checkpoint} is a model for {model.in_features} features and "
            f"{model.out_features} output(s); {source} has {data.n_features} features "
            f"and needs {outputs} output(s)"
        )


def _model_task(model: Any, data: Any, checkpoint: str, source: str) -> None:
    """Refuse data whose classes the model cannot output, naming the model's own task."""
    classes, outputs = data.num_classes, model.out_features
    if classes is None or outputs in (classes, 1 if classes == 2 else classes):
        return
    task = "a two-class model (one sigmoid output)" if outputs == 1 else (
        f"a {outputs}-class model")
    raise InputError(
        f"the checkpoint {checkpoint} is {task}, but {source} has {classes} classes; "
        f"evaluate it on data with {2 if outputs == 1 else outputs} classes"
    )


def _metrics(data: Any) -> tuple[str, ...]:
    return () if data.num_classes is None else ("accuracy",)


def _loss_object(loss: str) -> Any:
    """The model ends in the activation the loss fuses with, so losses take probabilities."""
    from . import losses

    if loss == "bce":
        return losses.BinaryCrossEntropy(from_logits=False)
    if loss == "ce":
        return losses.CategoricalCrossEntropy(from_logits=False)
    return losses.MSE()


def _targets_for(loss: str, y: Any, xp: Any) -> Any:
    """Class indices stay labels for CE; BCE and MSE take float targets shaped (N, 1)."""
    return y if loss == "ce" else xp.reshape(y, (-1, 1))


def _reference_loss(model: Any, loss: str, data: Any, targets: Any, batch_size: int) -> float:
    """What a diverging run is measured against: the larger of the untrained model's loss on
    ``data`` and an uninformed guess's (``log k`` for k classes, the mean target variance for
    MSE; at least 1e-3). A model that starts far off (a regression target of small scale, say)
    may have a first-epoch loss far above the guess's and still be converging."""
    if loss in ("bce", "ce"):
        guess = math.log(data.num_classes)
    else:
        host = data.backend.to_numpy(data.y)
        guess = max(float(host.var(axis=0).mean()) if host.size else 1.0, 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        start = model.evaluate(data.X, targets, loss=_loss_object(loss),
                               batch_size=batch_size)["loss"]
    return max(start, guess) if math.isfinite(start) else guess


class _DivergenceGuard(Callback):
    """Stops training (or, with ``keep_going``, notes it) when the epoch's training loss is
    NaN, infinite or more than ``DIVERGENCE_FACTOR`` times ``reference``: the larger of the
    untrained model's loss and an uninformed guess's (see :func:`_reference_loss`)."""

    def __init__(self, reference: float, lr: float, keep_going: bool, advice: str = "") -> None:
        self.limit = DIVERGENCE_FACTOR * reference
        self.advice = advice
        self.reference, self.lr, self.keep_going = reference, lr, keep_going
        self.message: str | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        value = logs["loss"]
        if self.message is not None or (math.isfinite(value) and value <= self.limit):
            return
        self.message = (
            f"training diverged in epoch {epoch + 1}: the training loss reached {value:.4g}, "
            f"more than {DIVERGENCE_FACTOR:g} times the {self.reference:.4g} it started from "
            f"(the untrained model's loss, or an uninformed guess's if larger). Lower --lr "
            f"(it is {self.lr:g}; try {self.lr / 10:g}) or add --clip-norm "
            f"1{self.advice}; --keep-going trains on regardless"
        )
        if not self.keep_going:  # decided from the global logs: alike on every rank
            exc = TrainingDiverged(self.message)
            raise exc if self.distributed is None else self.distributed.raised_everywhere(exc)


def _dense_widths(model: Any) -> list[int]:
    from .layers import Dense

    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    return [dense[0].in_features, *(layer.out_features for layer in dense)] if dense else []


def _check_memory(widths: list[int], args: argparse.Namespace, train: Any, test: Any,
                  optimizer: Any, backend: Any) -> None:
    estimate = _preflight.training_memory(
        widths, batch_size=args.batch_size, n_train=train.n_samples, n_eval=test.n_samples,
        n_targets=widths[-1] if widths else 1, itemsize=8 if args.dtype == "float64" else 4,
        optimizer_slots=len(optimizer.state_keys()))
    _preflight.check_memory(estimate, backend)


def _fit_quietly(model: Any, guard: _DivergenceGuard, callbacks: list[Any],
                 **options: Any) -> Any:
    """``model.fit`` with NumPy's overflow warnings kept from the user: divergence is
    reported by ``guard`` (or fit's NonFiniteLossError) in portgd's words instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            return model.fit(callbacks=[guard, *callbacks],
                             stop_on_nonfinite=not guard.keep_going, **options)
        except NonFiniteLossError as exc:  # the guard normally speaks first
            diverged = TrainingDiverged(guard.message or str(exc))
            comm = options.get("distributed")  # fit raises it on every rank alike
            raise diverged if comm is None else comm.raised_everywhere(diverged) from None


def _save_interrupted(args: argparse.Namespace, stop: Any, last: Any, model: Any,
                      optimizer: Any, metadata: dict[str, Any]) -> int:
    """After Ctrl-C or SIGTERM stopped ``fit`` between two steps: save the last completed
    epoch (with --save) and say so. Runs while ``stop`` still records further signals."""
    from .checkpoint import save

    if last is None or last.epoch is None:
        note = ("; no epoch had finished, nothing saved" if args.save else "")
    else:
        last.restore(model, optimizer)
        save(args.save, model, optimizer, epoch=last.epoch, **metadata)
        note = (f"; the last completed epoch ({last.epoch}) is saved in {args.save}: "
                f"continue with portgd train --resume {args.save}")
    print(f"portgd: {stop.what}{note}", file=sys.stderr, flush=True)
    return stop.status


def _final_figures(model: Any, history: Any, validation: Any, test: Any, loss: str,
                   metrics: Any, xp: Any) -> dict[str, float]:
    """Loss and metrics on the held-out data after training."""
    if validation is test:  # the held-out part was the validation data: its last figures
        return {name[len("val_"):]: values[-1] for name, values in history.history.items()
                if name.startswith("val_")}
    return model.evaluate(test.X, _targets_for(loss, test.y, xp), loss=_loss_object(loss),
                          metrics=metrics)


def _new_model(args: argparse.Namespace, train: Any, outputs: int, output: str,
               backend: Any) -> Any:
    from .model import mlp

    return mlp(train.n_features, args.hidden, outputs, activation=args.activation,
               output=output, seed=args.seed, dtype=args.dtype, backend=backend,
               dropout=args.dropout)


def _over_ranks(command: Any) -> Any:
    """``command(args)``; with ``--distributed``, data-parallel over the ranks of ``mpiexec``
    (``args.comm``, a Communicator; None otherwise): only rank 0 prints to stdout and writes
    files, and a failure on one rank ends the whole job instead of a hang.

    An error every rank raises alike (a refusal of the arguments or data before training,
    divergence) propagates, is printed by rank 0 only and gives the usual exit status; an
    error raised before ``fit`` is first compared with the other ranks
    (``Communicator.failed_before_agreeing``)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        args.comm = None
        if not args.distributed:
            _warn_if_launched_as_many()
            return command(args)
        from .distributed import Communicator

        args.comm = Communicator()
        quiet = contextlib.nullcontext() if args.comm.rank == 0 else contextlib.redirect_stdout(
            open(os.devnull, "w"))  # closed when the process exits
        try:
            with args.comm.fault_guard(), quiet:
                try:
                    return command(args)
                except Exception as exc:
                    args.comm.failed_before_agreeing(exc)
                    raise
        except PortgdError as exc:  # raised on every rank alike: rank 0 reports it
            exc.reported_elsewhere = args.comm.rank != 0  # type: ignore[attr-defined]
            raise

    return run


def _warn_if_launched_as_many() -> None:
    """One line (from rank 0) when an MPI launcher started several copies of this command
    without --distributed: each trains its own model and writes the same files."""
    from ._launcher import launched_as

    rank, size = launched_as()
    if size > 1 and rank == 0:
        print(f"portgd: warning: started by an MPI launcher as {size} processes without "
              f"--distributed: each process trains its own copy and writes the same files; "
              f"add --distributed to train one model with all of them", file=sys.stderr,
              flush=True)


@_over_ranks
def _cmd_train(args: argparse.Namespace) -> int:
    from . import _runs, optim
    from .callbacks import EarlyStopping
    from .checkpoint import load, save

    if args.save is not None:
        _preflight.output_file(args.save, "--save", (".npz",))
    if args.plot is not None:
        _preflight.plot_file(args.plot)
    if args.restore_best and args.patience is None:
        raise InputError("--restore-best applies to early stopping: give --patience N too")
    backend = get_backend(args.backend, args.device)
    resumed = load(args.resume, backend=backend) if args.resume else None
    if resumed is not None and _runs.given_optimizer_options(args):
        raise InputError(
            f"with --resume the optimizer and its settings come from the checkpoint; leave "
            f"out {', '.join(_runs.given_optimizer_options(args))}"
        )
    recorded = _recorded(resumed.metadata, args.resume) if resumed else {}
    _resolve_data_settings(args, recorded)
    if resumed is not None and args.dtype not in (None, resumed.model.dtype_name):
        raise InputError(
            f"--dtype {args.dtype} differs from the dtype of the checkpoint {args.resume} "
            f"({resumed.model.dtype_name}); a resumed model keeps its dtype: leave out --dtype"
        )
    if args.dtype is None:
        args.dtype = resumed.model.dtype_name if resumed else DEFAULT_DTYPE
    classes = recorded["classes"] if resumed and args.data else None
    train, test = _split(args, _load_data(args, backend, args.dtype, classes))
    validation = test
    if args.validation_fraction:
        train, validation = train.split(args.validation_fraction, seed=args.seed,
                                        stratify=train.num_classes is not None)
    loss, output, outputs = _loss_and_output(args.loss, train.num_classes)
    if args.batch_size > train.n_samples:
        raise InputError(f"--batch-size {args.batch_size} is larger than the {train.n_samples} "
                         f"training samples; use --batch-size {train.n_samples} or less")
    steps_per_epoch = math.ceil(train.n_samples / args.batch_size)
    if resumed is not None:
        model, optimizer, _ = resumed
        _check_fits(model, train, outputs, args.resume, _source(args))
        first_epoch = recorded["epoch"] or 0
        if optimizer is None:
            optimizer = optim.make_optimizer(args.optimizer, lr=args.lr)
        _check_memory(_dense_widths(model), args, train, test, optimizer, backend)
        base_lr = optimizer.lr
    else:
        optimizer = _runs.optimizer_from_options(args, steps_per_epoch)
        _check_memory([train.n_features, *args.hidden, outputs], args, train, test,
                      optimizer, backend)
        model = _new_model(args, train, outputs, output, backend)
        first_epoch, base_lr = 0, args.lr
    metrics = _metrics(train)
    xp = backend.xp
    if not args.json:
        print(f"portgd {__version__}: {train.name} ({train.n_samples} train, "
              f"{test.n_samples} test, {train.n_features} features) on "
              f"{'' if args.comm is None else f'{args.comm.size} ranks of '}{backend.name} "
              f"{backend.device_name}; {model.num_parameters()} parameters, loss {loss}, "
              f"optimizer {type(optimizer).__name__} lr={base_lr:g}"
              f"{_runs.describe_schedule(args) if resumed is None else ''}")
    reference = _reference_loss(model, loss, train, _targets_for(loss, train.y, xp),
                                args.batch_size)
    guard = _DivergenceGuard(reference, base_lr, args.keep_going, "" if (
        args.data is None) else f", and scale the columns of {args.data} to similar ranges")
    early = None if args.patience is None else EarlyStopping(
        "val_loss", patience=args.patience, restore_best=args.restore_best)
    last = _runs.LastEpoch() if args.save else None
    metadata = {"split": {"seed": args.seed, "test_size": args.test_size}, "loss": loss,
                **_data_metadata(args, train)}
    writes = args.comm is None or args.comm.rank == 0  # the ranks hold the same model
    # From here until the checkpoint is written, Ctrl-C and SIGTERM are requests that fit
    # answers between two steps; the run then saves its last consistent state.
    with _runs.SignalStop() as stop:
        try:
            history = _fit_quietly(
                model, guard, [c for c in (early, last, stop) if c is not None],
                x=train.X, y=_targets_for(loss, train.y, xp), loss=_loss_object(loss),
                optimizer=optimizer, epochs=first_epoch + args.epochs,
                initial_epoch=first_epoch, batch_size=args.batch_size, metrics=metrics,
                verbose=0 if args.json or args.quiet else 1,
                validation_data=(validation.X, _targets_for(loss, validation.y, xp)),
                distributed=args.comm,
            )
        except _runs.Interrupted:
            return _save_interrupted(args, stop, last, model, optimizer, metadata)
        epochs_done = first_epoch + len(history)
        if args.save and writes:  # before the evaluation: a finished run is never lost
            save(args.save, model, optimizer, epoch=epochs_done, **metadata)
        stop.immediate = True  # the run is saved: a signal now ends the evaluation at once
        try:
            if stop.signum is None:
                final = _final_figures(model, history, validation, test, loss, metrics, xp)
            if args.plot and writes and stop.signum is None:
                history.plot(args.plot)
        except _runs.Interrupted:
            pass
        if stop.signum is not None:
            note = (f" after the checkpoint of all {epochs_done} epochs was written to "
                    f"{args.save}" if args.save else "")
            print(f"portgd: {stop.what}{note}", file=sys.stderr, flush=True)
            return stop.status
    if guard.message is not None:
        print(f"portgd: warning: {guard.message.split('. Lower')[0]}; kept going (--keep-going)",
              file=sys.stderr)
    summary = {
        "dataset": args.dataset or args.data, "backend": backend.name,
        "device": backend.device_name, "dtype": args.dtype, "epochs": epochs_done,
        "parameters": model.num_parameters(),
        "train_loss": history["loss"][-1], "test_loss": final["loss"],
        "test_accuracy": final.get("accuracy"), "history": history.to_dict(),
        "saved": args.save, "plot": args.plot,
        "stopped_early": None if early is None or early.stopped_epoch is None else {
            "epoch": early.stopped_epoch + 1,
            "best_epoch": None if early.best_epoch is None else early.best_epoch + 1,
            "restored": bool(args.restore_best and early.best_state is not None)},
    }
    if args.json:
        print(json.dumps(summary))
    else:
        stopped = summary["stopped_early"]
        if stopped:
            restored = (f"; the weights of epoch {stopped['best_epoch']} are restored"
                        if stopped["restored"] else "")
            print(f"stopped early after epoch {stopped['epoch']}: val_loss has not improved "
                  f"for {args.patience} epoch(s){restored}")
        accuracy = final.get("accuracy")
        result = f"held-out accuracy {accuracy:.4f}" if accuracy is not None else (
            f"held-out loss {final['loss']:.6g}")
        print(f"done: {epochs_done} epochs, {result} on {test.n_samples} samples")
        for what, where in (("checkpoint", args.save), ("plot", args.plot)):
            if where:
                print(f"{what} written to {where}")
    return 0


# -- portgd evaluate -----------------------------------------------------------------------
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import load

    backend = get_backend(args.backend, args.device)
    model, _, meta = load(args.checkpoint, backend=backend)
    recorded = _recorded(meta, args.checkpoint)
    if args.dataset is None and args.data is None and not (recorded["dataset"]
                                                            or recorded["data"]):
        raise InputError(
            f"{args.checkpoint} does not record its dataset (it was not saved by portgd "
            f"train); pass --dataset, e.g. --dataset digits, or --data FILE"
        )
    _resolve_data_settings(args, recorded)
    data = _load_data(args, backend, model.dtype_name, recorded["classes"] if args.data else None)
    if args.split == "test":
        _, data = _split(args, data)
    _model_task(model, data, args.checkpoint, _source(args))
    loss, _, outputs = _loss_and_output(args.loss, data.num_classes)
    _check_fits(model, data, outputs, args.checkpoint, _source(args))
    result = model.evaluate(data.X, _targets_for(loss, data.y, backend.xp), loss=_loss_object(loss),
                            metrics=_metrics(data))
    result = {"dataset": args.dataset or args.data, "samples": data.n_samples, **result}
    if args.json:
        print(json.dumps(result))
    else:
        print("  ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in result.items()))
    return 0


# -- portgd predict ------------------------------------------------------------------------
def _cmd_predict(args: argparse.Namespace) -> int:
    from .checkpoint import load
    from .datasets import read_table
    from .io.predictions import prediction_table, write_predictions

    output = None
    if args.output is not None:
        output = _preflight.output_file(args.output, "--output", (".csv", ".npy"))
    backend = get_backend(args.backend, args.device)
    model, _, meta = load(args.checkpoint, backend=backend)
    recorded = _recorded(meta, args.checkpoint)
    names = recorded["features"] if Path(args.data).suffix.lower() == ".csv" else None
    table = read_table(args.data, need_target=False, features=names)
    if table.X.shape[1] != model.in_features:
        raise InputError(
            f"{args.data} has {table.X.shape[1]} feature columns but the checkpoint "
            f"{args.checkpoint} is a model for {model.in_features} features"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        outputs = backend.to_numpy(model.predict(table.X, batch_size=args.batch_size))
    columns, predicted, values = prediction_table(model, outputs, recorded["classes"])
    try:
        write_predictions(output, columns, predicted, values, stream=sys.stdout)
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror or exc}") from None
    if output is not None:
        print(f"{len(values)} predictions written to {output}")
    return 0


# -- portgd summary ------------------------------------------------------------------------
def _cmd_summary(args: argparse.Namespace) -> int:
    from .checkpoint import load

    backend = get_backend(args.backend, args.device)
    model, optimizer, meta = load(args.checkpoint, backend=backend)
    if args.json:
        print(json.dumps({
            "layers": [{"type": type(layer).__name__, **layer.config()} for layer in model.layers],
            "parameters": model.num_parameters(), "dtype": model.dtype_name,
            "backend": backend.name, "device": backend.device_name,
            "optimizer": None if optimizer is None else {
                "type": type(optimizer).__name__, "steps": optimizer.step_count,
                **optimizer.config()},
            "metadata": meta}))
        return 0
    print(f"checkpoint {args.checkpoint}")
    print(model.summary())
    if optimizer is not None:
        print(f"optimizer {type(optimizer).__name__}, {optimizer.step_count} steps taken, "
              f"next lr {optimizer.lr:g}")
    shown = {k: v for k, v in meta.items() if k in ("epoch", "dataset", "data", "target",
                                                    "loss", "split") and v is not None}
    if shown:
        print("recorded: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return 0


# -- portgd solve --------------------------------------------------------------------------
WORKED_A = [[5.0, 1.0, -1.0], [2.0, -1.0, 1.0], [1.0, 3.0, -2.0]]
WORKED_Y = [1.0, 4.0, 0.0]


def _matrix_file(path: str, what: str) -> Any:
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise InputError(f"{what} file {path} does not exist")
    try:
        if file.suffix == ".npy":
            return np.load(file, allow_pickle=False)
        return np.loadtxt(file, delimiter=",", ndmin=1)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read {what} from {path}: {exc or type(exc).__name__}") from None


def _cmd_solve(args: argparse.Namespace) -> int:
    from .linear import divergence_message, lr_limit, solve_linear

    if (args.A is None) != (args.Y is None):
        raise InputError("give both --A and --Y, or neither for the worked 3x3 example")
    A = WORKED_A if args.A is None else _matrix_file(args.A, "--A")
    Y = WORKED_Y if args.Y is None else _matrix_file(args.Y, "--Y")
    backend = get_backend(args.backend, args.device)
    result = solve_linear(A, Y, lr=args.lr, iters=args.iters, log_every=args.log_every,
                          backend=backend, dtype=args.dtype)
    x = backend.to_numpy(result.x)
    if result.diverged:
        with backend.activate():
            limit = lr_limit(backend, backend.asarray(A, dtype=args.dtype))
        raise InputError(divergence_message(result.losses, result.iterations, limit))
    if args.json:
        print(json.dumps({"x": x.tolist(), "iterations": result.iterations,
                          "losses": result.losses}))
        return 0
    for iteration, loss in zip(result.iterations, result.losses, strict=True):
        print(f"iteration {iteration:>8d}  loss {loss:.12g}")
    print("x =", " ".join(f"{v:.10g}" for v in x.ravel()))
    return 0


# -- portgd bench --------------------------------------------------------------------------
def _cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    cases = bench.select_cases(args.case)
    backends = bench.usable_backends(args.backend)
    if args.device is not None:
        backends = [get_backend(b.name, args.device) for b in backends]
    if not args.json:
        print(f"portgd {__version__} bench: median of {args.repeats} timed epoch(s) of "
              f"{args.steps} steps after a warm-up epoch, {args.dtype}, {args.optimizer}")
    report = None if args.json else (lambda result: print(bench.format_row(result), flush=True))
    results = bench.run(backends, cases, large=args.large, dtype=args.dtype, steps=args.steps,
                        repeats=args.repeats, optimizer=args.optimizer, report=report)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    return 0


# -- parser --------------------------------------------------------------------------------
def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default=None,
                        help="numpy, torch, cupy, array_api_strict, ... (default: "
                             "PORTGD_BACKEND, else numpy)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda:0, device1, ... (default: PORTGD_DEVICE when no "
                             "--backend is given, else the backend's default device)")


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="FILE", default=None,
                        help="your own data instead of --dataset: a .csv file with a header "
                             "row, a .npy table or an .npz file with X and y")
    parser.add_argument("--target", metavar="COLUMN", default=None,
                        help="the target column of --data, by name or index (default: the "
                             "last column)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="portgd",
        description="Gradient descent and MLPs on NumPy, CuPy, PyTorch or any array-API backend.",
    )
    parser.add_argument("--version", action="version", version=f"portgd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    formatter = _HelpFormatter
    commands.required = True

    backends = commands.add_parser("backends", formatter_class=formatter,
                                   help="list registered backends and their status")
    backends.add_argument("--json", action="store_true", help="machine-readable output")
    backends.set_defaults(run=_cmd_backends)

    train = commands.add_parser(
        "train", formatter_class=formatter, help="train an MLP (default: digits 0-vs-1)",
        description="Train a multi-layer perceptron and report held-out accuracy.")
    _where(train)
    train.add_argument("--dataset", default=None,
                       help=f"digits | digits01 | mnist:PATH | synthetic (default: "
                            f"{DEFAULT_DATASET}, or the --resume checkpoint's)")
    train.add_argument("--download", action="store_true",
                       help="with mnist:PATH, fetch the MNIST files into PATH if missing "
                            "(checked against their SHA-256)")
    _data_options(train)
    train.add_argument("--hidden", type=_hidden, default="64,32",
                       help="hidden layer widths, comma-separated ('' for none)")
    train.add_argument("--activation", default="relu",
                       choices=["relu", "leaky_relu", "tanh", "sigmoid", "gelu", "identity"],
                       help="between hidden layers")
    train.add_argument("--dropout", type=_fraction, default=0.0, metavar="RATE",
                       help="drop each hidden unit with this probability while training "
                            "(inverted dropout; predict and evaluate use every unit)")
    train.add_argument("--loss", default="auto", choices=LOSSES,
                       help="auto: the --resume checkpoint's, else bce for two classes, ce for "
                            "more, mse for regression")
    train.add_argument("--optimizer", default="adam",
                       choices=["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"],
                       help="the update rule")
    train.add_argument("--lr", type=_positive_float, default=1e-3,
                       help="learning rate (ignored with --resume: the checkpoint's)")
    train.add_argument("--momentum", type=_fraction, default=None,
                       help="momentum of sgd, momentum and rmsprop (default: 0.9 for "
                            "--optimizer momentum, else 0)")
    train.add_argument("--nesterov", action="store_true",
                       help="Nesterov momentum (sgd with --momentum, or momentum)")
    train.add_argument("--weight-decay", type=_nonnegative_float, default=None,
                       help="L2 penalty coefficient (default: the optimizer's: 0.01 for "
                            "adamw, else 0); decoupled for adamw")
    train.add_argument("--clip-norm", type=_positive_float, default=None,
                       help="rescale each step's gradients to a global L2 norm of at most "
                            "this (default: no clipping)")
    train.add_argument("--clip-value", type=_positive_float, default=None,
                       help="clip each gradient element to [-value, value] (default: no "
                            "clipping)")
    train.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                       help="learning rate over the run: constant, or cosine decay from --lr "
                            "to --min-lr")
    train.add_argument("--warmup", type=_nonnegative, default=0, metavar="EPOCHS",
                       help="raise the learning rate linearly from 0 to --lr over the first "
                            "EPOCHS epochs")
    train.add_argument("--min-lr", type=_nonnegative_float, default=None,
                       help="the rate --schedule cosine ends at (default: 0)")
    train.add_argument("--patience", type=_positive, default=None, metavar="EPOCHS",
                       help="early stopping: stop when val_loss has not improved for EPOCHS "
                            "epochs (default: train every epoch)")
    train.add_argument("--restore-best", action="store_true",
                       help="with --patience: end with the weights of the best epoch")
    train.add_argument("--validation-fraction", type=_fraction, default=0.0,
                       metavar="FRACTION",
                       help="hold this fraction of the training part out as validation data "
                            "(for --patience), keeping the held-out test part unseen; 0: the "
                            "held-out part is the validation data")
    train.add_argument("--epochs", type=_positive, default=20,
                       help="epochs to train (with --resume: epochs added to the checkpoint's)")
    train.add_argument("--batch-size", type=_positive, default=32,
                       help="samples per step, at most the number of training samples")
    train.add_argument("--test-size", type=_test_size, default=None,
                       help=f"held-out fraction, also the validation data (default: "
                            f"{DEFAULT_TEST_SIZE}, or the --resume checkpoint's)")
    train.add_argument("--seed", type=_nonnegative, default=None,
                       help=f"seeds the weights, the split and the batch order (default: "
                            f"{DEFAULT_SEED}, or the --resume checkpoint's)")
    train.add_argument("--dtype", default=None, choices=["float32", "float64"],
                       help=f"of data and parameters (default: {DEFAULT_DTYPE}, or the "
                            f"--resume checkpoint's, which a resumed model keeps)")
    train.add_argument("--save", metavar="PATH",
                       help="write a checkpoint (.npz) after training")
    train.add_argument("--resume", metavar="PATH", help="continue from a checkpoint")
    train.add_argument("--plot", metavar="PNG", help="draw the training curves")
    train.add_argument("--json", action="store_true", help="print a JSON summary only")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--keep-going", action="store_true",
                       help="train on when the loss diverges (exit 0 with a warning) instead "
                            "of stopping with exit status 3")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over the processes of mpiexec (needs mpi4py: "
                            "pip install 'portgd[mpi]'); only rank 0 prints and writes")
    train.set_defaults(run=_cmd_train)

    evaluate = commands.add_parser("evaluate", formatter_class=formatter,
                                   help="evaluate a checkpoint on a dataset")
    evaluate.add_argument("checkpoint")
    _where(evaluate)
    evaluate.add_argument("--dataset", default=None,
                          help="dataset spec (default: the one saved in the checkpoint)")
    evaluate.add_argument("--download", action="store_true",
                          help="with mnist:PATH, fetch the MNIST files if missing")
    _data_options(evaluate)
    evaluate.add_argument("--split", choices=["test", "all"], default="test",
                          help="the held-out part (same split as train) or all samples")
    evaluate.add_argument("--test-size", type=_test_size, default=None,
                          help="held-out fraction (default: the checkpoint's, else "
                               f"{DEFAULT_TEST_SIZE})")
    evaluate.add_argument("--seed", type=_nonnegative, default=None,
                          help=f"split seed (default: the checkpoint's, else {DEFAULT_SEED})")
    evaluate.add_argument("--loss", default="auto", choices=LOSSES,
                          help="auto: the checkpoint's, else chosen from the dataset")
    evaluate.add_argument("--json", action="store_true", help="print a JSON object")
    evaluate.set_defaults(run=_cmd_evaluate)

    predict = commands.add_parser(
        "predict", formatter_class=formatter, help="predict with a checkpoint on a data file",
        description="Write a checkpoint's predictions for the samples of a data file: the "
                    "class and each class's probability, or the predicted values.")
    predict.add_argument("checkpoint", help="a .npz checkpoint written by portgd train --save")
    _where(predict)
    predict.add_argument("--data", metavar="FILE", required=True,
                         help="the samples: .csv with a header (the model's feature columns, "
                              "by name when it was trained on a CSV file), .npy or .npz (X)")
    predict.add_argument("--output", metavar="FILE", default=None,
                         help="a .csv or .npy file (default: CSV on stdout)")
    predict.add_argument("--batch-size", type=_positive, default=1024,
                         help="samples per forward pass")
    predict.set_defaults(run=_cmd_predict)

    summary = commands.add_parser(
        "summary", formatter_class=formatter, help="describe a checkpoint's model",
        description="Print a checkpoint's layers, output shapes, parameter counts, dtype, "
                    "optimizer and recorded training settings.")
    summary.add_argument("checkpoint", help="a .npz checkpoint")
    _where(summary)
    summary.add_argument("--json", action="store_true", help="print a JSON object")
    summary.set_defaults(run=_cmd_summary)

    bench_cmd = commands.add_parser(
        "bench", formatter_class=formatter, help="training throughput on every usable backend",
        description="Median training throughput (ms/step, samples/s) of MLP shapes.")
    bench_cmd.add_argument("--backend", action="append", default=None,
                           help="a backend to run (repeatable; default: every usable one)")
    bench_cmd.add_argument("--device", default=None, help="device for the chosen backends")
    bench_cmd.add_argument("--case", action="append", default=None,
                           help="a substring of a case name (repeatable; default: all)")
    bench_cmd.add_argument("--large", action="store_true",
                           help="also run the 4096-wide case on CPU backends")
    bench_cmd.add_argument("--steps", type=_positive, default=50, help="steps per epoch")
    bench_cmd.add_argument("--repeats", type=_positive, default=5, help="timed epochs")
    bench_cmd.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                           help="of data and parameters")
    bench_cmd.add_argument("--optimizer", default="sgd",
                           choices=["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"],
                           help="the update rule (learning rate 0.01)")
    bench_cmd.add_argument("--json", action="store_true", help="print a JSON list")
    bench_cmd.set_defaults(run=_cmd_bench)

    solve = commands.add_parser("solve", formatter_class=formatter,
                                help="solve A x = Y by gradient descent")
    _where(solve)
    solve.add_argument("--A", metavar="FILE", help=".npy or CSV matrix (default: worked 3x3)")
    solve.add_argument("--Y", metavar="FILE", help=".npy or CSV right-hand side")
    solve.add_argument("--lr", type=float, default=0.01, help="step size")
    solve.add_argument("--iters", type=_positive, default=10_000, help="gradient steps")
    solve.add_argument("--log-every", type=_positive, default=1000,
                       help="record the loss every this many iterations")
    solve.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                       help="of A, Y and x")
    solve.add_argument("--json", action="store_true", help="print a JSON object")
    solve.set_defaults(run=_cmd_solve)

    check.add_parser(commands, formatter)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except TrainingDiverged as exc:
        _report(exc)
        return DIVERGED
    except PortgdError as exc:
        _report(exc)
        return USER_ERROR
    except MemoryError:
        print("portgd: error: out of memory; use smaller --hidden widths, a smaller "
              "--batch-size or --dtype float32", file=sys.stderr)
        return USER_ERROR
    except BrokenPipeError:  # the reader went away (portgd backends --json | head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("portgd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, with the traceback on request
        if os.environ.get("PORTGD_DEBUG"):
            raise
        print(f"portgd: internal error: {type(exc).__name__}: {_one_line(exc)}. This is a bug "
              f"in portgd; please report it (PORTGD_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return INTERNAL_ERROR


def _report(exc: PortgdError) -> None:
    """``portgd: error: ...`` on stderr, unless another rank of ``--distributed`` says it."""
    if getattr(exc, "reported_elsewhere", False):
        return
    message = _one_line(exc)
    if isinstance(exc, DTypeNotSupportedError):  # the Python advice, in command-line terms
        for name in exc.alternatives:
            message = message.replace(f"dtype={name!r}", f"--dtype {name}")
    print(f"portgd: error: {message}", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
