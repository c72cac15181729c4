"""Opening the reconciler's own files without following a symbolic link planted in their place.

The models folder, and so the lock and the state folder beside models.config, is often
writable by whoever publishes models, while the reconciler typically runs as root: a symlink
named `history.jsonl` or `.models.config.lock` would make it write into any file. Its own
files are opened with O_NOFOLLOW, and its state folder must be a real folder of its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

__all__ = [
    "UnsafePathError",
    "check_plain",
    "followed",
    "open_no_follow",
    "private_dir",
    "read_plain",
]


class UnsafePathError(OSError):
    """A path the reconciler writes is a symbolic link, or a folder it must not trust."""

    def __init__(self, path: Path | str, why: str) -> None:
        super().__init__(errno.ELOOP, f"refusing {path}: {why}")
        self.path = str(path)

    def __str__(self) -> str:
        return str(self.strerror)


def open_no_follow(path: Path | str, flags: int, mode: int = 0o600) -> int:
    """os.open that refuses a symbolic link as the last component (O_NOFOLLOW)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafePathError(
                path, "it is a symbolic link, and the reconciler does not follow links it writes"
            ) from None
        raise


def followed(path: Path) -> Path:
    """The real path of a file the user may have linked on purpose (models.config): a link
    is followed only when this user or root made it, as the kernel's protected_symlinks does
    in shared folders; one planted by someone else who can write its folder is refused."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return Path(os.path.realpath(path))
    if stat.S_ISLNK(info.st_mode) and info.st_uid not in (os.geteuid(), 0):
        raise UnsafePathError(
            path,
            f"it is a symbolic link made by uid {info.st_uid}, not by this user or root:"
            " not followed (name the file it points at instead)",
        )
    return Path(os.path.realpath(path))


def check_plain(fd: int, path: Path | str) -> None:
    """Refuse an open file that is not a plain file of its own: a FIFO or device would block
    or never end, a hard link planted by someone else would be written through."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        raise UnsafePathError(path, "not a plain file of its own (a hard link, a FIFO?)")


def read_plain(path: Path | str) -> bytes:
    """The bytes of one of the reconciler's own files, opened without following a link, in a
    folder that is no link either and that others cannot write: a planted state folder would
    feed `history` and `rollback` records someone else wrote."""
    folder = os.path.dirname(path) or "."
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePathError(folder, "the state folder is a symbolic link or writable by others")
    fd = open_no_follow(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        check_plain(fd, path)
        return handle.read()


def private_dir(path: Path) -> Path:
    """`path` as a folder only this user can write: created with mode 0700 when missing;
    refused when it is a symbolic link, not a folder, another user's, or writable by others."""
    if not os.path.lexists(path):
        with contextlib.suppress(FileExistsError):  # a file in the way: mkdir below says so
            path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # made at the same moment elsewhere
            os.mkdir(path, 0o700)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(
            path,
            "the state folder is a symbolic link (name the folder it points at with"
            " --state-dir, or remove the link)",
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(path, "the state folder is not a folder")
    if info.st_uid != os.geteuid():
        raise UnsafePathError(
            path,
            f"the state folder belongs to uid {info.st_uid}, not to this user"
            f" (uid {os.geteuid()}): run as its owner",
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePathError(
            path, f"the state folder is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
        )
    return path
