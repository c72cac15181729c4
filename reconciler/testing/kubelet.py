"""The kubelet's ConfigMap/Secret volume writer, for tests of what a pod sees.

``AtomicWriter(folder).write({"animals.yaml": b"..."})`` lays a folder out and updates it
exactly as the kubelet does (kubernetes ``pkg/volume/util/atomic_writer.go``,
``AtomicWriter.Write``, the version with steps 1-12)::

    folder/animals.yaml -> ..data/animals.yaml
    folder/..data -> ..2026_12_02_16_00_00.123456789
    folder/..2026_12_02_16_00_00.123456789/animals.yaml

An update writes a new timestamped folder, points a ``..data_tmp`` symlink at it, renames
that over ``..data`` (the one atomic step), creates the per-key links of new keys, removes
the links of dropped keys, then removes the old timestamped folder. ``on_step`` is called
with each step's name after it is done, so a test can act between two steps.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DATA_DIR", "NEW_DATA_DIR", "AtomicWriter", "FileProjection"]

DATA_DIR = "..data"
NEW_DATA_DIR = "..data_tmp"
MAX_FILE_NAME = 255
MAX_PATH = 4096
DEFAULT_MODE = 0o644  # a ConfigMap volume's defaultMode (420)


@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int = DEFAULT_MODE


Payload = Mapping[str, "bytes | FileProjection"]


class AtomicWriter:
    """Projects payloads into `target` (which must exist) as the kubelet does."""

    def __init__(
        self,
        target: Path,
        *,
        on_step: Callable[[str], None] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not target.is_dir():
            raise FileNotFoundError(f"no such folder: {target}")
        self.target = target
        self._on_step = on_step or (lambda _step: None)
        self._now = now

    def write(self, payload: Payload) -> bool:
        """Project `payload` (path -> bytes); False when nothing changed (no write)."""
        clean = {_validate(path): _projection(value) for path, value in payload.items()}
        data_dir = self.target / DATA_DIR
        try:
            old_ts = os.readlink(data_dir)  # (2)
        except FileNotFoundError:
            old_ts = ""
        to_remove: set[str] = set()
        should_write = True
        if old_ts:
            old_path = self.target / old_ts
            to_remove = _paths_to_remove(clean, old_path)  # (3)
            if not _should_write(clean, old_path) and not to_remove:  # (4)
                should_write, old_ts = False, ""
        if should_write:
            ts_dir = self._new_timestamp_dir()  # (5)
            for path, projection in clean.items():  # (6)
                full = ts_dir / path
                full.parent.mkdir(parents=True, exist_ok=True)
                full.write_bytes(projection.data)
                os.chmod(full, projection.mode)
            self._on_step("payload_written")
            new_data_dir = self.target / NEW_DATA_DIR
            os.symlink(ts_dir.name, new_data_dir)  # (8)
            self._on_step("data_tmp_linked")
            os.rename(new_data_dir, data_dir)  # (9) the atomic swap
            self._on_step("swapped")
        for path in clean:  # (10) links of the top-level names, created when missing
            link = self.target / path.split("/", 1)[0]
            if not link.is_symlink():
                os.symlink(f"{DATA_DIR}/{link.name}", link)
        self._on_step("links_created")
        for path in to_remove:  # (11) only names at the root of the volume
            if "/" not in path:
                (self.target / path).unlink(missing_ok=True)
        self._on_step("old_links_removed")
        if old_ts:  # (12)
            shutil.rmtree(self.target / old_ts, ignore_errors=True)
            self._on_step("old_removed")
        return should_write

    def _new_timestamp_dir(self) -> Path:
        """``os.MkdirTemp(target, "..2006_01_02_15_04_05.")``: the UTC time to the second,
        then Go's random suffix (decimal digits), mode 0755."""
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime(self._now()))
        for _ in range(10000):
            path = self.target / f"{stamp}{random.randrange(2**32)}"
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                continue
            os.chmod(path, 0o755)
            return path
        raise FileExistsError(f"no free timestamped folder name in {self.target}")


def _projection(value: bytes | FileProjection) -> FileProjection:
    return value if isinstance(value, FileProjection) else FileProjection(value)


def _validate(path: str) -> str:
    """atomic_writer.go validatePath: relative, no '..' element, not starting with '..',
    names of at most 255 bytes, paths of at most 4096."""
    if not path:
        raise ValueError("invalid path: must not be empty")
    if path.startswith("/"):
        raise ValueError(f"invalid path: must be relative path: {path}")
    if len(path) > MAX_PATH:
        raise ValueError(f"invalid path: must be less than or equal to {MAX_PATH} characters")
    items = path.split("/")
    for item in items:
        if item == "..":
            raise ValueError(f"invalid path: must not contain '..': {path}")
        if len(item.encode()) > MAX_FILE_NAME:
            raise ValueError("invalid path: filenames must be less than or equal to 255 characters")
    if items[0].startswith("..") and len(items[0]) > 2:
        raise ValueError(f"invalid path: must not start with '..': {path}")
    return os.path.normpath(path)


def _paths_to_remove(payload: Mapping[str, FileProjection], old_ts: Path) -> set[str]:
    """Every path in the old timestamped folder that no path of `payload` keeps."""
    found: set[str] = set()
    for folder, dirs, files in os.walk(old_ts):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, name), old_ts))
    kept: set[str] = set()
    for path in payload:
        while path:
            kept.add(path)
            path = os.path.dirname(path)
    return found - kept


def _should_write(payload: Mapping[str, FileProjection], old_ts: Path) -> bool:
    for path, projection in payload.items():
        try:
            if (old_ts / path).read_bytes() != projection.data:
                return True
        except FileNotFoundError:
            return True
    return False
