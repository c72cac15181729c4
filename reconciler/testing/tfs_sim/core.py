"""ServerCore: the simulated server's state, shared by the REST and gRPC threads and the loops.

One lock (a Condition) guards everything; the loops in :mod:`.server` call :meth:`step` (move
versions along in time) and :meth:`poll_file_system` (find version folders), and config
changes come through :meth:`reload` (from the config file poll or gRPC). Time comes from an
injected clock so tests can drive it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.testing.tfs_sim.disk import PathMap, scan_versions
from reconciler.testing.tfs_sim.errors import Code, TfsError
from reconciler.testing.tfs_sim.lifecycle import LoadTiming, ModelLifecycle, State, VersionStatus
from reconciler.testing.tfs_sim.logs import log_event
from reconciler.testing.tfs_sim.model_config import ModelSpec, validate_transition
from reconciler.testing.tfs_sim.savedmodel import SavedModelInfo, load_saved_model

log = logging.getLogger("tfs_sim.core")

LoadSecondsFor = Callable[[str, int], float]


def label_error(version: int, model: str) -> TfsError:
    return TfsError(
        Code.FAILED_PRECONDITION,
        f"Request to assign label to version {version} of model {model}, which is not "
        "currently available for inference",
    )


@dataclass(frozen=True)
class CoreOptions:
    """What ServerCore needs from the flags."""

    allow_version_labels_for_unavailable_models: bool = False
    timing: LoadTiming = field(default_factory=LoadTiming)
    path_map: PathMap = field(default_factory=PathMap)
    load_seconds: LoadSecondsFor = lambda _model, _version: 0.0


@dataclass(frozen=True)
class Servable:
    """A version resolved for a request: the one that answers it."""

    model: str
    version: int
    info: SavedModelInfo


class ServerCore:
    """The simulated TFS ServerCore plus its AspiredVersionsManager and file-system source."""

    def __init__(self, options: CoreOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self._options = options
        self._clock = clock
        self._cond = threading.Condition(threading.RLock())
        self._reload_lock = threading.Lock()  # reloads run one at a time, and queue
        self._stopping = threading.Event()
        self._config: pb.ModelServerConfig | None = None
        self._specs: dict[str, ModelSpec] = {}
        self._lifecycles: dict[str, ModelLifecycle] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._version_dirs: dict[str, dict[int, Path]] = {}

    # --- config -----------------------------------------------------------------------

    def reload(self, config: pb.ModelServerConfig, wait_timeout: float | None = None) -> None:
        """Apply ``config`` as HandleReloadConfigRequest does; raise TfsError when refused.

        The whole config is replaced. Returns once every newly added model has a version
        AVAILABLE (not waiting for new versions of existing models); waits forever (or
        ``wait_timeout``) for a new model with no version folder, e.g. a missing base_path,
        holding the reload lock, so later reloads queue behind it.
        """
        with self._reload_lock:
            if config.WhichOneof("config") is None:
                log_event(log, "config_ignored", reason="empty config")
                return
            with self._cond:
                specs = validate_transition(self._config, config)
                labels = self._checked_labels(specs)
                new_models = [s.name for s in specs if s.name not in self._specs]
                removed = [name for name in self._specs if name not in {s.name for s in specs}]
                changed = self._config != config
                copy = pb.ModelServerConfig()
                copy.CopyFrom(config)
                self._config = copy
                self._specs = {s.name: s for s in specs}
                self._labels = labels
                for name in removed:
                    self._lifecycles[name].set_aspired([])
                for spec in specs:
                    self._lifecycles.setdefault(
                        spec.name, ModelLifecycle(spec.name, self._options.timing)
                    )
                    self._scan_locked(spec)
                self._step_locked()
                log_event(
                    log,
                    "config_applied" if changed else "config_unchanged",
                    logging.INFO if changed else logging.DEBUG,
                    models=",".join(self._specs) or "-",
                    added=",".join(new_models) or "-",
                    removed=",".join(removed) or "-",
                )
            self._wait_for_models(new_models, wait_timeout)

    def _checked_labels(self, specs: list[ModelSpec]) -> dict[str, dict[str, int]]:
        """The new label map, checked against the versions AVAILABLE now (before any unload)."""
        allow_unavailable = self._options.allow_version_labels_for_unavailable_models
        labels: dict[str, dict[str, int]] = {}
        for spec in specs:
            lifecycle = self._lifecycles.get(spec.name)
            old = self._labels.get(spec.name, {})
            for label, version in sorted(spec.labels.items()):
                available = lifecycle is not None and lifecycle.state_of(version) == State.AVAILABLE
                new_or_unchanged = old.get(label, version) == version
                if not available and not (allow_unavailable and new_or_unchanged):
                    raise label_error(version, spec.name)
                labels.setdefault(spec.name, {})[label] = version
        return labels

    def _wait_for_models(self, names: list[str], timeout: float | None) -> None:
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                self._step_locked()
                pending, failed = [], []
                for name in names:
                    available, errored = self._lifecycles[name].settled()
                    if errored and not available:
                        failed.append(name)
                    elif not available:
                        pending.append(name)
                if not pending:
                    break
                if self._stopping.is_set():
                    raise TfsError(Code.CANCELLED, "Server is shutting down")
                if deadline is not None and self._clock() >= deadline:
                    raise TfsError(
                        Code.DEADLINE_EXCEEDED, "Models did not become available in time"
                    )
                self._cond.wait(0.1)
        if failed:
            names_text = ", ".join(failed)
            raise TfsError(
                Code.UNKNOWN, f"{len(failed)} model(s) did not become available: {{{names_text}}}"
            )

    # --- disk and time ------------------------------------------------------------------

    def poll_file_system(self) -> None:
        """Scan every configured model's base_path and update the versions it aspires to."""
        with self._cond:
            for spec in self._specs.values():
                self._scan_locked(spec)
            self._step_locked()

    def _scan_locked(self, spec: ModelSpec) -> None:
        host = self._options.path_map.to_host(spec.base_path)
        found = scan_versions(host)
        if found is None:
            log_event(
                log,
                "base_path_missing",
                model=spec.name,
                base_path=spec.base_path,
                host_path=str(host),
            )
            return
        chosen = spec.policy.choose(found)
        if spec.policy.kind == "specific" and spec.policy.versions - found:
            missing = ",".join(str(v) for v in sorted(spec.policy.versions - found))
            log_event(log, "versions_not_found", model=spec.name, versions=missing)
        self._version_dirs[spec.name] = {v: host / str(v) for v in found}
        self._lifecycles[spec.name].set_aspired(chosen)

    def step(self) -> None:
        """Move every version along to where it should be now."""
        with self._cond:
            self._step_locked()

    def _step_locked(self) -> None:
        now = self._clock()
        for name, lifecycle in self._lifecycles.items():
            before = {s.version: s.state for s in lifecycle.statuses()}
            dirs = self._version_dirs.get(name, {})

            def load(version: int, dirs: dict[int, Path] = dirs) -> SavedModelInfo:
                return load_saved_model(dirs.get(version, Path("/nonexistent") / str(version)))

            def seconds(version: int, name: str = name) -> float:
                return self._options.load_seconds(name, version)

            if lifecycle.step(now, load, seconds):
                for status in lifecycle.statuses():
                    if before.get(status.version) != status.state:
                        log_event(
                            log,
                            "version_state",
                            model=name,
                            version=status.version,
                            state=status.state.name,
                            error=status.error.message if status.error else "",
                        )
                self._cond.notify_all()

    def stop(self) -> None:
        """Wake and cancel any waiting reload."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()

    # --- queries ----------------------------------------------------------------------

    def status(self, model: str, version: int | None = None) -> list[VersionStatus]:
        """GetModelStatus: every version of ``model`` (labels are ignored), or one version."""
        with self._cond:
            lifecycle = self._lifecycles.get(model)
            statuses = lifecycle.statuses() if lifecycle is not None else []
        if not statuses:
            raise TfsError(Code.NOT_FOUND, f"Could not find any versions of model {model}")
        if version is None:
            return statuses
        chosen = [s for s in statuses if s.version == version]
        if not chosen:
            raise TfsError(Code.NOT_FOUND, f"Could not find version {version} of model {model}")
        return chosen

    def resolve(self, model: str, version: int | None = None, label: str | None = None) -> Servable:
        """The AVAILABLE version that answers a request by model, version or label."""
        with self._cond:
            if label is not None:
                resolved = self._labels.get(model, {}).get(label)
                if resolved is None:
                    raise TfsError(
                        Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}"
                    )
                version = resolved
            lifecycle = self._lifecycles.get(model)
            if version is None:
                latest = lifecycle.highest_available() if lifecycle is not None else None
                if latest is None:
                    raise TfsError(
                        Code.NOT_FOUND, f"Servable not found for request: Latest({model})"
                    )
                version = latest
            info = lifecycle.available(version) if lifecycle is not None else None
            if info is None:
                raise TfsError(
                    Code.NOT_FOUND, f"Servable not found for request: Specific({model}, {version})"
                )
            return Servable(model, version, info)

    def labels(self, model: str) -> dict[str, int]:
        """The labels in force for ``model`` (for tests and logs; TFS has no API for it)."""
        with self._cond:
            return dict(self._labels.get(model, {}))
