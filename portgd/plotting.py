"""Training curves as PNG files (matplotlib, the optional ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._files import write_atomically
from .errors import InputError, PortgdError

if TYPE_CHECKING:
    from .history import History


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PortgdError(
            f"plotting needs matplotlib ({exc}); install it with pip install 'portgd[plot]'"
        ) from exc
    return plt


def plot_history(history: History, path: str | Path) -> Path:
    """One panel per quantity (loss, then each metric), train and validation per epoch.

    The format follows the suffix (``.png``, ``.svg``, ``.pdf``, ...); the file is written
    atomically, so a failed write leaves an existing file intact.
    """
    if not len(history):
        raise InputError("the history is empty: nothing to plot")
    names = [n for n in history.history if not n.startswith("val_")]
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    epochs = [e + 1 for e in history.epochs]
    for ax, name in zip(axes[0], names, strict=True):
        ax.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker="s", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    target = Path(path)
    if not target.parent.is_dir():
        plt.close(figure)
        raise InputError(f"cannot write the plot to {target}: the folder {target.parent} "
                         f"does not exist")
    image_format = target.suffix[1:].lower() or "png"  # matplotlib: png, svg, pdf, ...
    try:
        write_atomically(target, lambda h: figure.savefig(h, dpi=100, format=image_format))
    except ValueError as exc:  # an image format matplotlib does not know
        raise InputError(f"cannot write the plot to {target}: {exc}") from None
    except OSError as exc:  # a read-only or full folder: nothing was written
        raise InputError(
            f"cannot write the plot to {target}: {exc.strerror or exc}; choose a folder you "
            f"can write to"
        ) from None
    finally:
        plt.close(figure)
    return target
