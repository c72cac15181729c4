"""Has TFS converged on a config? A pure reading of live status against what a config asks."""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.health import Failure, ModelHealth, Standing, VersionHealth, assess_model
from reconciler.policy import served_versions
from reconciler.state import DiskState, LiveStatus
from reconciler.tfs_config import ConfigModel, ServingConfig
from reconciler.version_state import VersionState


@dataclass(frozen=True)
class Expectation:
    """What one model must look like live once TFS has taken a config."""

    model: str
    serve: tuple[int, ...]
    gone: tuple[int, ...] = ()  # versions that must have stopped serving
    labels: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Progress:
    done: bool
    pending: tuple[str, ...] = ()  # e.g. "animals version 4 is LOADING"
    failures: tuple[str, ...] = ()  # e.g. "animals version 4 failed to load: ..."
    # The pending items only TFS's next file-system poll can move: a version not listed, one
    # still showing the END it had before the change, one to unload still AVAILABLE. TFS acts
    # on versions added to or dropped from a config only at that poll (`UpdateConfig` of
    # file_system_storage_path_source.cc does not scan the disk).
    unpolled: tuple[str, ...] = ()
    loading: tuple[str, ...] = ()  # "animals version 5": loading now (TFS loads one at a time)
    to_load: int = 0  # wanted versions not AVAILABLE yet, the one loading included

    @property
    def summary(self) -> str:
        """Which version is loading and how many are left: after start-up TFS loads one
        version at a time, highest first, so k new versions take k load times."""
        if not self.to_load:
            return ""
        now = f"loading {', '.join(self.loading)}; " if self.loading else ""
        return f"{now}{self.to_load} version(s) left to load"


def _served(model: ConfigModel | None, disk: DiskState) -> tuple[int, ...]:
    if model is None:
        return ()
    folder = disk.model(model.name)
    return served_versions(model.effective_policy, folder.numbers if folder else ())


def expectations(
    config: ServingConfig, previous: ServingConfig | None, disk: DiskState
) -> tuple[Expectation, ...]:
    """What `config` asks of TFS, coming from `previous`."""
    found = []
    for model in config.models:
        serve = _served(model, disk)
        before = _served(previous.model(model.name), disk) if previous is not None else ()
        gone = tuple(v for v in before if v not in serve)
        found.append(Expectation(model.name, serve, gone, model.labels))
    for model in previous.models if previous is not None else ():
        if config.model(model.name) is None:
            found.append(Expectation(model.name, (), _served(model, disk)))
    return tuple(found)


def assess(
    wanted: tuple[Expectation, ...],
    live: LiveStatus,
    known_failures: frozenset[Failure] = frozenset(),
) -> Progress:
    """Compare live status with what is wanted.

    `known_failures` are (model, version, message) END errors seen before the change began:
    TFS keeps END entries listed, so an old failure is not this change's failure.
    """
    if not live.reachable:
        return Progress(False, (f"TFS does not answer: {live.error}",))
    tally = _Tally()
    for want in wanted:
        tally.add(
            assess_model(
                want.model,
                live.model(want.model),
                want.serve,
                want.labels,
                want.gone,
                known_failures,
            )
        )
    return tally.progress()


@dataclass
class _Tally:
    """The assessments of the models a change touches, told as a Progress."""

    pending: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    unpolled: list[str] = field(default_factory=list)
    loading: list[str] = field(default_factory=list)
    to_load: int = 0

    def add(self, health: ModelHealth) -> None:
        name = health.model
        self.to_load += health.to_load
        if not health.found:
            if health.wanted:
                self._waits_for_poll(f"{name} is not loaded yet")
            return
        for version in health.wanted:
            self._wanted(name, version)
        for version in health.leaving:
            self._leaving(name, version)
        for label in health.labels:
            if not label.ok:
                where = (
                    f"resolves to {label.resolved}"
                    if label.resolved is not None
                    else "is unknown to TFS"
                )
                self.pending.append(f"{name} label {label.label} {where}, wanted {label.wanted}")

    def _wanted(self, name: str, version: VersionHealth) -> None:
        it = f"{name} version {version.version}"
        match version.standing:  # SERVING: nothing to wait for
            case Standing.NOT_LISTED:
                self._waits_for_poll(f"{it} is not listed yet")
            case Standing.FAILED_BEFORE:
                self._waits_for_poll(f"{it} is END (earlier failure)")
            case Standing.FAILED:
                self.failures.append(
                    f"{it} failed to load: {version.error_code}: {version.error_message}"
                )
            case Standing.ENDED:
                self._waits_for_poll(f"{it} is END (unloaded before)")
            case Standing.IN_PROGRESS:
                if version.loading:
                    self.loading.append(it)
                self.pending.append(f"{it} is {version.state}")

    def _leaving(self, name: str, version: VersionHealth) -> None:
        it = f"{name} version {version.version}"
        if version.standing is Standing.SERVING:
            self._waits_for_poll(f"{it} is AVAILABLE, not unloaded yet")
        elif version.standing is Standing.IN_PROGRESS:
            self.pending.append(f"{it} is {version.state}, not unloaded yet")

    def _waits_for_poll(self, text: str) -> None:
        self.pending.append(text)
        self.unpolled.append(text)

    def progress(self) -> Progress:
        return Progress(
            not self.pending and not self.failures,
            tuple(self.pending),
            tuple(self.failures),
            tuple(self.unpolled),
            tuple(self.loading),
            self.to_load,
        )


def end_failures(live: LiveStatus) -> frozenset[Failure]:
    """The END-with-error entries in a status, to tell old failures from new ones."""
    return frozenset(
        (model.name, version.version, version.error_message)
        for model in live.models
        for version in model.versions
        if version.state == VersionState.END and version.error_code != "OK"
    )


def still_known(known: frozenset[Failure], live: LiveStatus) -> frozenset[Failure]:
    """The earlier failures that are still what TFS reports for their version.

    A version that failed before and is tried again leaves END (START, LOADING, ...): from
    then on an END with the same message is this change's failure, not the old one.
    """
    if not live.reachable:
        return known
    kept = set()
    for name, number, message in known:
        status = live.model(name)
        entry = status.latest(number) if status is not None else None
        if entry is None or (entry.state == VersionState.END and entry.error_message == message):
            kept.add((name, number, message))
    return frozenset(kept)
