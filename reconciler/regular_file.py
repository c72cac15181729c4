"""Reading a file named by a user or a link without hanging on it or reading it forever."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["read_bounded"]


def read_bounded(path: Path | str, limit: int) -> bytes:
    """At most `limit` bytes of the regular file at `path` (links followed). A FIFO or a
    device is refused and the open never waits (O_NONBLOCK): a link to one must not hang a
    pass, nor /dev/zero fill the memory."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, min(limit - size, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
