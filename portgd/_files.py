"""Writing files atomically: a failed or interrupted write never leaves a partial file, a
stray temporary file, or harm to an old one."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

#: The signals a write holds back until the file is complete (Ctrl-C and ``kill``).
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (no race with threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def signals_held() -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM back for the duration of the block, then deliver them.

    Yields the list the held signals are recorded in. On leaving the block the previous
    handlers come back and each held signal is raised again, so Ctrl-C becomes a
    KeyboardInterrupt (or SIGTERM ends the process) only once the block has finished. Only
    the main thread can handle signals; elsewhere the block runs unprotected.
    """
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return

    def hold(signum: int, frame: object) -> None:
        held.append(signum)

    previous = {}
    try:
        for signum in HELD_SIGNALS:
            previous[signum] = signal.signal(signum, hold)
        yield held
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


def write_atomically(target: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(handle)`` on a temporary file beside ``target``, then rename it into place.

    The data is flushed and fsynced before the rename, and the folder after it, so after a
    crash ``target`` holds either its old content or the complete new one. The file gets
    the usual permissions (0666 less the umask), not the temporary file's 0600. On any error
    the temporary file is removed and the error re-raised. Ctrl-C and SIGTERM are held back
    until the file is complete (:func:`signals_held`), so an interrupt never leaves a
    temporary file behind nor reports a write as failed that has in fact happened.
    """
    folder = target.parent
    with signals_held():
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o666 & ~_umask())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        if hasattr(os, "O_DIRECTORY"):
            directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
