"""ServerCore: the simulated server's state, shared by the REST and gRPC threads and the clock.

One lock (a Condition) guards everything. The clock loop in :mod:`.server` calls :meth:`step`:
it runs the file-system poll when due and moves the manager along in time. Config changes come
through :meth:`reload` (the config file, its poll, or gRPC). Time comes from an injected clock
so tests drive it.

Follows ``model_servers/server_core.cc`` (``ServerCore::ReloadConfig``,
``AddModelsViaModelConfigList``, ``UpdateModelVersionLabelMap``, ``WaitUntilModelsAvailable``)
and ``sources/storage_path/file_system_storage_path_source.cc`` (``UpdateConfig``,
``SetAspiredVersionsCallback``, ``PollFileSystemAndInvokeCallback``):

- a reload never looks at the disk: versions added to or dropped from an existing model are
  acted on at the next file-system poll; ``--file_system_poll_wait_seconds`` 0 polls once (when
  the first config connects the source), a negative value never; models dropped from the config
  are unaspired at once (``UnaspireServables``);
- one base path missing stops the whole poll: no model gets new versions or drops old ones
  (``PollFileSystemForConfig`` returns at the first error);
- ``config_`` is replaced, then the labels (``UpdateModelVersionLabelMap``), and only then are
  the platforms routed (``CreateStoragePathRoutes``) and models added: a reload failing after
  the label check has already moved the labels;
- a reload waits for each *new* model (``WaitUntilModelsAvailable``, ``Latest``): the highest
  of its versions that reaches AVAILABLE or END first decides, UNKNOWN
  ``N model(s) did not become available: {...}`` if END; the first config waits for every
  model the same way (``servable(s)``, ``ConnectSourcesWithFastInitialLoad``). There is no
  deadline, so a new model with no version on disk (or while a base path is missing, or with
  the poll off) holds the reload, and later reloads queue behind it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.testing.tfs_sim.disk import PathMap, VersionDir, poll_servable
from reconciler.testing.tfs_sim.errors import Code, Fatal, TfsError
from reconciler.testing.tfs_sim.events import EventLog, label_changes
from reconciler.testing.tfs_sim.lifecycle import (
    LoadTiming,
    Manager,
    State,
    VersionStatus,
    Waiter,
    not_available_message,
)
from reconciler.testing.tfs_sim.logs import log_event
from reconciler.testing.tfs_sim.model_config import (
    ModelSpec,
    check_storage_path_routes,
    specs_of,
    validate_model_config_list,
    validate_no_models_change_platforms,
)
from reconciler.testing.tfs_sim.savedmodel import SavedModelInfo, load_saved_model

log = logging.getLogger("tfs_sim.core")

LoadSecondsFor = Callable[[str, int], float]
LoadErrorFor = Callable[[str, int], TfsError | None]
CUSTOM_CONFIG_FATAL = "ModelServer does not yet support custom model config."


def label_error(version: int, model: str) -> TfsError:
    return TfsError(
        Code.FAILED_PRECONDITION,
        f"Request to assign label to version {version} of model {model}, which is not "
        "currently available for inference",
    )


def _no_load_error(_model: str, _version: int) -> TfsError | None:
    return None


@dataclass(frozen=True)
class CoreOptions:
    """What ServerCore needs from the flags."""

    allow_version_labels_for_unavailable_models: bool = False
    timing: LoadTiming = field(default_factory=LoadTiming)
    path_map: PathMap = field(default_factory=PathMap)
    load_seconds: LoadSecondsFor = lambda _model, _version: 0.0
    load_error: LoadErrorFor = _no_load_error
    file_system_poll_wait_seconds: float = 1.0
    # ServerCore::Options::num_initial_load_threads: 4 x the schedulable CPUs.
    initial_load_threads: int = 4 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class Servable:
    """A version resolved for a request: the one that answers it."""

    model: str
    version: int
    info: SavedModelInfo


class ServerCore:
    """The simulated TFS ServerCore with its manager and file-system source."""

    def __init__(
        self,
        options: CoreOptions,
        clock: Callable[[], float] = time.monotonic,
        events: EventLog | None = None,
    ) -> None:
        self._options = options
        self.events = events or EventLog()  # version states, labels, reloads (GET /sim/events)
        self._clock = clock
        self._cond = threading.Condition(threading.RLock())
        self._reload_lock = threading.Lock()  # config_mu_: reloads run one at a time, and queue
        self._stopping = threading.Event()
        self._config = pb.ModelServerConfig()  # config_
        self._labels: dict[str, dict[str, int]] = {}
        self._source: list[ModelSpec] | None = None  # None until the source is created
        self._next_poll: float | None = None
        self._last_poll_error = ""
        self._manager = Manager(
            options.timing, self._load, options.load_seconds, observer=self._log_state
        )

    # --- config -----------------------------------------------------------------------

    def reload(self, config: pb.ModelServerConfig, wait_timeout: float | None = None) -> None:
        """``ServerCore::ReloadConfig`` (see :meth:`_reload`), recorded in the event log."""
        models = [c.name for c in config.model_config_list.config]
        try:
            self._reload(config, wait_timeout)
        except TfsError as e:
            self.events.record("config_reload", models=models, ok=False, error=e.message)
            raise
        self.events.record("config_reload", models=models, ok=True, error="")

    def _reload(self, config: pb.ModelServerConfig, wait_timeout: float | None) -> None:
        """``ServerCore::ReloadConfig``; raises TfsError as TFS returns it (see module doc).

        ``wait_timeout`` bounds the wait for new models (TFS has none: tests only); it ends
        with DEADLINE_EXCEEDED.
        """
        with self._reload_lock:
            with self._cond:
                started = self._reload_locked(config)
            if started is not None:
                waiter, noun = started
                try:
                    self._wait(waiter, wait_timeout)
                finally:
                    with self._cond:
                        self._manager.initial_load_threads = None
                if waiter.failed():
                    raise TfsError(Code.UNKNOWN, not_available_message(waiter, noun))

    def _reload_locked(self, new: pb.ModelServerConfig) -> tuple[Waiter, str] | None:
        old_case = self._config.WhichOneof("config")
        new_case = new.WhichOneof("config")
        is_first = old_case is None
        is_same = self._config == new
        if not (is_first or is_same or old_case == new_case == "model_config_list"):
            raise TfsError(
                Code.FAILED_PRECONDITION,
                "Cannot transition to requested config. It is only legal to transition from "
                "one ModelConfigList to another.",
            )
        if new_case is None:
            log_event(log, "config_empty", message="Taking no action for empty config.")
            return None
        if new_case == "model_config_list":
            validate_model_config_list(new.model_config_list)
        if old_case == new_case == "model_config_list":
            validate_no_models_change_platforms(
                self._config.model_config_list, new.model_config_list
            )
        self._config = pb.ModelServerConfig()
        self._config.CopyFrom(new)
        labels = self._checked_labels()
        for model, label, old, version in label_changes(self._labels, labels):
            self.events.record("label", model=model, label=label, version=version, old=old)
        self._labels = labels
        if new_case == "custom_model_config":
            raise Fatal(CUSTOM_CONFIG_FATAL)  # server.cc LoadCustomModelConfig: LOG(FATAL)
        check_storage_path_routes(self._config.model_config_list)
        specs = specs_of(self._config)
        names = [s.name for s in specs]
        if self._source is None:
            self._source = specs
            self._manager.initial_load_threads = self._options.initial_load_threads
            if self._options.file_system_poll_wait_seconds >= 0:
                self._poll_locked()
                if self._options.file_system_poll_wait_seconds > 0:
                    self._next_poll = self._clock() + self._options.file_system_poll_wait_seconds
            self._applied(names, names, [])
            return self._manager.add_waiter(names, fresh=False), "servable"
        old_names = [s.name for s in self._source]
        new_models = [n for n in names if n not in old_names]
        removed = [n for n in old_names if n not in names]
        for name in removed:
            self._manager.set_aspired(name, [])
        # The fresh monitor exists before the source sees the new config (TFS creates it
        # first in AddModelsViaModelConfigList): a poll due now may load a new model within
        # this step (0 s loads), and a waiter made after would never see it become AVAILABLE.
        waiter = self._manager.add_waiter(new_models, fresh=True) if new_models else None
        self._source = specs
        self._step_locked()
        self._applied(names, new_models, removed)
        if waiter is None:
            return None
        return waiter, "model"

    def _applied(self, names: list[str], added: list[str], removed: list[str]) -> None:
        log_event(
            log,
            "config_applied",
            models=",".join(names) or "-",
            added=",".join(added) or "-",
            removed=",".join(removed) or "-",
        )

    def _checked_labels(self) -> dict[str, dict[str, int]]:
        """``UpdateModelVersionLabelMap``: each label's version must be AVAILABLE now, unless
        --allow_version_labels_for_unavailable_models and the label is new or keeps its
        version."""
        allow_unavailable = self._options.allow_version_labels_for_unavailable_models
        labels: dict[str, dict[str, int]] = {}
        for entry in self._config.model_config_list.config:
            old = self._labels.get(entry.name, {})
            for label, version in sorted(entry.version_labels.items()):
                available = self._manager.state_of(entry.name, version) == State.AVAILABLE
                new_or_unchanged = old.get(label, version) == version
                if not available and not (allow_unavailable and new_or_unchanged):
                    raise label_error(version, entry.name)
                labels.setdefault(entry.name, {})[str(label)] = int(version)
        return labels

    def _wait(self, waiter: Waiter, timeout: float | None) -> None:
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while waiter.result is None:
                self._step_locked()
                if waiter.result is not None:
                    break
                if self._stopping.is_set():
                    self._manager.cancel_waiter(waiter)
                    raise TfsError(Code.CANCELLED, "Server is shutting down")
                if deadline is not None and self._clock() >= deadline:
                    self._manager.cancel_waiter(waiter)
                    raise TfsError(
                        Code.DEADLINE_EXCEEDED, "Models did not become available in time"
                    )
                self._cond.wait(0.05)

    # --- disk and time ------------------------------------------------------------------

    def poll_file_system(self) -> None:
        """One ``PollFileSystemAndInvokeCallback`` now (tests; the clock runs it on its period)."""
        with self._cond:
            self._poll_locked()
            self._manager.step(self._clock())

    def _poll_locked(self) -> None:
        if self._source is None:
            return
        found: dict[str, dict[int, VersionDir]] = {}
        for spec in self._source:
            host = self._options.path_map.to_host(spec.base_path)
            try:
                found[spec.name] = poll_servable(spec.name, spec.base_path, host, spec.policy)
            except TfsError as e:
                if e.message != self._last_poll_error:
                    log_event(
                        log,
                        "file_system_poll_failed",
                        logging.ERROR,
                        message="FileSystemStoragePathSource encountered a filesystem access "
                        f"error: {e.message}",
                    )
                self._last_poll_error = e.message
                return
        self._last_poll_error = ""
        for name, versions in found.items():
            self._manager.set_aspired(name, versions.values())

    def _load(self, model: str, where: VersionDir) -> SavedModelInfo:
        error = self._options.load_error(model, where.version)
        if error is not None:
            raise error
        return load_saved_model(where.host_path, shown_as=where.config_path)

    def _log_state(self, model: str, version: int, state: State, error: TfsError | None) -> None:
        self.events.record(
            "version_state",
            model=model,
            version=version,
            state=state.name,
            error=error.message if error else "",
        )
        log_event(
            log,
            "version_state",
            model=model,
            version=version,
            state=state.name,
            error=error.message if error else "",
        )
        self._cond.notify_all()

    def step(self) -> None:
        """Run the file-system poll if due and move every version along to now."""
        with self._cond:
            self._step_locked()

    def _step_locked(self) -> None:
        now = self._clock()
        period = self._options.file_system_poll_wait_seconds
        if self._next_poll is not None and now >= self._next_poll:
            self._poll_locked()
            self._next_poll = max(self._next_poll + period, now)
        self._manager.step(now)

    def stop(self) -> None:
        """Wake and cancel any waiting reload."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()

    # --- queries ----------------------------------------------------------------------

    def status(self, model: str, version: int | None = None) -> list[VersionStatus]:
        """``GetModelStatusWithModelSpec``: every version of ``model`` (labels are ignored),
        or one version."""
        with self._cond:
            statuses = self._manager.statuses(model)
        if version is None:
            if not statuses:
                raise TfsError(Code.NOT_FOUND, f"Could not find any versions of model {model}")
            return statuses
        chosen = [s for s in statuses if s.version == version]
        if not chosen:
            raise TfsError(Code.NOT_FOUND, f"Could not find version {version} of model {model}")
        return chosen

    def label_version(self, model: str, label: str) -> int:
        """``GetModelVersionForLabel``."""
        with self._cond:
            resolved = self._labels.get(model, {}).get(label)
        if resolved is None:
            raise TfsError(Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
        return resolved

    def resolve(self, model: str, version: int | None = None, label: str | None = None) -> Servable:
        """The AVAILABLE version that answers a request by model, version or label
        (``ServableRequestFromModelSpec`` then ``BasicManager::GetUntypedServableHandle``)."""
        if label is not None:
            version = self.label_version(model, label)
        with self._cond:
            if version is None:
                latest = self._manager.highest_available(model)
                if latest is None:
                    raise TfsError(
                        Code.NOT_FOUND, f"Servable not found for request: Latest({model})"
                    )
                version = latest
            info = self._manager.available(model, version)
            if info is None:
                raise TfsError(
                    Code.NOT_FOUND, f"Servable not found for request: Specific({model}, {version})"
                )
            return Servable(model, version, info)

    def labels(self, model: str) -> dict[str, int]:
        """The labels in force for ``model`` (for tests and logs; TFS has no API for it)."""
        with self._cond:
            return dict(self._labels.get(model, {}))

    def loading(self) -> list[tuple[str, int]]:
        """The versions loading now (tests)."""
        with self._cond:
            return self._manager.loading()
