"""One writer per models.config: an exclusive flock on ``.<config name>.lock`` beside it.

The daemon holds it for its lifetime, ``apply`` and ``rollback`` for theirs, so two writers
never interleave their phases. The lock is held by an open file descriptor, so the kernel
releases it when the process exits, however it exits: a lock file left behind by a killed
process is not a stale lock, only a file naming an old holder. The holder writes its pid and
role into the file so that a refused writer can name it.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from reconciler.no_follow import check_plain, followed, open_no_follow

__all__ = ["AlreadyRunningError", "ConfigLock", "acquire", "lock_path"]


class AlreadyRunningError(RuntimeError):
    """Another process holds the lock; ``pid`` and ``role`` when they could be read."""

    def __init__(self, config: Path, path: Path, pid: int | None, role: str | None) -> None:
        self.path = path
        self.pid = pid
        holder = ", ".join(
            part for part in (role, f"pid {pid}" if pid is not None else None) if part
        )
        super().__init__(
            f"another tfs-reconciler ({holder or 'unknown'}) is changing {config} (it holds "
            f"{path}); let it finish or stop it first. While a daemon runs, change the desired "
            "state and let it apply"
        )


def lock_path(config: Path) -> Path:
    """Beside the file models.config really is, so a symlink to it takes the same lock."""
    real = Path(os.path.realpath(config))
    return real.parent / f".{real.name}.lock"


@dataclass
class ConfigLock:
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

    def __enter__(self) -> ConfigLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def acquire(config: Path, role: str) -> ConfigLock:
    """Take the lock of the models.config at ``config`` as ``role`` (daemon, apply...), or
    raise AlreadyRunningError naming the holder. Never waits."""
    path = lock_path(followed(config))
    # The models folder is often writable by whoever publishes models: a symlink or a hard
    # link planted under the lock's name must not make the holder truncate another file.
    fd = open_no_follow(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o644)
    try:
        check_plain(fd, path)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid, holder_role = _read_holder(fd)
        os.close(fd)
        raise AlreadyRunningError(config, path, pid, holder_role) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {role}\n".encode(), 0)
    return ConfigLock(path=path, _fd=fd)


def _read_holder(fd: int) -> tuple[int | None, str | None]:
    words = os.pread(fd, 128, 0).decode(errors="replace").split()
    try:
        pid = int(words[0])
    except (IndexError, ValueError):
        return None, None
    return pid, " ".join(words[1:]) or None
