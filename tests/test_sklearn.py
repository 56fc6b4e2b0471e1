"""portgd.sklearn beyond scikit-learn's own checks: the L2 convention against its formula,
meta-estimators, pickling (and its NumPy fallback), array-API dispatch, partial_fit,
warm_start and early stopping."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import clone, config_context
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn_helpers import one_torch_thread
from threadpoolctl import threadpool_limits

import portgd
from portgd import _registry
from portgd.sklearn import BackendFallbackWarning, MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with threadpool_limits(limits=1), one_torch_thread():
        yield


@pytest.fixture(params=["numpy", "torch"])
def cpu_backend(request):
    pytest.importorskip(request.param)
    return request.param


def blobs(n=120, features=6, classes=3, seed=0):
    X, y = make_classification(n_samples=n, n_features=features, n_informative=4,
                               n_redundant=0, n_classes=classes, class_sep=2.0,
                               random_state=seed)
    return X, y


# -- the L2 convention -------------------------------------------------------------------


def _relu_net_step(X, y, W0, b0, W1, b1, lr, alpha):
    """One full-batch gradient step of x -> relu(x W0 + b0) W1 + b1 on the MSE, by hand,
    with portgd's penalty alpha / (2 n) * (||W0||^2 + ||W1||^2)."""
    n = X.shape[0]
    z = X @ W0 + b0
    h = np.maximum(z, 0.0)
    out = h @ W1 + b1
    dout = 2.0 * (out - y.reshape(-1, 1)) / n
    dW1 = h.T @ dout + alpha / n * W1
    db1 = dout.sum(axis=0)
    dh = (dout @ W1.T) * (z > 0)
    dW0 = X.T @ dh + alpha / n * W0
    db0 = dh.sum(axis=0)
    loss = float(np.mean((out - y.reshape(-1, 1)) ** 2))
    return W0 - lr * dW0, b0 - lr * db0, W1 - lr * dW1, b1 - lr * db1, loss


def test_alpha_is_l2_on_the_weights_against_the_summed_loss():
    X, y = make_regression(n_samples=40, n_features=5, noise=0.1, random_state=1)
    y = y / y.std()
    settings = dict(hidden_layer_sizes=(7,), solver="sgd", momentum=0.0, batch_size=40,
                    max_iter=1, shuffle=False, random_state=3, dtype="float64")
    # A step of 1e-300 leaves every weight bit-identical: the initial parameters.
    start = MLPRegressor(learning_rate_init=1e-300, alpha=0.0, **settings).fit(X, y)
    W0, W1 = start.coefs_
    b0, b1 = start.intercepts_
    lr, alpha = 0.05, 3.0
    est = MLPRegressor(learning_rate_init=lr, alpha=alpha, **settings).fit(X, y)
    eW0, eb0, eW1, eb1, data_loss = _relu_net_step(X, y, W0, b0, W1, b1, lr, alpha)
    np.testing.assert_allclose(est.coefs_[0], eW0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(est.coefs_[1], eW1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(est.intercepts_[0], eb0, rtol=1e-12, atol=1e-14)  # no penalty
    np.testing.assert_allclose(est.intercepts_[1], eb1, rtol=1e-12, atol=1e-14)
    # loss_curve_: the epoch's data loss plus the penalty at the end of the epoch
    penalty = alpha / (2 * 40) * (np.sum(eW0**2) + np.sum(eW1**2))
    assert est.loss_curve_[0] == pytest.approx(data_loss + penalty, rel=1e-12)
    # The penalty's size does not depend on the batch size: it is alpha / n per step.
    assert alpha / 40 * np.abs(W0).max() > 1e-3  # large enough that the check above bites


def test_penalty_scales_with_the_training_set_not_the_batch():
    X, y = make_regression(n_samples=60, n_features=4, random_state=2)
    y = y / y.std()
    common = dict(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0, max_iter=1,
                  shuffle=False, random_state=0, learning_rate_init=0.01, dtype="float64")
    for batch in (10, 60):
        plain = MLPRegressor(alpha=0.0, batch_size=batch, **common).fit(X, y)
        decayed = MLPRegressor(alpha=6.0, batch_size=batch, **common).fit(X, y)
        # every step shrinks W by (1 - lr * alpha / n) on top of the data step, so the
        # difference grows with the number of steps (6 at batch 10, 1 at batch 60)
        steps = 60 // batch
        diff = np.abs(plain.coefs_[0] - decayed.coefs_[0]).max()
        scale = 0.01 * 6.0 / 60 * np.abs(plain.coefs_[0]).max()
        assert scale * steps * 0.5 < diff < scale * steps * 2.0


# -- meta-estimators, clone, pickling -----------------------------------------------------


def test_pipeline_and_grid_search(cpu_backend):
    X, y = blobs()
    pipe = make_pipeline(StandardScaler(), MLPClassifier(
        backend=cpu_backend, max_iter=40, learning_rate_init=0.02, random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(8,), (16, 8)],
                               "mlpclassifier__alpha": [1e-4, 1.0]}, cv=3)
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    assert grid.best_score_ > 0.7
    best = grid.best_estimator_[-1]
    assert best.model_.backend.name == cpu_backend
    assert grid.score(X, y) > 0.8


def test_cross_val_score_and_clone(cpu_backend):
    X, y = make_regression(n_samples=90, n_features=4, noise=1.0, random_state=0)
    est = MLPRegressor((16,), backend=cpu_backend, learning_rate_init=0.02, max_iter=80,
                       random_state=0)
    scores = cross_val_score(make_pipeline(StandardScaler(), est), X, y / y.std(), cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8
    copy = clone(est)
    assert copy.get_params() == est.get_params() and not hasattr(copy, "model_")


def test_same_seed_same_numbers_on_every_cpu_backend(cpu_backend):
    X, y = blobs()
    reference = MLPClassifier((8,), random_state=0, max_iter=5, dtype="float64").fit(X, y)
    other = MLPClassifier((8,), random_state=0, max_iter=5, dtype="float64",
                          backend=cpu_backend).fit(X, y)
    np.testing.assert_allclose(other.predict_proba(X), reference.predict_proba(X),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(other.loss_curve_, reference.loss_curve_, rtol=1e-10)


def test_pickle_round_trip_keeps_backend_and_optimizer(cpu_backend):
    X, y = blobs()
    est = MLPClassifier((8,), backend=cpu_backend, random_state=0, max_iter=5).fit(X, y)
    loaded = pickle.loads(pickle.dumps(est))
    assert loaded.model_.backend.name == cpu_backend
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    # the optimizer state travels: partial_fit continues identically on both
    est.partial_fit(X, y)
    loaded.partial_fit(X, y)
    np.testing.assert_array_equal(loaded.coefs_[0], est.coefs_[0])


@pytest.fixture
def ephemeral_backend():
    """A backend registered at run time (NumPy under another name); removed afterwards."""
    from portgd.backends import Backend

    def create(device=None):
        return Backend("ephemeral", np, "cpu", library="numpy", version=np.__version__,
                       array_types=(np.ndarray,))

    portgd.register_backend("ephemeral", create)
    yield create
    _registry._registry.factories.pop("ephemeral", None)
    _registry._reset_for_tests()


def test_unpickling_without_the_backends_library_falls_back_to_numpy(ephemeral_backend):
    X, y = blobs()
    est = MLPClassifier((8,), backend="ephemeral", random_state=0, max_iter=5).fit(X, y)
    assert est.model_.backend.name == "ephemeral"
    blob = pickle.dumps(est)

    def missing(device=None):
        raise ImportError("No module named 'ephemeral_lib'")

    missing.library = "ephemeral_lib"
    portgd.register_backend("ephemeral", missing, replace=True)
    with pytest.warns(BackendFallbackWarning, match=r"fitted on ephemeral \(cpu\).*numpy"):
        loaded = pickle.loads(blob)
    assert loaded.model_.backend.name == "numpy"
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))


def test_unpickling_when_the_backend_is_not_registered_falls_back(ephemeral_backend):
    X, y = make_regression(n_samples=50, n_features=3, random_state=0)
    est = MLPRegressor((4,), backend="ephemeral", random_state=0, max_iter=3).fit(X, y)
    blob = pickle.dumps(est)
    _registry._registry.factories.pop("ephemeral")
    _registry._reset_for_tests()
    with pytest.warns(BackendFallbackWarning, match="not usable here"):
        loaded = pickle.loads(blob)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))


# -- array API dispatch -------------------------------------------------------------------


def test_dispatch_keeps_torch_input_in_torch():
    torch = pytest.importorskip("torch")
    X, y = blobs()
    Xt, yt = torch.asarray(X), torch.asarray(y)
    with config_context(array_api_dispatch=True):
        est = MLPClassifier((8,), random_state=0, max_iter=5).fit(Xt, yt)
        assert est.model_.backend.name == "torch"
        assert est.model_.dtype == torch.float64
        labels, proba = est.predict(Xt), est.predict_proba(Xt)
        log_proba = est.predict_log_proba(Xt)
        score = est.score(Xt, yt)
    assert all(isinstance(a, torch.Tensor) for a in (labels, proba, log_proba))
    assert labels.dtype == torch.int64 and proba.shape == (120, 3)
    assert isinstance(est.coefs_[0], np.ndarray)  # fitted attributes stay host arrays
    host = MLPClassifier((8,), random_state=0, max_iter=5).fit(X, y)
    np.testing.assert_allclose(proba.numpy(), host.predict_proba(X), rtol=1e-10, atol=1e-12)
    assert score == pytest.approx(host.score(X, y))


def test_dispatch_keeps_strict_device1_input_there():
    strict = pytest.importorskip("array_api_strict")
    X, y = make_regression(n_samples=50, n_features=3, random_state=0)
    device = strict.Device("device1")
    Xs = strict.asarray(X.astype(np.float32), device=device)
    ys = strict.asarray(y.astype(np.float32), device=device)
    with config_context(array_api_dispatch=True):
        est = MLPRegressor((4,), random_state=0, max_iter=3).fit(Xs, ys)
        out = est.predict(Xs)
        with pytest.raises(ValueError, match=r"MLPRegressor.predict\(\) must use the same"):
            est.predict(X)
    assert est.model_.backend.device_name == "device1"
    assert out.device == device and out.dtype == strict.float32 and out.shape == (50,)


# -- partial_fit, warm_start, early stopping ---------------------------------------------


def test_partial_fit_needs_classes_first_and_keeps_the_optimizer():
    X, y = blobs()
    est = MLPClassifier((8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        est.partial_fit(X, y)
    est.partial_fit(X[:60], y[:60], classes=[0, 1, 2])
    steps = est._optimizer.step_count
    est.partial_fit(X[60:], y[60:])
    assert est.n_iter_ == 2 and len(est.loss_curve_) == 2 and est.t_ == 120
    assert est._optimizer.step_count == 2 * steps
    with pytest.raises(ValueError, match=r"labels \[7\] that are not in classes"):
        est.partial_fit(X[:3], np.array([0, 1, 7]))


def test_warm_start_continues_from_the_fitted_weights():
    X, y = blobs()
    est = MLPClassifier((8,), random_state=0, max_iter=10, tol=0.0, warm_start=True)
    est.fit(X, y)
    first = list(est.loss_curve_)
    est.fit(X, y)
    assert len(est.loss_curve_) == 20 and est.n_iter_ == 20
    assert est.loss_curve_[10] < first[0]
    cold = MLPClassifier((8,), random_state=0, max_iter=10, tol=0.0).fit(X, y)
    assert cold.loss_curve_ == first
    with pytest.raises(ValueError, match="same classes"):
        est.fit(X, np.where(y == 2, 5, y))


def test_stopping_rule_of_scikit_learn():
    X, y = blobs()
    est = MLPClassifier((8,), random_state=0, max_iter=500, tol=0.5, n_iter_no_change=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(X, y)
    # The first epoch improves on best_loss_ = inf; tol=0.5 is never met after it, so
    # training stops when more than n_iter_no_change epochs in a row did not improve.
    assert est.n_iter_ == 5 and est.best_loss_ == min(est.loss_curve_)


#: every index width: NumPy and torch (int64), array_api_strict's no_x64 device and JAX with
#: its default settings (int32 only). Issue 10: every index array is Backend.index_dtype.
INDEX_WIDTHS = [("numpy", None), ("torch", None), ("array_api_strict", "no_x64"), ("jax", None)]


@pytest.fixture(params=INDEX_WIDTHS, ids=[b if d is None else f"{b}-{d}" for b, d in INDEX_WIDTHS])
def any_index_width(request):
    pytest.importorskip(request.param[0])
    return request.param


def _held_out(est, X, y, stratify):
    """The validation rows early stopping held out (the estimator's own split)."""
    _, val = train_test_split(np.arange(len(X)), test_size=est.validation_fraction,
                              random_state=est._seed, stratify=y if stratify else None)
    return val


@pytest.mark.parametrize("classes", [2, 3])
def test_early_stopping_fit_and_predict_on_every_index_width(any_index_width, classes):
    backend, device = any_index_width
    X, y = blobs(n=150, classes=classes)
    y = y + 10  # labels are not their own indices
    est = MLPClassifier((8,), backend=backend, device=device, random_state=0, max_iter=60,
                        early_stopping=True, validation_fraction=0.2, n_iter_no_change=10,
                        learning_rate_init=0.02).fit(X, y)
    assert est.model_.backend.name == backend
    labels = est.predict(X)
    proba = est.predict_proba(X)
    np.testing.assert_array_equal(labels, est.classes_[np.argmax(proba, axis=1)])
    assert labels.dtype == y.dtype
    # the fitted weights are the best validation epoch's: they score best_validation_score_
    val = _held_out(est, X, y, stratify=True)
    assert est.best_validation_score_ == max(est.validation_scores_) > 0.7
    assert est.score(X[val], y[val]) == pytest.approx(est.best_validation_score_, abs=1e-12)


def test_early_stopping_regressor_on_every_index_width(any_index_width):
    backend, device = any_index_width
    X, y = make_regression(n_samples=120, n_features=4, noise=0.1, random_state=0)
    est = MLPRegressor((8,), backend=backend, device=device, random_state=0, max_iter=60,
                       early_stopping=True, validation_fraction=0.2, n_iter_no_change=3,
                       learning_rate_init=0.05).fit(X, y / y.std())
    val = _held_out(est, X, y, stratify=False)
    assert est.score(X[val], y[val] / y.std()) == pytest.approx(est.best_validation_score_,
                                                                rel=1e-5)


def test_dispatch_on_every_index_width(any_index_width):
    backend, device = any_index_width
    X, y = blobs(n=90)
    host = MLPClassifier((8,), backend=backend, device=device, random_state=0, max_iter=5,
                         dtype="float32").fit(X, y)
    b = host.model_.backend
    Xd = b.asarray(X, dtype=b.dtype("float32"))
    yd = b.asarray(y, dtype=b.index_dtype)
    with config_context(array_api_dispatch=True):
        est = MLPClassifier((8,), backend=backend, device=device, random_state=0, max_iter=5,
                            dtype="float32").fit(Xd, yd)
        labels = est.predict(Xd)
    assert b.owns(labels) and labels.dtype == b.index_dtype
    np.testing.assert_array_equal(b.to_numpy(labels), host.predict(X))


def test_early_stopping_keeps_the_best_validation_epoch():
    X, y = blobs(n=200)
    est = MLPClassifier((16,), random_state=0, max_iter=300, early_stopping=True,
                        validation_fraction=0.2, n_iter_no_change=5,
                        learning_rate_init=0.02).fit(X, y)
    assert est.best_loss_ is None and len(est.validation_scores_) == est.n_iter_ < 300
    assert est.best_validation_score_ == max(est.validation_scores_) > 0.7


# -- attributes, errors, quality ----------------------------------------------------------


def test_fitted_attributes_as_scikit_learn_names_them():
    X, y = blobs(features=6)
    est = MLPClassifier((5, 4), random_state=0, max_iter=3).fit(X, y)
    assert not hasattr(est, "feature_names_in_")
    assert [c.shape for c in est.coefs_] == [(6, 5), (5, 4), (4, 3)]
    assert [b.shape for b in est.intercepts_] == [(5,), (4,), (3,)]
    assert est.n_layers_ == 4 and est.n_outputs_ == 3 and est.out_activation_ == "softmax"
    assert est.classes_.tolist() == [0, 1, 2] and est.n_features_in_ == 6
    assert est.loss_ == est.loss_curve_[-1] and est.n_iter_ == 3 and est.t_ == 360
    binary = MLPClassifier((3,), random_state=0, max_iter=2).fit(X, y == 1)
    assert binary.out_activation_ == "logistic" and binary.n_outputs_ == 1
    assert binary.predict(X).dtype == bool and binary.predict_proba(X).shape == (120, 2)


def test_feature_names_from_a_dataframe():
    pandas = pytest.importorskip("pandas")
    X, y = blobs(features=3)
    frame = pandas.DataFrame(X, columns=["a", "b", "c"])
    est = MLPRegressor((3,), random_state=0, max_iter=2).fit(frame, y.astype(float))
    assert est.feature_names_in_.tolist() == ["a", "b", "c"]


@pytest.mark.parametrize(("params", "message"), [
    ({"hidden_layer_sizes": (4, 0)}, "hidden_layer_sizes must be a tuple of positive ints"),
    ({"solver": "lbfgs"}, "solver must name a portgd optimizer"),
    ({"activation": "softsign"}, "activation must be one of"),
    ({"alpha": -1.0}, r"MLPClassifier: alpha must be >= 0, got -1.0"),
    ({"alpha": "big"}, r"MLPClassifier: alpha must be a real number, got 'big'"),
    ({"batch_size": 0}, "MLPClassifier: batch_size must be a positive int, got 0"),
    ({"validation_fraction": 1.0}, r"validation_fraction must be in \(0, 1\), got 1.0"),
    ({"backend": "nonesuch"}, "no backend named 'nonesuch'"),
])
def test_bad_parameters_fail_at_fit_with_a_message(params, message):
    """Checked in fit, never in __init__ (scikit-learn's rule)."""
    X, y = blobs()
    est = MLPClassifier(**params)
    with pytest.raises((ValueError, LookupError), match=message):
        est.fit(X, y)


def test_unfitted_estimator_says_so():
    with pytest.raises(NotFittedError):
        MLPRegressor().predict(np.zeros((2, 3)))
    with pytest.raises(NotFittedError):
        _ = MLPRegressor().coefs_


def test_digits_ten_classes_reaches_95_percent():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.2,
                                                        stratify=y, random_state=0)
    est = MLPClassifier((128, 64), learning_rate_init=3e-3, batch_size=32, max_iter=30,
                        random_state=0, dtype="float32").fit(X_train, y_train)
    assert est.score(X_test, y_test) > 0.95


@pytest.mark.parametrize("regression", [False, True])
def test_one_full_batch_step_matches_scikit_learn(regression):
    """With the batch = the training set, portgd's alpha is scikit-learn's for the classifier;
    the regressor's loss is twice scikit-learn's half-MSE, so it takes 2 alpha at lr / 2."""
    from sklearn.neural_network import MLPClassifier as SkClassifier
    from sklearn.neural_network import MLPRegressor as SkRegressor

    if regression:
        X, y = make_regression(n_samples=30, n_features=4, random_state=0)
        y = y / y.std()
    else:
        X, y = blobs(n=30, features=4)
    ours_cls, sk_cls = (MLPRegressor, SkRegressor) if regression else (MLPClassifier,
                                                                      SkClassifier)
    lr, alpha = 0.1, 2.0
    scale = 2.0 if regression else 1.0
    common = dict(hidden_layer_sizes=(5,), solver="sgd", momentum=0.0, batch_size=30,
                  max_iter=1, shuffle=False, random_state=0)
    ours = ours_cls(learning_rate_init=lr / scale, alpha=alpha * scale, dtype="float64",
                    **common)
    start = ours_cls(learning_rate_init=1e-300, dtype="float64", **common).fit(X, y)
    sk = sk_cls(learning_rate_init=lr, alpha=alpha, **common).fit(X, y)  # sets its state
    sk.set_params(warm_start=True)
    sk.coefs_, sk.intercepts_ = start.coefs_, start.intercepts_  # the same initial weights
    sk.fit(X, y)
    ours.fit(X, y)
    for mine, theirs in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_,
                            strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-13)
