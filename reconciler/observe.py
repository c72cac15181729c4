"""What is there now: version folders on disk, the current models.config, TFS's live status."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Generic, TypeVar, cast

from reconciler.config_file import read_config_bytes
from reconciler.disk_scan import host_path, scan_disk, scan_model
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
