"""Signal handling that is safe whatever the main thread is doing when a signal lands.

``GracefulInterrupt`` (a command): the first SIGINT or SIGTERM asks the work to stop at its
next safe point, the second acts at once. ``SignalThread`` (the daemon): handlers that log
and take locks.

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

__all__ = ["GracefulInterrupt", "SignalThread"]

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


class GracefulInterrupt:
    """While active, the first SIGINT or SIGTERM sets ``requested`` and says on stderr that
    the work stops at its next safe point; the next one acts as usual (KeyboardInterrupt,
    termination). Enter and exit it in the main thread.

    The handler only sets an attribute, writes with ``os.write`` and reinstalls the default
    handlers: nothing that takes a lock the interrupted code may hold.
    """

    def __init__(self, message: str) -> None:
        self._message = message
        self._previous: dict[signal.Signals, Any] = {}
        self.requested = False

    def __enter__(self) -> GracefulInterrupt:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. nohup: left ignored
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        name = signal.Signals(signum).name
        os.write(2, f"\n{name}: {self._message} ({name} again stops at once)\n".encode())
