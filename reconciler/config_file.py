"""models.config on disk: atomic replacement, and the last-known-good copy in the state folder."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path

import structlog

from reconciler.no_follow import followed, private_dir, read_plain
from reconciler.regular_file import read_bounded

log = structlog.get_logger("reconciler.config_file")

LAST_KNOWN_GOOD = "last-known-good.config"
MAX_CONFIG_BYTES = 64 * 1024 * 1024  # models.config for 10,000 models is about 5 MiB


def default_state_dir(config_path: Path) -> Path:
    """Beside the file models.config really is (a symlink's target), so every path that
    names it shares one history."""
    return Path(os.path.realpath(config_path)).parent / ".tfs-reconciler"


def read_text(path: Path) -> str | None:
    try:
        return read_config_bytes(path).decode("utf-8")
    except FileNotFoundError:
        return None


def read_config_bytes(path: Path) -> bytes:
    """models.config's bytes: a regular file (a FIFO or device in its place is refused, never
    waited on), at most MAX_CONFIG_BYTES."""
    raw = read_bounded(path, MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_CONFIG_BYTES} bytes", str(path))
    return raw


def write_atomic(path: Path, text: str, *, follow: bool = True) -> bool:
    """Replace `path` with `text` (temp file in the same folder, fsync, rename; mode kept).

    Returns False and touches nothing when the file already holds exactly `text`. With
    `follow` (models.config, which a user may link on purpose) a symbolic link stays one: the
    file it points at is replaced; without it, a link in `path`'s place is refused.
    """
    data = text.encode("utf-8")
    try:
        path = followed(path) if follow else path
        try:
            if follow:
                if read_config_bytes(path) == data:
                    return False
                mode: int | None = stat.S_IMODE(path.stat().st_mode)
            else:
                if read_plain(path) == data:
                    return False
                mode = stat.S_IMODE(os.lstat(path).st_mode)
        except FileNotFoundError:
            mode = None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:  # name the file being written, not the temporary one
        raise OSError(error.errno, f"cannot write {path}: {error.strerror}") from error
    try:
        with os.fdopen(fd, "wb") as handle:
            # by descriptor: the temp file's name could be swapped for a link before a chmod
            os.fchmod(handle.fileno(), mode if mode is not None else 0o644)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)  # renames over a link in `path`'s place, never through it
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)
    return True


def remove_stale_temps(path: Path) -> tuple[str, ...]:
    """Remove the temporary files `write_atomic` left beside `path` when it was killed between
    writing and renaming (`.NAME.XXXXXXXX.tmp`, as tempfile.mkstemp names them). The folder
    is opened once without following a link, and each name is looked at and removed through
    that descriptor, so a folder swapped for a link meanwhile leads nowhere else; only regular
    files of that pattern owned by this user or root are removed, never a link, a folder or a
    FIFO, nor what a link points at. Call it while holding the config's lock, so no other
    write of ours is in flight. Returns the names removed."""
    path = Path(os.path.realpath(path))
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
    try:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return ()
    removed = []
    try:
        try:
            names = [name for name in os.listdir(folder) if pattern.fullmatch(name)]
        except OSError:
            return ()
        for name in names:
            try:
                info = os.stat(name, dir_fd=folder, follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode) or info.st_uid not in (os.geteuid(), 0):
                    continue
                os.unlink(name, dir_fd=folder)
            except OSError as error:
                log.warning(
                    "stale_temp_not_removed", path=str(path.parent / name), error=str(error)
                )
                continue
            removed.append(name)
    finally:
        os.close(folder)
    if removed:
        log.info("stale_temps_removed", folder=str(path.parent), names=sorted(removed))
    return tuple(sorted(removed))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_last_known_good(state_dir: Path, text: str) -> None:
    write_atomic(private_dir(state_dir) / LAST_KNOWN_GOOD, text, follow=False)


def last_known_good(state_dir: Path) -> str | None:
    try:
        return read_plain(state_dir / LAST_KNOWN_GOOD).decode("utf-8")
    except FileNotFoundError:
        return None
