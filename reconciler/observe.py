"""What is there now: version folders on disk, the current models.config, TFS's live status."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from reconciler.by_name import index_by_name
from reconciler.config_file import read_config_bytes
from reconciler.problems import InputError, Location, Problem
from reconciler.tfs_config import ServingConfig, parse_config

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class VersionDir:
    version: int
    path: str  # host path
    loadable: bool  # holds a non-empty saved_model.pb or saved_model.pbtxt
    plain_file: bool = False  # a file with a version's name: TFS takes it for one, and fails
    refused: str = ""  # why it is not taken although it is there (a link out of the root)


@dataclass(frozen=True)
class ModelDir:
    name: str
    path: str  # host path of the model's base_path
    exists: bool
    versions: tuple[VersionDir, ...] = ()
    error: str = ""  # why it could not be read (permission denied, a name too long...)
    outside: bool = False  # its base_path is outside the serving root: not seen from here
    refused: str = ""  # why it counts as absent although it is there (a link out of the root)

    @property
    def numbers(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(v.version for v in self.versions))

    @property
    def duplicates(self) -> dict[int, tuple[str, ...]]:
        """Versions named by more than one entry (`4` and `0004`), with their names."""
        names: dict[int, list[str]] = {}
        for version in self.versions:
            names.setdefault(version.version, []).append(os.path.basename(version.path))
        return {n: tuple(sorted(found)) for n, found in names.items() if len(found) > 1}

    def version(self, number: int) -> VersionDir | None:
        for version in self.versions:
            if version.version == number:
                return version
        return None


@dataclass(frozen=True)
class DiskState:
    models: tuple[ModelDir, ...] = ()

    def model(self, name: str) -> ModelDir | None:
        return self._by_name.get(name)

    @cached_property
    def _by_name(self) -> dict[str, ModelDir]:  # plans look up every model: no linear scans
        return index_by_name(self.models)


@dataclass(frozen=True)
class LiveVersion:
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""


@dataclass(frozen=True)
class LiveModel:
    name: str
    found: bool
    versions: tuple[LiveVersion, ...] = ()
    labels: tuple[tuple[str, int], ...] = ()  # label -> version TFS resolves it to

    @property
    def available(self) -> tuple[int, ...]:
        return tuple(sorted(v.version for v in self.versions if v.state == "AVAILABLE"))

    def latest(self, number: int) -> LiveVersion | None:
        """The newest status entry for a version (END entries stay listed after a reload)."""
        found = [v for v in self.versions if v.version == number]
        live = [v for v in found if v.state != "END"]
        return (live or found)[-1] if found else None


@dataclass(frozen=True)
class LiveStatus:
    reachable: bool
    models: tuple[LiveModel, ...] = ()
    error: str = ""

    def model(self, name: str) -> LiveModel | None:
        return self._by_name.get(name)

    @cached_property
    def _by_name(self) -> dict[str, LiveModel]:  # plans look up every model: no linear scans
        return index_by_name(self.models)


@dataclass(frozen=True)
class Observed:
    """Everything a plan needs to know about the present."""

    disk: DiskState
    config: ServingConfig | None  # None: no models.config yet
    live: LiveStatus | None = None  # None: not asked
    config_path: str = "models.config"
    # What the last apply left in models.config (the daemon remembers it), when known: a
    # model the file has lost is put back as it was.
    applied: ServingConfig | None = None


class TfsUnreachable(Exception):
    """TFS did not answer (connection refused, timeout, not HTTP)."""


class StatusSource(Protocol):
    """Reads TFS's live status: the REST client in production, anything alike in tests."""

    def model_status(self, name: str) -> LiveModel: ...

    def label_version(self, name: str, label: str) -> int | None: ...


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


def read_config(path: Path) -> ServingConfig | None:
    """The current models.config, or None when there is none yet."""
    try:
        raw = read_config_bytes(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise InputError([Problem(Location(str(path)), "", f"cannot read: {error}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError([Problem(Location(str(path)), "", "not UTF-8 text")]) from None
    return parse_config(text, str(path))


LIVE_READERS = 8
"""Requests to TFS in flight at once while reading many models' status."""


def read_live(
    source: StatusSource, models: Iterable[str], labels: Mapping[str, Iterable[str]]
) -> LiveStatus:
    """Ask TFS for each model's versions and where each of its labels resolves."""

    def one(name: str) -> LiveModel:
        status = source.model_status(name)
        resolved = []
        if status.found:
            for label in sorted(set(labels.get(name, ()))):
                version = source.label_version(name, label)
                if version is not None:
                    resolved.append((label, version))
        return LiveModel(name, status.found, status.versions, tuple(resolved))

    names = sorted(set(models))
    if len(names) <= 1:
        try:
            return LiveStatus(reachable=True, models=tuple(one(n) for n in names))
        except TfsUnreachable as error:
            return LiveStatus(reachable=False, error=str(error))
    pool = ThreadPoolExecutor(max_workers=min(LIVE_READERS, len(names)))
    try:
        found = tuple(pool.map(one, names))
    except TfsUnreachable as error:
        return LiveStatus(reachable=False, error=str(error))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # one failure decides: stop asking
    return LiveStatus(reachable=True, models=found)


def observe(
    models: Mapping[str, str],
    labels: Mapping[str, Iterable[str]],
    *,
    models_dir: Path,
    serving_root: str,
    config_path: Path,
    live_source: StatusSource | None,
    live_models: Iterable[str] | None = None,
) -> Observed:
    """Read disk, models.config and (when a source is given) live TFS.

    `models` maps each desired model to its base_path; models in the current config are
    scanned too, and `labels` names the labels to resolve per model.
    """
    config = read_config(config_path)
    base_paths = dict(models)
    for model in config.models if config is not None else ():
        base_paths.setdefault(model.name, model.base_path)
    disk = scan_disk(base_paths, serving_root, models_dir)
    all_labels = {name: set(names) for name, names in labels.items()}
    for model in config.models if config is not None else ():
        all_labels.setdefault(model.name, set()).update(label for label, _ in model.labels)
    live = None
    if live_source is not None:
        asked = base_paths if live_models is None else set(live_models) & set(base_paths)
        live = read_live(live_source, asked, all_labels)
    return Observed(disk, config, live, str(config_path))
