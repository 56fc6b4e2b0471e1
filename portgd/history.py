"""History: the per-epoch record that ``fit`` returns."""

from __future__ import annotations

from pathlib import Path


class History:
    """Per-epoch values of the loss and metrics, train and validation.

    ``history.history["loss"]`` is the list of epoch losses; ``history["val_accuracy"]``
    works the same. ``epochs`` lists the epoch numbers (0-based) that ran.
    """

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.history: dict[str, list[float]] = {}

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epochs.append(epoch)
        for name, value in logs.items():
            self.history.setdefault(name, []).append(value)

    def __getitem__(self, name: str) -> list[float]:
        return self.history[name]

    def __contains__(self, name: object) -> bool:
        return name in self.history

    def __len__(self) -> int:
        return len(self.epochs)

    def __repr__(self) -> str:
        last = {k: round(v[-1], 6) for k, v in self.history.items()}
        return f"History(epochs={len(self)}, last={last})"

    def to_dict(self) -> dict[str, list[float]]:
        return {name: list(values) for name, values in self.history.items()}

    def plot(self, path: str | Path) -> Path:
        """Draw loss and each metric per epoch (train and validation) into a PNG at ``path``."""
        from .plotting import plot_history

        return plot_history(self, path)
