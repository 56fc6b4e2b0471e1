"""scikit-learn's own estimator checks on MLPClassifier and MLPRegressor, per backend.

``parametrize_with_checks`` runs every check that applies to the estimators' tags, the
array-API checks included (``array_api_support=True``: torch on the CPU, array-api-strict on
its default device and on ``device1``, and the mixed-input checks). Small networks and a
learning rate of 0.01 keep each fit short; the accuracy and R^2 floors of the checks are
the ones scikit-learn sets. The networks are tiny, so the checks run on one thread: on a
busy 2-core machine multi-threaded BLAS and torch spend 30x longer waiting than computing.
"""

from __future__ import annotations

import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from sklearn_helpers import one_torch_thread  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from portgd.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

SETTINGS = {"hidden_layer_sizes": (16,), "learning_rate_init": 0.05, "max_iter": 30}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with threadpool_limits(limits=1), one_torch_thread():
        yield


def estimators(backend):
    return [MLPClassifier(backend=backend, **SETTINGS), MLPRegressor(backend=backend, **SETTINGS)]


def expected_failed_checks(estimator):
    """The checks the estimator declares it fails, with the reason (empty: none)."""
    return dict(estimator._expected_failed_checks)


@parametrize_with_checks(estimators("numpy") + estimators("torch"),  # torch: the CI has it
                         expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
