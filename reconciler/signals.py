"""Signal handling that is safe whatever the main thread is doing when a signal lands.

A Python signal handler runs in the main thread between two bytecodes, perhaps while that
thread holds a lock the handler would take too: structlog's write lock, an ``Event``'s lock
(a second SIGTERM during the first handler's ``Event.set()``). The handler then waits on its
own thread forever. So the handler installed here does nothing; the interpreter's C-level
handler also writes the signal number to a wakeup pipe (``signal.set_wakeup_fd``), and a
thread reading that pipe calls the real handlers as ordinary code, free to log and take locks.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

__all__ = ["SignalThread"]

Handler = Callable[[signal.Signals], None]


def _noop(_signum: int, _frame: FrameType | None) -> None:
    """Installed so the C-level handler runs (it writes the wakeup byte)."""


class SignalThread:
    """Call ``handlers[signal]`` on a dedicated thread for each signal received.

    Start and stop it from the main thread (``signal`` only allows that); ``stop()`` restores
    the previous handlers and wakeup fd. Usable as a context manager.
    """

    def __init__(self, handlers: Mapping[signal.Signals, Handler]) -> None:
        self._handlers = dict(handlers)
        self._previous: dict[signal.Signals, Any] = {}
        self._previous_fd = -1
        self._write_fd = -1
        self._thread: threading.Thread | None = None

    def start(self) -> SignalThread:
        read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)  # the C handler must never block
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in self._handlers:
            self._previous[signum] = signal.signal(signum, _noop)
        self._thread = threading.Thread(
            target=self._dispatch, args=(read_fd,), name="signals", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._write_fd)  # the reader sees end of file and returns
        self._thread.join()
        self._thread = None

    def __enter__(self) -> SignalThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _dispatch(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while data := pipe.read(512):
                for number in data:
                    try:
                        signum = signal.Signals(number)
                    except ValueError:
                        continue
                    handler = self._handlers.get(signum)
                    if handler is not None:
                        handler(signum)
