"""Predictions as a table: the class and each class's probability, or the predicted values.

Host I/O (NumPy, the host format). The kind of output follows the model's last layer:

* ``Sigmoid`` (one output, binary cross-entropy): columns ``class``, ``p_<c0>``, ``p_<c1>``
  with ``p_<c1> = output`` and ``p_<c0> = 1 - output``; the class is ``c1`` when
  ``output >= 0.5``.
* ``Softmax`` (k outputs, categorical cross-entropy): ``class`` (the argmax, first on ties)
  and ``p_<c>`` for each class.
* anything else: the outputs, named ``prediction`` (one output) or ``prediction_<i>``.

Class names ``c`` are the training data's class values (``classes``), else ``0..k-1``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._files import write_atomically
from ..errors import InputError


def prediction_table(
    model: Any, outputs: np.ndarray, classes: Sequence[Any] | None = None
) -> tuple[list[str], list[Any], np.ndarray | None]:
    """``(column names, predicted class per sample or None, numeric columns (n, c))``."""
    last = type(model.layers[-1]).__name__
    outputs = np.asarray(outputs, dtype=np.float64)
    if last == "Sigmoid" and outputs.shape[1] == 1:
        names = list(classes) if classes is not None else [0, 1]
        probabilities = np.concatenate([1.0 - outputs, outputs], axis=1)
        chosen = (outputs[:, 0] >= 0.5).astype(np.int64)
    elif last == "Softmax":
        names = list(classes) if classes is not None else list(range(outputs.shape[1]))
        probabilities = outputs
        chosen = np.argmax(outputs, axis=1)
    else:
        columns = ["prediction"] if outputs.shape[1] == 1 else [
            f"prediction_{i}" for i in range(outputs.shape[1])]
        return columns, [], outputs
    if len(names) != probabilities.shape[1]:
        raise InputError(
            f"the checkpoint records {len(names)} classes but the model has "
            f"{probabilities.shape[1]} class probabilities; it was not saved by portgd train"
        )
    predicted = [names[i] for i in chosen.tolist()]
    return ["class", *(f"p_{name}" for name in names)], predicted, probabilities


def write_predictions(
    path: Path | None, columns: list[str], predicted: list[Any], values: np.ndarray,
    stream: Any = None,
) -> None:
    """CSV (to ``path``, or to ``stream`` when ``path`` is None) or ``.npy``.

    The ``.npy`` array is float64 ``(n, c)``: for classification its first column is the
    class index ``0..k-1`` and the others the probabilities; for regression the values.
    """
    if path is not None and path.suffix.lower() == ".npy":
        array = values
        if predicted:
            index = {column: i for i, column in enumerate(columns[1:])}
            chosen = np.asarray([index[f"p_{p}"] for p in predicted], dtype=np.float64)
            array = np.concatenate([chosen[:, None], values], axis=1)
        write_atomically(path, lambda handle: np.save(handle, array, allow_pickle=False))
        return
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for i, row in enumerate(values.tolist()):
        cells = [f"{v:.9g}" for v in row]
        writer.writerow([predicted[i], *cells] if predicted else cells)
    if path is None:
        stream.write(text.getvalue())
    else:
        payload = text.getvalue().encode("utf-8")
        write_atomically(path, lambda handle: handle.write(payload))
