"""Datasets: scikit-learn's 8x8 digits, MNIST IDX files and seeded synthetic data.

Everything here is host I/O. Files are read and synthetic data is drawn on the host as NumPy
arrays (the host format) and moved to the chosen backend once, through
``Backend.asarray(host, dtype=...)``. So the same call gives the same numbers on every backend,
and nothing here depends on a GPU library.

Every loader returns a :class:`Dataset`, which unpacks as ``X, y = digits()``:

* ``X``: float features ``(n_samples, n_features)`` in ``dtype`` (default ``float32``);
  images are flattened row by row, their shape is kept in ``Dataset.feature_shape``;
* ``y``: class indices ``(n_samples,)`` as ``int64`` (``int32`` on a backend or device
  without int64) for classification, float targets
  ``(n_samples, n_targets)`` in ``dtype`` for regression.

NumPy is imported inside the functions, not at module level, so ``import portgd`` stays free
of array libraries even when it imports this module.

The package has one module per concern: ``_dataset`` (the Dataset type), ``_digits``,
``_idx`` (IDX parsing), ``_mnist`` (download and loading), ``_synthetic``, ``_split`` (labels
and splits), ``_scaling`` (Standardizer), ``_specs`` (spec strings) and ``_tables`` (your own
``.csv``/``.npy``/``.npz`` files); import the public names
from ``portgd.datasets``.
"""

from ._dataset import DATA_INSTALL_HINT as DATA_INSTALL_HINT
from ._dataset import Dataset
from ._digits import digits
from ._idx import IDX_DTYPES as IDX_DTYPES
from ._idx import read_idx
from ._mnist import DOWNLOAD_TIMEOUT_S as DOWNLOAD_TIMEOUT_S
from ._mnist import MNIST_ARCHIVES as MNIST_ARCHIVES
from ._mnist import MNIST_MIRRORS as MNIST_MIRRORS
from ._mnist import MNIST_SPLITS as MNIST_SPLITS
from ._mnist import Archive as Archive
from ._mnist import download_mnist, mnist
from ._scaling import Standardizer, standardize
from ._specs import SPECS, load
from ._split import check_labels, train_test_split
from ._synthetic import synthetic_classification, synthetic_regression
from ._tables import SUFFIXES as SUFFIXES
from ._tables import Table, from_file, read_table

__all__ = [
    "Dataset",
    "SPECS",
    "Table",
    "Standardizer",
    "check_labels",
    "digits",
    "download_mnist",
    "from_file",
    "load",
    "mnist",
    "read_idx",
    "read_table",
    "standardize",
    "synthetic_classification",
    "synthetic_regression",
    "train_test_split",
]
