"""Has TFS converged on a config? A pure reading of live status against what a config asks."""

from __future__ import annotations

from dataclasses import dataclass

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
    known_failures: frozenset[tuple[str, int, str]] = frozenset(),
) -> Progress:
    """Compare live status with what is wanted.

    `known_failures` are (model, version, message) END errors seen before the change began:
    TFS keeps END entries listed, so an old failure is not this change's failure.
    """
    if not live.reachable:
        return Progress(False, (f"TFS does not answer: {live.error}",))
    pending: list[str] = []
    failures: list[str] = []
    unpolled: list[str] = []
    loading: list[str] = []
    to_load = 0

    def waits_for_poll(text: str) -> None:
        pending.append(text)
        unpolled.append(text)

    for want in wanted:
        status = live.model(want.model)
        if status is None or not status.found:
            if want.serve:
                waits_for_poll(f"{want.model} is not loaded yet")
                to_load += len(want.serve)
            continue
        for number in want.serve:
            entry = status.latest(number)
            if entry is None or entry.state != VersionState.AVAILABLE:
                to_load += 1
            if entry is None:
                waits_for_poll(f"{want.model} version {number} is not listed yet")
            elif entry.state == VersionState.AVAILABLE:
                continue
            elif entry.state == VersionState.END and entry.error_code != "OK":
                if (want.model, number, entry.error_message) in known_failures:
                    waits_for_poll(f"{want.model} version {number} is END (earlier failure)")
                else:
                    failures.append(
                        f"{want.model} version {number} failed to load: "
                        f"{entry.error_code}: {entry.error_message}"
                    )
            elif entry.state == VersionState.END:
                waits_for_poll(f"{want.model} version {number} is END (unloaded before)")
            else:
                if entry.state == VersionState.LOADING:
                    loading.append(f"{want.model} version {number}")
                pending.append(f"{want.model} version {number} is {entry.state}")
        for number in want.gone:
            entry = status.latest(number)
            if entry is not None and entry.state == VersionState.AVAILABLE:
                waits_for_poll(f"{want.model} version {number} is AVAILABLE, not unloaded yet")
            elif entry is not None and entry.state != VersionState.END:
                pending.append(f"{want.model} version {number} is {entry.state}, not unloaded yet")
        resolved = dict(status.labels)
        for label, number in want.labels:
            if resolved.get(label) != number:
                now = resolved.get(label)
                where = f"resolves to {now}" if now is not None else "is unknown to TFS"
                pending.append(f"{want.model} label {label} {where}, wanted {number}")
    return Progress(
        not pending and not failures,
        tuple(pending),
        tuple(failures),
        tuple(unpolled),
        tuple(loading),
        to_load,
    )


def end_failures(live: LiveStatus) -> frozenset[tuple[str, int, str]]:
    """The END-with-error entries in a status, to tell old failures from new ones."""
    return frozenset(
        (model.name, version.version, version.error_message)
        for model in live.models
        for version in model.versions
        if version.state == VersionState.END and version.error_code != "OK"
    )


def still_known(
    known: frozenset[tuple[str, int, str]], live: LiveStatus
) -> frozenset[tuple[str, int, str]]:
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
