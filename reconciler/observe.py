"""What is there now: version folders on disk, the current models.config, TFS's live status."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Generic, TypeVar, cast

from reconciler.config_file import read_config_bytes
from reconciler.disk_scan import host_path, scan_disk, scan_model
from reconciler.fan_out import LIVE_READERS, each_in_threads
from reconciler.problems import InputError, Location, Problem
from reconciler.state import (
    DiskState,
    LiveModel,
    LiveStatus,
    LiveVersion,
    ManyStatusSource,
    ModelDir,
    Observed,
    StatusSource,
    TfsUnreachable,
    VersionDir,
)
from reconciler.tfs_config import ServingConfig, parse_config

# The values this module reads are defined in `state`; the shell imports them from here too.
__all__ = [
    "LIVE_READERS",
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
    "read_one_model",
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


_Read = TypeVar("_Read")


def read_one_model(source: StatusSource, name: str, labels: Iterable[str]) -> LiveModel:
    """A model's status and its labels, a call each (for sources that answer one thing a call)."""
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


def read_models(
    source: StatusSource,
    work: Sequence[tuple[str, Sequence[str]]],
    cancelled: Callable[[], bool] | None = None,
) -> list[LiveModel]:
    """Each model's status and where its labels resolve: in one go from a source that can,
    else a call each, LIVE_READERS at a time. Raises what the source raises."""
    if isinstance(source, ManyStatusSource):
        return source.read_models(work, cancelled)
    return each_in_threads(
        work, lambda item: read_one_model(source, *item), width=LIVE_READERS, cancelled=cancelled
    )


def read_live(
    source: StatusSource,
    models: Iterable[str],
    labels: Mapping[str, Iterable[str]],
    cancelled: Callable[[], bool] | None = None,
) -> LiveStatus:
    """Ask TFS for each model's versions and where each of its labels resolves."""
    work = [(name, sorted(set(labels.get(name, ())))) for name in sorted(set(models))]
    try:
        found = read_models(source, work, cancelled)
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
        versions = each_in_threads(asks, lambda ask: source.label_version(*ask), width=LIVE_READERS)
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


class Prefetched:
    """A StatusSource that starts reading, in the background, every model models.config
    names (its status, and its labels when a version is AVAILABLE), for a read of live state
    that follows soon: `diff` and `status` ask TFS while they parse the desired state. Each
    answer read ahead is handed out once (waited for if still on its way); anything else,
    and everything when the read ahead failed, is asked of `source`."""

    def __init__(self, source: StatusSource, config_path: Path) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._status: dict[str, LiveModel] = {}
        self._labels: dict[tuple[str, str], int | None] = {}
        try:
            config = read_config(config_path)
        except InputError:
            config = None
        work = sorted(
            (m.name, sorted({label for label, _ in m.labels}))
            for m in (config.models if config else ())
        )
        self._ahead = _Background(lambda: read_models(source, work)) if work else None
        self._work = dict(work)

    def _arrived(self) -> None:
        """Wait for the read ahead, once; file its answers."""
        with self._lock:
            ahead, self._ahead = self._ahead, None
            if ahead is None:
                return
            try:
                models = ahead.result()
            except Exception:  # asked again of the source by whoever needs it
                return
            for model in models:
                self._status[model.name] = replace(model, labels=())
                if model.found and model.available:
                    resolved = dict(model.labels)
                    for label in self._work[model.name]:
                        self._labels[(model.name, label)] = resolved.get(label)

    def _take_status(self, name: str) -> LiveModel | None:
        self._arrived()
        with self._lock:
            return self._status.pop(name, None)

    def _take_label(self, name: str, label: str) -> tuple[bool, int | None]:
        self._arrived()
        with self._lock:
            if (name, label) not in self._labels:
                return False, None
            return True, self._labels.pop((name, label))

    def model_status(self, name: str) -> LiveModel:
        return self._take_status(name) or self._source.model_status(name)

    def label_version(self, name: str, label: str) -> int | None:
        hit, version = self._take_label(name, label)
        return version if hit else self._source.label_version(name, label)

    def read_models(
        self, work: Sequence[tuple[str, Sequence[str]]], cancelled: Callable[[], bool] | None = None
    ) -> list[LiveModel]:
        found: list[LiveModel | None] = []
        missing: list[tuple[int, str, Sequence[str]]] = []
        for index, (name, labels) in enumerate(work):
            status = self._take_status(name)
            resolved: list[tuple[str, int]] = []
            for label in (
                sorted(set(labels)) if status and status.found and status.available else ()
            ):
                hit, version = self._take_label(name, label)
                if not hit:
                    status = None
                    break
                if version is not None:
                    resolved.append((label, version))
            found.append(status and replace(status, labels=tuple(resolved)))
            if status is None:
                missing.append((index, name, labels))
        if missing:
            more = read_models(self._source, [(n, lb) for _, n, lb in missing], cancelled)
            for (index, _, _), model in zip(missing, more, strict=True):
                found[index] = model
        return cast("list[LiveModel]", found)


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
        early = _Background(lambda: read_live(source, first, first, cancel.is_set))
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
