"""The servable manager: versions' states and the order loads and unloads happen in.

Pure logic, driven by :meth:`Manager.step` with the current time, so tests use a fake clock.
It follows TFS's ``core/aspired_versions_manager.cc`` + ``core/basic_manager.cc`` with the
``AvailabilityPreservingPolicy`` (``core/availability_preserving_policy.cc``) and the
``ServableStateMonitor`` (``core/servable_state_monitor.cc``):

- the source (:mod:`.core`, at each file-system poll) sets the versions a model aspires to
  (:meth:`Manager.set_aspired`); a new one is managed in state START. A request that re-aspires
  a version still being torn down waits until it is gone
  (``HandlePendingAspiredVersionsRequests``);
- the manager thread takes one action at a time (``InvokePolicyAndExecuteAction``): every
  model's policy proposes one action, unloads go before loads (``CompareActions``); the policy
  unloads the lowest non-aspired AVAILABLE version when the model has no aspired version, an
  aspired one AVAILABLE, or more than one non-aspired AVAILABLE; otherwise it loads the
  *highest* new aspired version;
- with ``load_threads`` 0 (TFS's ``--num_load_threads`` default) a load runs in the manager
  thread itself: nothing else happens until it ends, so k new versions take k load times.
  With N > 0 up to N loads run at once. At start-up ServerCore uses
  ``num_initial_load_threads`` (4 x CPUs) until the first models are in
  (``ConnectSourcesWithFastInitialLoad``);
- a failing load stays LOADING while retried ``max_load_retries`` times, each
  ``retry_interval`` plus the load time later (cancelled once the version is no longer
  aspired), then END with the error; an aspired version that failed is not retried
  (``enable_reload_servables_with_error`` is false);
- the monitor keeps every version's last state until restart (END included). A version that
  stops being aspired before its load starts is dropped by ``FlushServables`` without an
  event, so its status stays START;
- a waiter (:meth:`Manager.add_waiter`) follows ``WaitUntilServablesReachState`` with
  ``ServableRequest::Latest``: it ends at the first event after which some version of each
  awaited model that had an event since the wait began is AVAILABLE or END, the highest such
  version deciding.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from reconciler.testing.tfs_sim.disk import VersionDir
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


class _Harness(enum.Enum):
    """``LoaderHarness::State`` (the ones that matter here)."""

    NEW = "new"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    DISABLED = "disabled"
    ERROR = "error"


@dataclass(frozen=True)
class LoadTiming:
    """How loads are scheduled and how failing ones are retried."""

    max_load_retries: int = 5
    retry_interval: float = 60.0
    unload_seconds: float = 0.0
    load_threads: int = 0  # --num_load_threads: 0 = in the manager thread, one at a time


@dataclass(frozen=True)
class VersionStatus:
    """A snapshot of one version, as status reports it."""

    version: int
    state: State
    error: TfsError | None


@dataclass
class _Managed:
    version: int
    where: VersionDir
    state: _Harness = _Harness.NEW
    aspired: bool = True
    due: float = 0.0  # when the current load attempt or unload finishes
    attempts: int = 0
    error: TfsError | None = None
    info: SavedModelInfo | None = None


@dataclass
class _Event:
    state: State
    error: TfsError | None
    seq: int


@dataclass
class Waiter:
    """A pending ``WaitUntilServablesReachState(Latest(model)...)``; ``result`` once decided:
    the version that decided each model and its state (AVAILABLE, or END)."""

    models: frozenset[str]
    since: int
    result: dict[str, tuple[int, State, TfsError | None]] | None = None

    def failed(self) -> list[tuple[str, int, TfsError | None]]:
        assert self.result is not None
        return sorted(
            (model, version, error)
            for model, (version, state, error) in self.result.items()
            if state != State.AVAILABLE
        )


Loader = Callable[[str, VersionDir], SavedModelInfo]
LoadSeconds = Callable[[str, int], float]
Observer = Callable[[str, int, State, TfsError | None], None]


@dataclass
class Manager:
    """Every model's versions. Not thread-safe: the caller locks."""

    timing: LoadTiming
    load: Loader
    load_seconds: LoadSeconds
    observer: Observer = lambda _m, _v, _s, _e: None
    initial_load_threads: int | None = None  # set during start-up (fast initial load)
    _managed: dict[str, dict[int, _Managed]] = field(default_factory=dict)
    _pending: dict[str, dict[int, VersionDir]] = field(default_factory=dict)
    _monitor: dict[str, dict[int, _Event]] = field(default_factory=dict)
    _seq: int = 0
    _waiters: list[Waiter] = field(default_factory=list)
    # The fast path of `step`: after a step that changed nothing, the next one can only differ
    # once something is asked for (set_aspired), the thread count changes or a load or unload
    # falls due; until then a step returns at once instead of walking every version.
    _changed: bool = True
    _next_due: float | None = None
    _stepped_threads: int = 0

    # --- source side ----------------------------------------------------------------------

    def set_aspired(self, model: str, versions: Iterable[VersionDir]) -> None:
        """The source's aspired-versions callback: ``versions`` replace what ``model`` aspires
        to (queued; applied by the manager thread at its next step)."""
        self._pending[model] = {v.version: v for v in versions}
        self._changed = True

    def _process_pending(self) -> None:
        for model in list(self._pending):
            wanted = self._pending[model]
            managed = self._managed.setdefault(model, {})
            if any(v in managed and not managed[v].aspired for v in wanted):
                continue  # a re-aspired version is still being torn down: later
            del self._pending[model]
            self._changed = True
            for record in managed.values():
                if record.version not in wanted:
                    record.aspired = False
            for version, where in sorted(wanted.items()):
                if version not in managed:
                    managed[version] = _Managed(version, where)
                    self._publish(model, version, State.START, None)

    # --- the manager thread ---------------------------------------------------------------

    def _threads(self) -> int:
        threads = self.initial_load_threads or self.timing.load_threads
        return max(threads, 0)

    def step(self, now: float) -> None:
        """Advance to ``now``: finish what is due, then take actions while a thread is free.

        A step after one that changed nothing, with nothing asked for since, the same thread
        count and no load or unload due yet, would change nothing either: it returns at once
        (the clock steps every 20 ms; walking 5,000 versions each time cost a fifth of a core
        and held the core's lock against every request)."""
        quiet = not self._changed and self._stepped_threads == self._threads()
        if quiet and (self._next_due is None or now < self._next_due):
            return
        self._changed = False
        self._stepped_threads = self._threads()
        try:
            self._step(now)
        finally:
            self._next_due = min(
                (
                    r.due
                    for versions in self._managed.values()
                    for r in versions.values()
                    if r.state in (_Harness.LOADING, _Harness.UNLOADING)
                ),
                default=None,
            )

    def _step(self, now: float) -> None:
        self._finish_due(now)
        if self._threads() == 0 and self._loading():
            return  # the load runs in the manager thread: nothing else happens meanwhile
        self._flush()
        self._process_pending()
        while True:
            action = self._next_action()
            if action is None:
                return
            kind, model, record = action
            if kind == "unload":
                record.state = _Harness.UNLOADING
                record.due = now + self.timing.unload_seconds
                self._publish(model, record.version, State.UNLOADING, None)
                continue
            if self._threads() > 0 and len(self._loading()) >= self._threads():
                return
            record.state = _Harness.LOADING
            record.attempts = 1
            record.due = now + self.load_seconds(model, record.version)
            self._publish(model, record.version, State.LOADING, None)
            self._finish_due(now)
            if self._threads() == 0 and self._loading():
                return

    def _loading(self) -> list[_Managed]:
        return [
            r
            for versions in self._managed.values()
            for r in versions.values()
            if r.state == _Harness.LOADING
        ]

    def _finish_due(self, now: float) -> None:
        for model, versions in sorted(self._managed.items()):
            for record in sorted(versions.values(), key=lambda r: -r.version):
                if record.state == _Harness.LOADING and now >= record.due:
                    self._finish_load(model, record, now)
                elif record.state == _Harness.UNLOADING and now >= record.due:
                    record.state, record.info = _Harness.DISABLED, None
                    self._publish(model, record.version, State.END, None)

    def _finish_load(self, model: str, record: _Managed, now: float) -> None:
        try:
            record.info = self.load(model, record.where)
        except TfsError as e:
            if record.aspired and record.attempts <= self.timing.max_load_retries:
                record.attempts += 1
                retry = self.timing.retry_interval if self.timing.retry_interval > 0 else 0.0
                record.due = now + retry + self.load_seconds(model, record.version)
                return
            record.state, record.error = _Harness.ERROR, e
            self._publish(model, record.version, State.END, e)
            return
        record.state = _Harness.READY
        self._publish(model, record.version, State.AVAILABLE, None)

    def _flush(self) -> None:
        """``FlushServables``: forget non-aspired versions that are new, unloaded or failed."""
        done = (_Harness.NEW, _Harness.DISABLED, _Harness.ERROR)
        for versions in self._managed.values():
            for version in [v for v, r in versions.items() if r.state in done and not r.aspired]:
                del versions[version]
                self._changed = True

    def _next_action(self) -> tuple[str, str, _Managed] | None:
        loads: list[tuple[str, str, _Managed]] = []
        for model, versions in sorted(self._managed.items()):
            action = _policy(list(versions.values()))
            if action is not None and action[0] == "unload":
                return (action[0], model, action[1])
            if action is not None:
                loads.append((action[0], model, action[1]))
        return loads[0] if loads else None

    # --- the monitor ----------------------------------------------------------------------

    def _publish(self, model: str, version: int, state: State, error: TfsError | None) -> None:
        self._changed = True
        self._seq += 1
        self._monitor.setdefault(model, {})[version] = _Event(state, error, self._seq)
        self.observer(model, version, state, error)
        for waiter in self._waiters:
            if waiter.result is None:
                waiter.result = self._reached(waiter)
        self._waiters = [w for w in self._waiters if w.result is None]

    def add_waiter(self, models: Iterable[str], fresh: bool) -> Waiter:
        """Wait for ``Latest(model)`` of each model to reach AVAILABLE or END; ``fresh`` counts
        only events from now on (ServerCore's fresh monitor for a reload)."""
        waiter = Waiter(frozenset(models), self._seq if fresh else 0)
        waiter.result = self._reached(waiter)
        if waiter.result is None:
            self._waiters.append(waiter)
        return waiter

    def cancel_waiter(self, waiter: Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def _reached(self, waiter: Waiter) -> dict[str, tuple[int, State, TfsError | None]] | None:
        reached: dict[str, tuple[int, State, TfsError | None]] = {}
        for model in waiter.models:
            events = self._monitor.get(model, {})
            for version in sorted(events, reverse=True):
                event = events[version]
                if event.seq > waiter.since and event.state in (State.AVAILABLE, State.END):
                    reached[model] = (version, event.state, event.error)
                    break
            else:
                return None
        return reached

    # --- queries --------------------------------------------------------------------------

    def statuses(self, model: str) -> list[VersionStatus]:
        """Every version the monitor saw (END ones included), highest first as TFS lists them."""
        events = self._monitor.get(model, {})
        return [
            VersionStatus(v, events[v].state, events[v].error) for v in sorted(events, reverse=True)
        ]

    def state_of(self, model: str, version: int) -> State | None:
        event = self._monitor.get(model, {}).get(version)
        return None if event is None else event.state

    def available(self, model: str, version: int) -> SavedModelInfo | None:
        """The loaded SavedModel of ``version`` if it is AVAILABLE."""
        record = self._managed.get(model, {}).get(version)
        if record is None or record.state != _Harness.READY:
            return None
        return record.info

    def highest_available(self, model: str) -> int | None:
        versions = [
            r.version for r in self._managed.get(model, {}).values() if r.state == _Harness.READY
        ]
        return max(versions) if versions else None

    def loading(self) -> list[tuple[str, int]]:
        """The versions loading now (for logs and tests)."""
        return sorted(
            (model, r.version)
            for model, versions in self._managed.items()
            for r in versions.values()
            if r.state == _Harness.LOADING
        )


def _policy(records: list[_Managed]) -> tuple[str, _Managed] | None:
    """``AvailabilityPreservingPolicy::GetNextAction``."""
    aspired = [r for r in records if r.aspired]
    aspired_serving = any(r.state == _Harness.READY for r in aspired)
    unaspired_serving = [r for r in records if not r.aspired and r.state == _Harness.READY]
    if unaspired_serving and (not aspired or aspired_serving or len(unaspired_serving) > 1):
        return ("unload", min(unaspired_serving, key=lambda r: r.version))
    new = [r for r in aspired if r.state == _Harness.NEW]
    if new:
        return ("load", max(new, key=lambda r: r.version))
    return None


def not_available_message(waiter: Waiter, noun: str) -> str:
    """``N model(s) did not become available: {{name: M version: V} due to error: ...}, }``
    (``WaitUntilModelsAvailable``; "servable(s)" at start-up, ``load_servables_fast.cc``)."""
    failed = waiter.failed()
    parts = "".join(
        f"{{{{name: {model} version: {version}}}{f' due to error: {error}' if error else ''}}}, "
        for model, version, error in failed
    )
    return f"{len(failed)} {noun}(s) did not become available: {{{parts}}}"
