"""What is there now: version folders on disk, the current models.config, TFS's live status."""

from __future__ import annotations

import os
import posixpath
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Generic, TypeVar, cast

from reconciler.config_file import read_config_bytes
from reconciler.problems import InputError, Location, Problem
from reconciler.state import (
    DiskState,
    LiveModel,
    LiveStatus,
    LiveVersion,
    ModelDir,
    Observed,
    StatusSource,
    TfsUnreachable,
    VersionDir,
)
from reconciler.tfs_config import ServingConfig, parse_config

# The values this module reads are defined in `state`; the shell imports them from here too.
__all__ = [
    "DiskState",
    "LiveModel",
    "LiveStatus",
    "LiveVersion",
    "ModelDir",
    "Observed",
    "Prefetched",
    "StatusSource",
    "TfsUnreachable",
    "VersionDir",
    "host_path",
    "observe",
    "read_config",
    "read_live",
    "scan_disk",
    "scan_model",
]

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

_Item = TypeVar("_Item")
_Read = TypeVar("_Read")


class _Cancelled(Exception):
    """A read nobody waits for any more was stopped."""


def _read_all(
    items: Sequence[_Item], read: Callable[[_Item], _Read], cancel: threading.Event | None = None
) -> list[_Read]:
    """`read` of every item, in order, by at most LIVE_READERS threads that take the next item
    when done (no task queued per item). The first failure (TfsUnreachable, typically) ends
    it: no reader starts another item, and it is raised at once; requests already in flight
    finish on their own and are dropped. A set `cancel` stops the readers the same way
    (_Cancelled)."""
    if len(items) <= 1:
        return [read(item) for item in items]
    results: list[_Read | None] = [None] * len(items)
    done = threading.Condition()
    taken = finished = 0
    failure: list[Exception] = []

    def reader() -> None:
        nonlocal taken, finished
        while True:
            with done:
                if cancel is not None and cancel.is_set() and not failure:
                    failure.append(_Cancelled())
                    done.notify_all()
                if failure or taken == len(items):
                    return
                index = taken
                taken += 1
            try:
                value = read(items[index])
            except Exception as error:
                with done:
                    failure.append(error)
                    done.notify_all()
                return
            with done:
                results[index] = value
                finished += 1
                done.notify_all()

    for _ in range(min(LIVE_READERS, len(items))):
        threading.Thread(target=reader, name="live-reader", daemon=True).start()
    with done:
        done.wait_for(lambda: bool(failure) or finished == len(items))
    if failure:
        raise failure[0]
    return cast("list[_Read]", results)


def _read_model(source: StatusSource, name: str, labels: Iterable[str]) -> LiveModel:
    status = source.model_status(name)
    resolved = []
    # A label answers only through a version that is AVAILABLE (GetModelMetadata takes a
    # servable handle): with none, every label lookup would fail; it is not asked.
    if status.found and status.available:
        for label in sorted(set(labels)):
            version = source.label_version(name, label)
            if version is not None:
                resolved.append((label, version))
    return LiveModel(name, status.found, status.versions, tuple(resolved))


def read_live(
    source: StatusSource,
    models: Iterable[str],
    labels: Mapping[str, Iterable[str]],
    cancel: threading.Event | None = None,
) -> LiveStatus:
    """Ask TFS for each model's versions and where each of its labels resolves."""
    names = sorted(set(models))
    try:
        found = _read_all(
            names, lambda name: _read_model(source, name, labels.get(name, ())), cancel
        )
    except TfsUnreachable as error:
        return LiveStatus(reachable=False, error=str(error))
    return LiveStatus(reachable=True, models=tuple(found))


def _read_more(
    source: StatusSource,
    first: LiveStatus,
    models: Iterable[str],
    labels: Mapping[str, Iterable[str]],
) -> LiveStatus:
    """`first` completed: the models it lacks, and the labels of its models it did not ask."""
    if not first.reachable:
        return first
    read = {m.name: m for m in first.models}
    rest = read_live(source, set(models) - set(read), labels)
    if not rest.reachable:
        return rest
    asks = [
        (model.name, label)
        for model in first.models
        if model.found and model.available
        for label in sorted(set(labels.get(model.name, ())) - {lb for lb, _ in model.labels})
    ]
    try:
        versions = _read_all(asks, lambda ask: source.label_version(*ask))
    except TfsUnreachable as error:
        return LiveStatus(reachable=False, error=str(error))
    more: dict[str, list[tuple[str, int]]] = {}
    for (name, label), version in zip(asks, versions, strict=True):
        if version is not None:
            more.setdefault(name, []).append((label, version))
    for name, extra in more.items():
        model = read[name]
        read[name] = replace(model, labels=tuple(sorted((*model.labels, *extra))))
    read.update((m.name, m) for m in rest.models)
    return LiveStatus(reachable=True, models=tuple(read[name] for name in sorted(read)))


class _Slot:
    """One answer read ahead: `hit` once it was read (its value, or the error it raised)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.hit = False
        self.value: object = None
        self.error: Exception | None = None


class Prefetched:
    """A StatusSource that starts reading, in the background, every model models.config
    names (its status, and its labels when a version is AVAILABLE), for a read of live state
    that follows soon: `diff` and `status` ask TFS while they parse the desired state. Each
    answer read ahead is handed out once, waited for if still on its way; anything else, and
    what the read ahead did not get to, is asked of `source`."""

    def __init__(self, source: StatusSource, config_path: Path) -> None:
        self._source = source
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._lock = threading.Lock()
        try:
            config = read_config(config_path)
        except InputError:
            config = None
        models = (
            {m.name: sorted({label for label, _ in m.labels}) for m in config.models}
            if config
            else {}
        )
        for name, labels in models.items():
            self._slots[(name, "")] = _Slot()
            self._slots.update(((name, "label:" + label), _Slot()) for label in labels)
        self._all = dict(self._slots)  # every slot, for the reader to fill; _slots: not taken yet
        if models:
            work = sorted(models.items())
            threading.Thread(target=self._run, args=(work,), name="live-read", daemon=True).start()

    def _run(self, work: list[tuple[str, list[str]]]) -> None:
        try:
            _read_all(work, self._read_one)
        except Exception:  # in its slot: the caller who asks for it gets it
            pass
        finally:
            for slot in self._all.values():  # what was not read: asked of the source
                slot.done.set()

    def _read_one(self, work: tuple[str, list[str]]) -> None:
        name, labels = work
        status = self._fill((name, ""), partial(self._source.model_status, name))
        if status.found and status.available:
            for label in labels:
                self._fill(
                    (name, "label:" + label), partial(self._source.label_version, name, label)
                )

    def _fill(self, key: tuple[str, str], read: Callable[[], _Read]) -> _Read:
        slot = self._all[key]
        try:
            value = read()
        except Exception as error:
            slot.error, slot.hit = error, True
            slot.done.set()
            raise
        slot.value, slot.hit = value, True
        slot.done.set()
        return value

    def _take(self, key: tuple[str, str]) -> _Slot | None:
        with self._lock:
            slot = self._slots.pop(key, None)
        if slot is None:
            return None
        slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return slot if slot.hit else None

    def model_status(self, name: str) -> LiveModel:
        slot = self._take((name, ""))
        return cast("LiveModel", slot.value) if slot else self._source.model_status(name)

    def label_version(self, name: str, label: str) -> int | None:
        slot = self._take((name, "label:" + label))
        return cast("int | None", slot.value) if slot else self._source.label_version(name, label)


class _Background(Generic[_Read]):
    """`work` run in a thread of its own; `result` waits for it (and raises what it raised)."""

    def __init__(self, work: Callable[[], _Read]) -> None:
        self._value: list[_Read] = []
        self._error: list[Exception] = []

        def run() -> None:
            try:
                self._value.append(work())
            except Exception as error:
                self._error.append(error)

        self._thread = threading.Thread(target=run, name="live-read", daemon=True)
        self._thread.start()

    def result(self) -> _Read:
        self._thread.join()
        if self._error:
            raise self._error[0]
        return self._value[0]


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
    scanned too, and `labels` names the labels to resolve per model. The live state of the
    desired models is read while models.config is parsed and the disk scanned (TFS answers
    from another process); what only models.config names is asked for after.
    """
    wanted = set(models) if live_models is None else set(live_models)
    early = None
    cancel = threading.Event()
    if live_source is not None:
        source = live_source
        first = {name: tuple(labels.get(name, ())) for name in wanted & set(models)}
        early = _Background(lambda: read_live(source, first, first, cancel))
    try:
        config = read_config(config_path)
        base_paths = dict(models)
        for model in config.models if config is not None else ():
            base_paths.setdefault(model.name, model.base_path)
        disk = scan_disk(base_paths, serving_root, models_dir)
    except BaseException:
        cancel.set()  # nobody will look at the answers
        raise
    all_labels = {name: set(names) for name, names in labels.items()}
    for model in config.models if config is not None else ():
        all_labels.setdefault(model.name, set()).update(label for label, _ in model.labels)
    live = None
    if early is not None and live_source is not None:
        asked = base_paths if live_models is None else wanted & set(base_paths)
        live = _read_more(live_source, early.result(), asked, all_labels)
    return Observed(disk, config, live, str(config_path))
