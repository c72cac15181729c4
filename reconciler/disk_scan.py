"""The version folders on disk, as TFS's file-system source finds them
(file_system_storage_path_source.cc): each model's base_path mapped to this host, each child
whose name TFS parses as a version, and whether it holds a SavedModel."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Mapping
from pathlib import Path

from reconciler.state import DiskState, ModelDir, VersionDir

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
INT64_MAX = 2**63 - 1


def host_path(base_path: str, serving_root: str, models_dir: Path) -> Path | None:
    """Where a path TFS sees (under the serving root) lives on this host; None if outside."""
    root = posixpath.normpath(serving_root)
    path = posixpath.normpath(base_path)
    if path == root:
        return models_dir
    if not path.startswith(root.rstrip("/") + "/"):
        return None
    return models_dir / posixpath.relpath(path, root)


OUTSIDE_ROOT = (
    "is a link to a folder outside the models folder: TFS is given only what lies under"
    " its serving root, links included"
)


def scan_model(
    name: str, folder: Path, root: str | None = None, models_dir: str | None = None
) -> ModelDir:
    """The version folders of one model. With `root` (the models folder's real path), a
    model folder, version folder or SavedModel file that a link leads out of it counts as
    absent: in TFS's container the link would lead elsewhere, or nowhere; the rule for a
    base_path outside the serving root, applied after links."""
    # os.scandir, not Path.iterdir + is_dir: the directory entry's type spares a stat per
    # entry, and plain strings spare pathlib's overhead (a scan of 1,000 models took ~2x).
    base = str(folder)
    plain = os.path.dirname(base) == models_dir and not os.path.islink(base)
    if root is not None and not plain and not _lies_in(os.path.realpath(base), root):
        return ModelDir(name, base, exists=False, refused=OUTSIDE_ROOT)
    try:
        with os.scandir(base) as listing:
            entries = list(listing)
    except (FileNotFoundError, NotADirectoryError):
        return ModelDir(name, base, exists=False)
    except OSError as error:  # unreadable: what is in it is unknown, not absent
        return ModelDir(name, base, exists=False, error=error.strerror or str(error))
    versions = []
    for entry in entries:
        # As file_system_storage_path_source.cc: every child whose name parses as an int64 is
        # a version (`0004` is version 4), a plain file too (its load then fails).
        number = _version_number(entry.name)
        if number is None:
            continue
        if not _is_dir(entry):
            versions.append(VersionDir(number, entry.path, False, plain_file=True))
        elif root is not None and _is_link(entry) and not _lies_in(os.path.realpath(entry), root):
            versions.append(VersionDir(number, entry.path, False, refused=OUTSIDE_ROOT))
        else:
            versions.append(VersionDir(number, entry.path, _loadable(entry.path, root)))
    ordered = sorted(versions, key=lambda v: (v.version, os.path.basename(v.path)))
    return ModelDir(name, base, True, tuple(ordered))


def _lies_in(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _version_number(name: str) -> int | None:
    """The version a name stands for, as TFS parses it (file_system_storage_path_source.cc
    ParseVersionNumber: absl::SimpleAtoi into an int64): surrounding ASCII whitespace and a
    sign allowed, decimal digits only; `0004` and `+4` are 4. TFS ignores what does not parse."""
    body = name.strip(" \t\n\v\f\r")
    sign = -1 if body[:1] == "-" else 1
    if body[:1] in ("-", "+"):
        body = body[1:]
    if not body or not all("0" <= c <= "9" for c in body):
        return None
    number = sign * int(body)
    return number if -INT64_MAX - 1 <= number <= INT64_MAX else None


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks, as Path.is_dir does
    except OSError:
        return False


def _loadable(folder: str, root: str | None = None) -> bool:
    for file in SAVED_MODEL_FILES:
        path = os.path.join(folder, file)
        try:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                if root is not None and not _lies_in(os.path.realpath(path), root):
                    continue
                info = os.stat(path)
            if stat.S_ISREG(info.st_mode) and info.st_size > 0:
                return True
        except OSError:
            continue
    return False


def scan_disk(base_paths: Mapping[str, str], serving_root: str, models_dir: Path) -> DiskState:
    """Scan the version folders of each model (name -> base_path as TFS sees it)."""
    models = []
    root = os.path.realpath(models_dir)
    for name, base_path in sorted(base_paths.items()):
        folder = host_path(base_path, serving_root, models_dir)
        if folder is None:
            models.append(ModelDir(name, base_path, exists=False, outside=True))
        else:
            models.append(scan_model(name, folder, root, str(models_dir)))
    return DiskState(tuple(models))
