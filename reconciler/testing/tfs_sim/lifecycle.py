"""The version lifecycle of one model: START -> LOADING -> AVAILABLE -> UNLOADING -> END.

Pure logic, driven by :meth:`ModelLifecycle.step` with the current time, so tests use a fake
clock. It follows TFS's AspiredVersionsManager with the AvailabilityPreservingPolicy:

- a version the source aspires to (chosen from disk by the version policy) and not yet known
  goes START, then LOADING for its load time, then AVAILABLE if its SavedModel loads;
- a failing load stays LOADING while it is retried ``max_load_retries`` times, each retry after
  ``retry_interval`` plus the load time, then goes END with the load error;
- a version no longer aspired is unloaded (UNLOADING, then END with OK) only when the model
  has no aspired version at all, or one aspired version is AVAILABLE, or more than one
  non-aspired version is AVAILABLE (then the lowest goes first): new versions load before old
  ones unload, and a failing new version does not take the old one down;
- END records stay (the status is a history); a version that is aspired again after being
  unloaded starts over. An aspired version whose load failed is not retried until it is
  dropped and aspired again (as TFS).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from reconciler.testing.tfs_sim.errors import TfsError
from reconciler.testing.tfs_sim.savedmodel import SavedModelInfo


class State(enum.IntEnum):
    """``ModelVersionStatus.State``."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class LoadTiming:
    """How long loads take and how failing ones are retried."""

    max_load_retries: int = 5
    retry_interval: float = 60.0
    unload_seconds: float = 0.0


@dataclass(frozen=True)
class VersionStatus:
    """A snapshot of one version, as status reports it."""

    version: int
    state: State
    error: TfsError | None


@dataclass
class _Record:
    version: int
    state: State
    aspired: bool
    due: float = 0.0  # when the current LOADING attempt or UNLOADING finishes
    attempts: int = 0
    error: TfsError | None = None
    info: SavedModelInfo | None = None


Loader = Callable[[int], SavedModelInfo]
LoadSeconds = Callable[[int], float]


class ModelLifecycle:
    """The versions of one model and their states. Not thread-safe: the caller locks."""

    def __init__(self, name: str, timing: LoadTiming) -> None:
        self.name = name
        self.timing = timing
        self._records: dict[int, _Record] = {}

    def set_aspired(self, versions: Iterable[int]) -> None:
        """Declare the versions the source wants served now (replaces the previous set)."""
        wanted = set(versions)
        for record in self._records.values():
            if record.version not in wanted:
                record.aspired = False
        for version in wanted:
            record_or_none = self._records.get(version)
            if record_or_none is None or (
                record_or_none.state == State.END and not record_or_none.aspired
            ):
                self._records[version] = _Record(version, State.START, aspired=True)
            else:
                record_or_none.aspired = True

    def step(self, now: float, load: Loader, load_seconds: LoadSeconds) -> bool:
        """Advance every version to where it should be at ``now``. True if anything changed."""
        changed = False
        for record in self._records.values():
            changed |= self._advance_load(record, now, load, load_seconds)
        while self._unload_one(now):
            changed = True
        return changed

    def _advance_load(
        self, record: _Record, now: float, load: Loader, load_seconds: LoadSeconds
    ) -> bool:
        if record.state == State.START:
            if not record.aspired:
                record.state = State.END
            else:
                record.state = State.LOADING
                record.attempts = 1
                record.due = now + load_seconds(record.version)
            return True
        if record.state == State.LOADING and now >= record.due:
            try:
                record.info = load(record.version)
            except TfsError as e:
                if record.aspired and record.attempts <= self.timing.max_load_retries:
                    record.attempts += 1
                    record.due = now + self.timing.retry_interval + load_seconds(record.version)
                    return False
                record.state, record.error = State.END, e
                return True
            record.state = State.AVAILABLE
            return True
        if record.state == State.UNLOADING and now >= record.due:
            record.state, record.info = State.END, None
            return True
        return False

    def _unload_one(self, now: float) -> bool:
        aspired = [r for r in self._records.values() if r.aspired]
        aspired_serving = any(r.state == State.AVAILABLE for r in aspired)
        unaspired_serving = sorted(
            (r for r in self._records.values() if not r.aspired and r.state == State.AVAILABLE),
            key=lambda r: r.version,
        )
        if unaspired_serving and (not aspired or aspired_serving or len(unaspired_serving) > 1):
            record = unaspired_serving[0]
            record.state = State.UNLOADING
            record.due = now + self.timing.unload_seconds
            return True
        return False

    def statuses(self) -> list[VersionStatus]:
        """Every version ever seen (END ones included), highest first as TFS lists them."""
        return [
            VersionStatus(r.version, r.state, r.error)
            for r in sorted(self._records.values(), key=lambda r: r.version, reverse=True)
        ]

    def state_of(self, version: int) -> State | None:
        record = self._records.get(version)
        return None if record is None else record.state

    def available(self, version: int) -> SavedModelInfo | None:
        """The loaded SavedModel of ``version`` if it is AVAILABLE."""
        record = self._records.get(version)
        if record is None or record.state != State.AVAILABLE:
            return None
        return record.info

    def highest_available(self) -> int | None:
        versions = [r.version for r in self._records.values() if r.state == State.AVAILABLE]
        return max(versions) if versions else None

    def settled(self) -> tuple[bool, bool]:
        """(a version is AVAILABLE, an aspired version failed to load): ends a new model's wait."""
        records = self._records.values()
        return (
            any(r.state == State.AVAILABLE for r in records),
            any(r.aspired and r.state == State.END and r.error is not None for r in records),
        )
