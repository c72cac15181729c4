"""One daemon per state folder: an exclusive flock on ``<state_dir>/daemon.lock``.

The lock is held by an open file descriptor, so the kernel releases it when
the process exits, however it exits: a lock file left behind by a killed
daemon is not a stale lock, only a file with an old pid in it. The holder's
pid is written into the file so that a second daemon can name the first one.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["LOCK_FILE_NAME", "AlreadyRunningError", "DaemonLock", "acquire"]

LOCK_FILE_NAME = "daemon.lock"


class AlreadyRunningError(RuntimeError):
    """Another process holds the lock; ``pid`` is its pid when it could be read."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(
            f"another tfs-reconciler daemon ({holder}) already holds {path}; "
            "stop it first, or give this one another state folder"
        )


@dataclass
class DaemonLock:
    """A held lock; ``release()`` (or leaving the ``with`` block) lets it go."""

    path: Path
    _fd: int | None = field(repr=False)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DaemonLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def acquire(state_dir: Path, name: str = LOCK_FILE_NAME) -> DaemonLock:
    """Take the lock file ``name`` in ``state_dir`` (created if missing) or raise.

    Raises AlreadyRunningError, naming the holder's pid, when another
    process holds it. Never waits.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise AlreadyRunningError(path, pid) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DaemonLock(path=path, _fd=fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    try:
        return int(text)
    except ValueError:
        return None
