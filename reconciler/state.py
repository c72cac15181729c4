"""What is there now, as values: version folders on disk, TFS's live status, and everything a
plan is given (`Observed`). `observe` reads them; the core only reads these types."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, runtime_checkable

from reconciler.by_name import index_by_name
from reconciler.errors import TransientError
from reconciler.tfs_config import ServingConfig
from reconciler.version_state import VersionState


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
        return tuple(sorted(v.version for v in self.versions if v.state == VersionState.AVAILABLE))

    def latest(self, number: int) -> LiveVersion | None:
        """The newest status entry for a version (END entries stay listed after a reload)."""
        found = [v for v in self.versions if v.version == number]
        live = [v for v in found if v.state != VersionState.END]
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


class TfsUnreachable(TransientError):
    """TFS did not answer (connection refused, timeout, not HTTP)."""


class StatusSource(Protocol):
    """Reads TFS's live status: the REST client in production, anything alike in tests."""

    def model_status(self, name: str) -> LiveModel: ...

    def label_version(self, name: str, label: str) -> int | None: ...


@runtime_checkable
class ManyStatusSource(StatusSource, Protocol):
    """A StatusSource that reads many models at once, cheaper than a call each."""

    def read_models(
        self, work: Sequence[tuple[str, Sequence[str]]], cancelled: Callable[[], bool] | None = None
    ) -> list[LiveModel]:
        """Each named model's status and, when one of its versions is AVAILABLE, where each
        of its labels resolves, in the order of `work` (names and their labels)."""
        ...
