"""Data-parallel ``fit`` in one process: the ranks as threads (tests/threadcomm.py).

tests/test_distributed.py runs these paths under a real ``mpiexec``, out of reach of a
mutation run; here the same code runs in process: N thread ranks must give one process's
numbers, and every start-up check must name what differs.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadcomm import Aborted, outcomes, run_ranks

import portgd
from portgd import Sequential, callbacks, optim
from portgd.distributed import Communicator
from portgd.layers import Dense, Dropout, Softmax, Tanh
from portgd.losses import MSE, CategoricalCrossEntropy

pytest.importorskip("mpi4py")

N, FEATURES, CLASSES = 52, 4, 3  # batches of 16: 16/16/16/4, shared by up to 4 ranks


def _data(n=N):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, FEATURES))
    return x, rng.integers(0, CLASSES, size=n)


def _model(seed=3, hidden=6, backend="numpy", softmax=True, device=None, dropout=False):
    layers = [Dense(FEATURES, hidden), Tanh(), *[Dropout(0.3)] * dropout,
              Dense(hidden, CLASSES)]
    return Sequential(layers + [Softmax()] * softmax, seed=seed, dtype="float64",
                      backend=backend, device=device)


def _fit(model, comm=None, *, x=None, y=None, **overrides):
    data_x, data_y = _data()
    kwargs = dict(loss="ce", optimizer=optim.Adam(lr=0.05, clip_value=0.5), epochs=3,
                  batch_size=16, validation_split=0.25, metrics=["accuracy"], verbose=0,
                  seed=11)
    kwargs.update(overrides)
    history = model.fit(data_x if x is None else x, data_y if y is None else y,
                        distributed=None if comm is None else Communicator(comm), **kwargs)
    return model, history


def _close(a, b, tol=1e-10):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.abs(b).max()), 1e-300)
    return float(np.abs(a - b).max()) / scale <= tol


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("case", ["adam-clip", "sgd-sum-loss", "strict-staged",
                                  "strict-device1", "dropout"])
def test_thread_ranks_train_as_one_process(ranks, case):
    overrides = {}
    backend, device = "numpy", None
    dropout = case == "dropout"  # each rank uses its rows of the global batch's mask
    if case == "sgd-sum-loss":
        overrides = dict(loss=CategoricalCrossEntropy(from_logits=False, reduction="sum"),
                         optimizer=optim.SGD(lr=0.01, momentum=0.9, nesterov=True),
                         shuffle=False)
    elif case.startswith("strict"):  # another device: the staged path must stay on it
        pytest.importorskip("array_api_strict")
        backend = "array_api_strict"
        device = "device1" if case == "strict-device1" else None
    optimizer = overrides.pop("optimizer", None)

    def make_optimizer():
        return optim.Adam(lr=0.05, clip_value=0.5) if optimizer is None else (
            optim.SGD(**optimizer.config()))

    def model():
        return _model(backend=backend, device=device, dropout=dropout)

    reference, history = _fit(model(), optimizer=make_optimizer(), **overrides)
    results = run_ranks(ranks, lambda comm: _fit(model(), comm, optimizer=make_optimizer(),
                                                 **overrides))
    want = reference.state_dict()
    for model, got in results:
        for name, value in model.state_dict().items():
            assert _close(value, want[name]), (case, ranks, name)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert _close(got.history[key], history.history[key]), (case, ranks, key)
    first = results[0][0].state_dict()
    for model, _ in results[1:]:  # the replicas stay identical, bit for bit
        assert all(np.array_equal(v, first[k]) for k, v in model.state_dict().items())


def _mismatch(rank, variant):
    """Keyword arguments of ``_fit`` for ``rank``: rank 1 differs as ``variant`` says."""
    model, kwargs = _model(), {}
    if rank == 0:
        return model, kwargs
    x, y = _data()
    if variant == "the parameters":
        model.layers[0].params["weight"][1, 2] += 1e-9
    elif variant == "the model":
        model = _model(hidden=7)
    elif variant == "the optimizer":
        kwargs["optimizer"] = optim.Adam(lr=0.04, clip_value=0.5)
    elif variant == "the optimizer state":
        opt = optim.Adam(lr=0.05, clip_value=0.5)
        state = opt.state_dict()
        state["param_steps"] = {"0.weight": 1}
        state["state"] = {"0.weight": {"exp_avg": np.ones((FEATURES, 6)),
                                       "exp_avg_sq": np.ones((FEATURES, 6))}}
        opt.load_state_dict(state)
        kwargs["optimizer"] = opt
    elif variant == "the loss":
        kwargs["loss"] = CategoricalCrossEntropy(from_logits=False, reduction="sum")
    elif variant == "the data":
        kwargs["x"], kwargs["y"] = x[:-1], y[:-1]
    elif variant == "the data values":
        x = x.copy()
        x[5, 2] += 1.0
        kwargs["x"] = x
    elif variant == "the data order":
        order = np.arange(N)
        order[[3, 9]] = order[[9, 3]]
        kwargs["x"], kwargs["y"] = x[order], y[order]
    elif variant == "the validation data":
        x = x.copy()
        x[-1, 0] += 1.0  # the last rows are held out by validation_split
        kwargs["x"] = x
    elif variant == "the batch order (generator state)":
        kwargs["seed"] = None
        model.rng.random()
    elif variant == "the fit arguments":
        kwargs["epochs"] = 4
    elif variant == "the callbacks":
        kwargs["callbacks"] = [callbacks.TerminateOnNaN()]
    elif variant == "the loss class":
        kwargs["loss"] = portgd.losses.BinaryCrossEntropy(from_logits=False)
    elif variant == "the data columns":
        # every row sum and every position-weighted column sum stays, exactly (integers)
        x = _integer_x()
        x[:3, :2] += [[2.0, -2.0], [-1.0, 1.0], [0.0, 0.0]]
        kwargs["x"] = x
    return model, kwargs


EXPECTED_KEY = {"the data order": "the data values", "the validation data": "the data values",
                "the data columns": "the data values", "the callbacks": "the fit arguments",
                "the loss class": "the loss"}
RANK0_KWARGS = {  # what rank 0 passes where rank 1's variant needs a counterpart
    "the callbacks": lambda: {"callbacks": [callbacks.EarlyStopping(patience=5)]},
    "the loss class": lambda: {"loss": CategoricalCrossEntropy(from_logits=False)},
    "the data columns": lambda: {"x": _integer_x()},
}


def _integer_x():
    """The inputs rounded to integers: their sums are exact in any order."""
    return np.round(2 * _data()[0])


@pytest.mark.parametrize("variant", [
    "the parameters", "the model", "the optimizer", "the optimizer state", "the loss",
    "the data", "the data values", "the data order", "the validation data",
    "the batch order (generator state)", "the fit arguments", "the callbacks",
    "the loss class", "the data columns",
])
def test_every_rank_refuses_a_rank_that_starts_differently(variant):
    def work(comm):
        model, kwargs = _mismatch(comm.Get_rank(), variant)
        if comm.Get_rank() == 0:
            kwargs.update(RANK0_KWARGS.get(variant, dict)())
            if variant == "the batch order (generator state)":
                kwargs["seed"] = None
        if variant == "the loss class":  # one-hot targets suit both losses
            kwargs["y"] = np.eye(CLASSES)[_data()[1]]
        return _fit(model, comm, **kwargs)

    _, errors = outcomes(2, work)
    key = EXPECTED_KEY.get(variant, variant)
    for error in errors:
        assert isinstance(error, portgd.DistributedError), repr(error)
        assert f"{key}: rank(s) [1] differ from rank 0" in str(error)
        assert "the 2 ranks do not start alike" in str(error)
    if variant not in ("the model", "the data", "the optimizer state"):  # more than one
        assert str(errors[0]).count("differ from rank 0") == 1, str(errors[0])


def test_identical_ranks_pass_the_start_up_check():
    results = run_ranks(2, lambda comm: _fit(_model(), comm, epochs=1))
    assert len(results) == 2


def test_more_ranks_than_the_smallest_global_batch_are_refused_on_every_rank():
    # 52 samples, validation 13 -> 39 training samples in batches 16/16/7; the last has 7
    _, errors = outcomes(8, lambda comm: _fit(_model(), comm))
    for error in errors:
        assert isinstance(error, portgd.DistributedError)
        assert str(error).startswith("8 ranks cannot share a global batch of 7 samples "
                                     "(batch_size=16, 39 training samples); use at most 7")


def test_the_same_refusal_on_every_rank_is_raised_on_every_rank():
    _, errors = outcomes(2, lambda comm: _fit(_model(), comm, epochs=0))
    for error in errors:
        assert isinstance(error, portgd.InputError) and getattr(error, "on_every_rank", False)
        assert "epochs must be a positive int" in str(error)


def test_one_failing_rank_ends_the_whole_job(capsys):
    class Fail(callbacks.Callback):
        def on_epoch_end(self, epoch, logs):
            if self.distributed.rank == 1:
                raise RuntimeError("injected failure")

    _, errors = outcomes(2, lambda comm: _fit(_model(), comm, callbacks=[Fail()]))
    assert all(isinstance(e, Aborted) and e.code == 1 for e in errors), errors
    printed = capsys.readouterr().err
    assert ("portgd: rank 1 of 2 failed: RuntimeError: injected failure; ending the whole "
            "job") in printed


def test_a_refusal_on_one_rank_only_ends_the_job_naming_that_rank(capsys):
    def work(comm):
        return _fit(_model(), comm, batch_size=16 if comm.Get_rank() == 0 else 0)

    _, errors = outcomes(2, work)
    assert all(isinstance(e, Aborted) for e in errors), errors
    printed = capsys.readouterr().err
    assert "portgd: rank 1 of 2 failed: InputError: batch_size must be" in printed
    assert "portgd: rank 0 of 2 failed: DistributedError: rank(s) [1] failed: InputError" in (
        printed)


def test_a_non_finite_global_loss_stops_every_rank_alike():
    _, y = _data()

    def work(comm):  # a step far too long: the weights overflow in the first epoch
        with np.errstate(over="ignore", invalid="ignore"):
            return _fit(_model(softmax=False), comm, loss=MSE(), y=np.eye(CLASSES)[y],
                        optimizer=optim.SGD(lr=1e300), metrics=[])

    _, errors = outcomes(2, work)
    for error in errors:
        assert isinstance(error, portgd.NonFiniteLossError), repr(error)
        assert "in epoch 1" in str(error)


def test_early_stopping_decides_alike_on_every_rank():
    def work(comm):
        stop = callbacks.EarlyStopping(monitor="val_loss", patience=0, min_delta=10.0)
        return _fit(_model(), comm, epochs=5, callbacks=[stop])

    results = run_ranks(2, work)
    reference = _fit(_model(), epochs=5,
                     callbacks=[callbacks.EarlyStopping(monitor="val_loss", patience=0,
                                                        min_delta=10.0)])[1]
    for _, history in results:
        assert history.epochs == reference.epochs == [0, 1]


def test_as_many_ranks_as_the_smallest_batch_without_validation_data():
    """52 samples in batches 16/16/16/4: four ranks share even the last batch."""
    results = run_ranks(4, lambda comm: _fit(_model(), comm, validation_split=0.0,
                                             epochs=2))
    reference = _fit(_model(), validation_split=0.0, epochs=2)[0].state_dict()
    for model, history in results:
        assert "val_loss" not in history.history
        for name, value in model.state_dict().items():
            assert _close(value, reference[name]), name


def test_a_custom_learning_rate_is_compared_by_optimizer_class_and_counters():
    def work(comm):
        make = optim.Adam if comm.Get_rank() == 0 else optim.RMSprop
        return _fit(_model(), comm, optimizer=make(lr=lambda step: 0.01))

    _, errors = outcomes(2, work)
    for error in errors:
        assert isinstance(error, portgd.DistributedError)
        assert "the optimizer: rank(s) [1] differ from rank 0" in str(error)
    same = run_ranks(2, lambda comm: _fit(_model(), comm,
                                          optimizer=optim.Adam(lr=lambda step: 0.01)))
    assert len(same) == 2


def test_only_rank_0_reports_progress_and_it_counts_the_global_batches(monkeypatch):
    import threading

    from portgd import training

    reports = []

    class Recorder:
        def __init__(self, epoch, epochs, n_batches):
            reports.append((threading.current_thread().name, epoch, n_batches))

        def step(self, done, samples, read):
            pass

        def finish(self, logs, samples):
            pass

    monkeypatch.setattr(training, "EpochProgress", Recorder)
    run_ranks(3, lambda comm: _fit(_model(), comm, verbose=1, epochs=2))
    # 39 training samples in global batches of 16: 3 steps, whatever the rank count
    assert reports == [("rank 0", 0, 3), ("rank 0", 1, 3)]


def test_the_first_non_finite_batch_is_found_across_ranks():
    _, y = _data()
    targets = np.eye(CLASSES)[y]

    def fit_once(comm=None):
        with np.errstate(over="ignore", invalid="ignore"):
            return _fit(_model(softmax=False), comm, loss=MSE(), y=targets,
                        optimizer=optim.SGD(lr=1e300), metrics=[])

    with pytest.raises(portgd.NonFiniteLossError) as alone:
        fit_once()
    _, errors = outcomes(3, fit_once)
    assert "first at batch" in str(alone.value)
    assert [str(e) for e in errors] == [str(alone.value)] * 3


def test_a_non_finite_loss_on_one_ranks_shard_is_found_at_its_global_batch():
    """One target overflows the loss: only the rank holding it sees batch 2 go non-finite,
    the others only later; every rank reports the batch one process reports."""
    _, labels = _data()
    y = np.eye(CLASSES)[labels]
    y[37] = 1e200  # training rows 32-38 form batch 2 (validation_split holds out 13)

    def fit_once(comm=None):
        with np.errstate(over="ignore", invalid="ignore"):
            return _fit(_model(softmax=False), comm, y=y, loss=MSE(), shuffle=False,
                        optimizer=optim.SGD(lr=1e-3), metrics=[])

    with pytest.raises(portgd.NonFiniteLossError) as alone:
        fit_once()
    assert "first at batch 2, samples 32 to 38" in str(alone.value)
    _, errors = outcomes(3, fit_once)
    assert [str(e) for e in errors] == [str(alone.value)] * 3


def test_an_overflowing_sum_is_reported_as_such_on_every_rank():
    """Every batch loss finite, their sum not: no rank has a first non-finite batch."""
    x = np.zeros((N, FEATURES))
    y = np.full((N, 1), 4.5e18)  # float32: a batch's squared errors sum to 3.2e38 < 3.4e38

    def fit_once(comm=None):
        model = Sequential([Dense(FEATURES, 1, init="zeros")], seed=0, dtype="float32")
        with np.errstate(over="ignore"):
            return _fit(model, comm, x=x, y=y, loss=MSE(), optimizer=optim.SGD(lr=0.0),
                        metrics=[], validation_split=0.0, shuffle=False)

    with pytest.raises(portgd.NonFiniteLossError) as alone:
        fit_once()
    assert "(every batch loss was finite but their sum overflowed)" in str(alone.value)
    _, errors = outcomes(2, fit_once)
    assert [str(e) for e in errors] == [str(alone.value)] * 2
