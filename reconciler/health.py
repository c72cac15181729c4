"""Does live TFS serve what a config asks? One assessment, read by drift (`plan_drift`), by the
wait for a change to take (`convergence`), and through them by `status`, the metrics and the
log (gitops-engine's `pkg/health`: health is a value computed by one pure function).

TFS reports each version of a model with a state (tensorflow_serving/apis/
get_model_status.proto, `ModelVersionStatus.State`); what that state means for serving the
version is its `Standing`. END entries stay listed after a reload, so the newest entry of a
version is the one judged (`LiveModel.latest`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from reconciler.state import LiveModel, LiveVersion
from reconciler.version_state import VersionState

Failure = tuple[str, int, str]  # (model, version, error message) of an END with an error


class Standing(StrEnum):
    """Where one version stands in TFS."""

    SERVING = "serving"  # AVAILABLE
    NOT_LISTED = "not_listed"  # no entry: TFS's file-system poll has not taken it up yet
    IN_PROGRESS = "in_progress"  # START, LOADING, UNLOADING, UNKNOWN: TFS is moving it
    FAILED = "failed"  # END with an error: its load failed
    FAILED_BEFORE = "failed_before"  # END with the error it had before the change began
    ENDED = "ended"  # END without an error: unloaded


@dataclass(frozen=True)
class VersionHealth:
    version: int
    standing: Standing
    state: str = ""  # as TFS reports it ("" when not listed)
    error_code: str = "OK"
    error_message: str = ""

    @property
    def loading(self) -> bool:
        """TFS is loading it now (after start-up it loads one version at a time)."""
        return self.state == VersionState.LOADING


@dataclass(frozen=True)
class LabelHealth:
    label: str
    wanted: int
    resolved: int | None  # the version TFS resolves the label to; None: unknown to TFS

    @property
    def ok(self) -> bool:
        return self.resolved == self.wanted


@dataclass(frozen=True)
class ModelHealth:
    """One model in TFS, against the versions and labels it should serve."""

    model: str
    found: bool  # TFS knows the model
    wanted: tuple[VersionHealth, ...] = ()  # each version it should serve
    leaving: tuple[VersionHealth, ...] = ()  # each version that must stop serving
    extra: tuple[int, ...] = ()  # AVAILABLE, though not wanted
    labels: tuple[LabelHealth, ...] = ()

    @property
    def to_load(self) -> int:
        """Wanted versions not AVAILABLE yet, the one loading included."""
        return sum(v.standing is not Standing.SERVING for v in self.wanted)


def standing(
    model: str, entry: LiveVersion | None, known_failures: frozenset[Failure] = frozenset()
) -> Standing:
    """What TFS's newest entry for a version (None: not listed) means for serving it;
    `known_failures` are the END errors seen before the change began."""
    if entry is None:
        return Standing.NOT_LISTED
    if entry.state == VersionState.AVAILABLE:
        return Standing.SERVING
    if entry.state != VersionState.END:
        return Standing.IN_PROGRESS
    if entry.error_code == "OK":
        return Standing.ENDED
    if (model, entry.version, entry.error_message) in known_failures:
        return Standing.FAILED_BEFORE
    return Standing.FAILED


def version_health(
    model: str,
    live: LiveModel | None,
    number: int,
    known_failures: frozenset[Failure] = frozenset(),
) -> VersionHealth:
    entry = live.latest(number) if live is not None else None
    judged = standing(model, entry, known_failures)
    if entry is None:
        return VersionHealth(number, judged)
    return VersionHealth(number, judged, entry.state, entry.error_code, entry.error_message)


def assess_model(
    model: str,
    live: LiveModel | None,
    serve: Iterable[int],
    labels: Iterable[tuple[str, int]] = (),
    leaving: Iterable[int] = (),
    known_failures: frozenset[Failure] = frozenset(),
) -> ModelHealth:
    """`live` (None: TFS was not asked about it, or does not list it) against the versions
    to `serve`, in that order, the `labels` to resolve and the versions `leaving` service."""
    known = live if live is not None and live.found else None
    wanted = tuple(version_health(model, known, n, known_failures) for n in serve)
    if known is None:
        return ModelHealth(model, False, wanted)
    served = {v.version for v in wanted}
    resolved = dict(known.labels)
    return ModelHealth(
        model,
        True,
        wanted,
        tuple(version_health(model, known, n, known_failures) for n in leaving),
        tuple(n for n in known.available if n not in served),
        tuple(LabelHealth(label, number, resolved.get(label)) for label, number in labels),
    )
