"""Progress reports for ``fit(verbose=1)``.

On a terminal: a tqdm bar per epoch whose loss, metrics and samples/s are refreshed at most
every ``REFRESH_S`` seconds — each refresh reads the running sums from the device once, so
the number of host reads stays small however short the steps are. Elsewhere (a log file,
CI): one line per epoch.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

REFRESH_S = 0.5


def _format(logs: dict[str, float]) -> str:
    return " ".join(f"{name}={value:.4g}" for name, value in logs.items())


class EpochProgress:
    """Reports one epoch: ``step(done, read)`` after each batch, ``finish(logs)`` at the end."""

    def __init__(self, epoch: int, epochs: int, n_batches: int, stream: Any = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.title = f"epoch {epoch + 1}/{epochs}"
        self.n_batches = n_batches
        self.started = self.last = time.perf_counter()
        self.bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=n_batches, desc=self.title, unit="batch", file=self.stream,
                            leave=True, mininterval=REFRESH_S)

    def step(self, done: int, samples: int, read: Callable[[], dict[str, float]]) -> None:
        """``done`` batches and ``samples`` samples so far; ``read()`` gives the running logs."""
        if self.bar is None or done >= self.n_batches:  # finish() reports the last batch
            return
        now = time.perf_counter()
        if now - self.last < REFRESH_S:
            return
        self.last = now
        rate = samples / max(now - self.started, 1e-9)
        self.bar.set_postfix(read(), samples_per_s=f"{rate:.0f}", refresh=False)
        self.bar.update(done - self.bar.n)

    def finish(self, logs: dict[str, float], samples: int) -> None:
        seconds = time.perf_counter() - self.started
        rate = f"{samples / max(seconds, 1e-9):.0f} samples/s"
        if self.bar is not None:
            self.bar.update(self.n_batches - self.bar.n)
            self.bar.set_postfix(logs, samples_per_s=rate.split()[0], refresh=False)
            self.bar.close()
        else:
            print(f"{self.title}: {_format(logs)} ({seconds:.2f} s, {rate})", file=self.stream,
                  flush=True)
