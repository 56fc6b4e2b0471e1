"""Dataset spec strings, as the command line takes them (``digits``, ``mnist:PATH``, ...)."""

from __future__ import annotations

from typing import Any

from ..errors import DatasetError
from ._dataset import Dataset
from ._digits import digits
from ._mnist import mnist
from ._synthetic import synthetic_classification

#: The dataset specs :func:`load` (and the command line) understands.
SPECS = {
    "digits": "scikit-learn's 8x8 handwritten digits, 10 classes (1797 samples)",
    "digits01": "the digits 0 and 1 only, a binary task (360 samples)",
    "mnist:PATH": "MNIST IDX files in the folder PATH, training split (60000 samples)",
    "synthetic": "seeded Gaussian blobs, 2 classes, 20 features (1000 samples)",
}


# -- specs ----------------------------------------------------------------------------------
def load(
    spec: str,
    *,
    backend: Any = None,
    device: Any = None,
    dtype: Any = "float32",
    **options: Any,
) -> Dataset:
    """The Dataset named by a spec string, as the command line takes it.

    ``digits`` (10 classes), ``digits01`` (digits 0 and 1, relabelled 0 and 1),
    ``mnist:PATH`` (the training split of the IDX files in the folder PATH; pass
    ``split="test"`` or ``download=True`` as options), ``synthetic`` (two-class Gaussian
    blobs with the defaults of :func:`synthetic_classification`). ``options`` go to the
    loader.

    Raises:
        DatasetError: an unknown spec (the message lists the valid ones) or an error of the
            loader.
    """
    where = {"backend": backend, "device": device, "dtype": dtype}
    text = spec.strip() if isinstance(spec, str) else None
    if text == "digits":
        return digits(**where, **options)
    if text == "digits01":
        return digits((0, 1), **where, **options)
    if text == "synthetic":
        return synthetic_classification(**where, **options)
    if text is not None and (text == "mnist" or text.startswith("mnist:")):
        folder = text[len("mnist:"):].strip()
        if not folder:
            raise DatasetError(
                "the mnist spec needs the folder of the IDX files: mnist:PATH, "
                "e.g. mnist:~/data/mnist"
            )
        return mnist(folder, **where, **options)
    valid = "; ".join(f"{name} ({what})" for name, what in SPECS.items())
    raise DatasetError(f"unknown dataset {spec!r}; valid datasets: {valid}")
