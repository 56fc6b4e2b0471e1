"""What the data-parallel tests train, shared by test_distributed.py (one process) and
mpi_worker.py (under mpiexec): the same data, models and arguments on both sides."""

from __future__ import annotations

import numpy as np

import portgd
from portgd import optim
from portgd.callbacks import EarlyStopping
from portgd.schedules import CosineDecay, ExponentialDecay, StepDecay

EPOCHS = 3
BATCH = 16  # 70 training samples: four batches of 16 and a short one of 6

#: name -> (backend, loss, optimizer factory); every optimizer, clipping and schedule
CASES = {
    "sgd": ("numpy", "ce", lambda: optim.SGD(lr=0.1)),
    "momentum": ("numpy", "ce",
                 lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "adagrad": ("numpy", "ce", lambda: optim.AdaGrad(lr=0.05, lr_decay=0.01)),
    "rmsprop": ("numpy", "ce",
                lambda: optim.RMSprop(lr=0.01, centered=True, momentum=0.5)),
    "adam": ("numpy", "ce", lambda: optim.Adam(lr=0.01, amsgrad=True, weight_decay=0.01)),
    "adamw": ("numpy", "ce", lambda: optim.AdamW(lr=0.01)),
    "clip_value": ("numpy", "ce",
                   lambda: optim.SGD(lr=0.1, momentum=0.5, clip_value=0.05)),
    "clip_norm": ("numpy", "ce", lambda: optim.Adam(lr=0.01, clip_norm=0.1)),
    "step_decay": ("numpy", "ce",
                   lambda: optim.SGD(lr=StepDecay(0.2, step_size=4, gamma=0.5))),
    "exponential": ("numpy", "mse", lambda: optim.RMSprop(lr=ExponentialDecay(0.01, 0.95))),
    "cosine": ("numpy", "ce",
               lambda: optim.Adam(lr=CosineDecay(0.02, total_steps=15, warmup_steps=3))),
    "strict_adam": ("array_api_strict", "ce", lambda: optim.Adam(lr=0.01)),
    # reduction="sum": each rank's gradient is a sum, weighted 1, not n_r / B
    "sum_mse": ("numpy", "mse_sum", lambda: optim.SGD(lr=0.002, momentum=0.5)),
    "sum_strict_ce": ("array_api_strict", "ce_sum", lambda: optim.SGD(lr=0.005)),
    # Dropout: every rank draws the global batch's mask and uses its rows; the batch order
    # comes from the same (model) generator, so it must stay in step on every rank
    "dropout": ("numpy", "ce", lambda: optim.SGD(lr=0.1, momentum=0.5)),
    "strict_dropout": ("array_api_strict", "ce", lambda: optim.Adam(lr=0.01)),
    # callbacks that decide: every rank must stop after the same epoch, restore alike
    "early_stopping": ("numpy", "ce", lambda: optim.SGD(lr=0.3, momentum=0.9)),
}

#: name -> (epochs, callbacks factory) for the cases that train differently
SPECIAL = {
    "early_stopping": (12, lambda: [EarlyStopping("val_loss", patience=1, min_delta=0.02,
                                                  restore_best=True)]),
}


def data():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(88, 6))
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 0.8)
    return x, labels


def model(backend="numpy", dropout=None):
    return portgd.mlp(6, [12, 10], 3, output="softmax", seed=3, dtype="float64",
                      backend=backend, dropout=dropout)


def fit(net, opt, loss, distributed=None, epochs=EPOCHS, initial_epoch=0, callbacks=(),
        batch_size=BATCH, x=None):
    xs, labels = data()
    if x is not None:
        xs = x
    targets = labels if loss.startswith("ce") else np.eye(3)[labels]
    loss = {"ce": portgd.losses.CategoricalCrossEntropy(from_logits=False),
            "ce_sum": portgd.losses.CategoricalCrossEntropy(from_logits=False,
                                                            reduction="sum"),
            "mse_sum": portgd.losses.MSE(reduction="sum")}.get(loss, loss)
    return net.fit(xs, targets, loss=loss, optimizer=opt, epochs=epochs, batch_size=batch_size,
                   validation_split=0.2, metrics=["accuracy"], verbose=0,
                   initial_epoch=initial_epoch, callbacks=list(callbacks),
                   distributed=distributed)


def train(name, distributed=None, epochs=EPOCHS, callbacks=()):
    backend, loss, make = CASES[name]
    if name in SPECIAL:
        epochs, extra = SPECIAL[name]
        callbacks = [*callbacks, *extra()]
    net = model(backend, dropout=0.3 if name.endswith("dropout") else None)
    history = fit(net, make(), loss, distributed, epochs=epochs, callbacks=callbacks)
    return net, history


def resume(path, distributed=None):
    saved = portgd.load(path)
    history = fit(saved.model, saved.optimizer, "ce", distributed, initial_epoch=2)
    return saved.model, history


def mismatched(what, comm):
    """A fit in which rank 1 differs from the others in ``what``."""
    odd = comm.rank == 1
    net = portgd.mlp(6, [12, 10], 3, output="softmax", seed=3 + (what == "seed" and odd),
                     dtype="float64", backend="numpy")
    opt = optim.SGD(lr=0.1 + 0.1 * (what == "lr" and odd))
    batch = BATCH + (what == "batch_size" and odd)
    if what == "too_many_ranks":
        batch = comm.size - 1
    x = data()[0]
    if what == "data" and odd:
        x = x.copy()
        x[5, 0] += 1e-9
    fit(net, opt, "ce", comm, epochs=1, batch_size=batch, x=x)
