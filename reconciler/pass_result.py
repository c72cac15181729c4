"""What one daemon pass found and did, as a value (controller-runtime's `Result`, kopf's
`Outcome`): the pass decides nothing about retries, metrics, systemd or readiness; the loop
does, from this value, in one place (`reconciler.daemon.Daemon._handle`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from reconciler.history import Record
from reconciler.outcome import Result
from reconciler.reconcile import Revision


class PassKind(StrEnum):
    IN_SYNC = "in_sync"  # nothing to change (or drift left alone: see PassResult.left_alone)
    APPLIED = "applied"
    WRITTEN = "written"  # --reload none: models.config written, TFS not asked
    INVALID = "invalid"  # the desired state does not parse or validate
    BLOCKED = "blocked"  # the plan has problems: nothing is written
    REFUSED = "refused"  # --sidecar: TFS's flags would not serve this config (reconciler.sidecar)
    TFS_DOWN = "tfs_down"  # nothing to write, and TFS does not answer: not in sync
    ERROR = "error"  # the environment stopped the pass (Docker, models.config, a folder)
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"  # the apply failed and so did its rollback
    INTERRUPTED = "interrupted"  # stopping between phases: the next start finishes it
    DEFERRED = "deferred"  # the attempt that failed last, its backoff not over
    SETTLING = "settling"  # a models.config someone else wrote, read again in a moment

    @property
    def result(self) -> Result | None:
        """The word the log and the metrics count the pass under (None: not counted)."""
        return _COUNTED_AS.get(self)

    @property
    def in_sync(self) -> bool:
        return self in (PassKind.IN_SYNC, PassKind.APPLIED, PassKind.WRITTEN)

    @property
    def failed_apply(self) -> bool:
        """An apply was tried and failed: it waits out its whole backoff."""
        return self in (PassKind.ROLLED_BACK, PassKind.FAILED)


_COUNTED_AS = {
    PassKind.IN_SYNC: Result.NOOP,
    PassKind.APPLIED: Result.APPLIED,
    PassKind.WRITTEN: Result.WRITTEN,
    PassKind.INVALID: Result.INVALID,
    PassKind.BLOCKED: Result.INVALID,
    PassKind.REFUSED: Result.INVALID,
    PassKind.TFS_DOWN: Result.ERROR,
    PassKind.ERROR: Result.ERROR,
    PassKind.ROLLED_BACK: Result.ROLLED_BACK,
    PassKind.FAILED: Result.ERROR,
}

# The event each problem of a refused input is logged under.
PROBLEM_EVENT = {
    PassKind.INVALID: "invalid_desired_state",
    PassKind.BLOCKED: "blocked",
    PassKind.REFUSED: "refused",
}


@dataclass(frozen=True)
class Drift:
    """What a pass found drifted (each as the log says it) and the models it concerns."""

    found: tuple[str, ...] = ()
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class PassResult:
    kind: PassKind
    revision: Revision = field(default_factory=Revision)
    message: str = ""
    problems: tuple[str, ...] = ()  # INVALID, BLOCKED, REFUSED: each logged one by one
    record: Record | None = None  # the history record an apply wrote
    attempt: object = None  # what an apply tried (the backoff's "same target")
    retry_in: float = 0.0  # SETTLING: read models.config again then; DEFERRED: backoff left
    left_alone: tuple[str, ...] = ()  # drifted models not repaired (--no-self-heal)
    seconds: float = 0.0
    # What the pass saw on the way, reported whatever the kind (None: not got that far).
    drift: Drift | None = None
    versions: tuple[Mapping[str, int], Mapping[str, int]] | None = None  # desired, live
    config_invalid: bool = False  # models.config did not parse (counted as its drift)


@dataclass
class DriftMemory:
    """Drift is warned about and counted when it appears or changes, not at each pass that
    sees it again (left alone with --no-self-heal, it is seen at every resync)."""

    seen: tuple[str, ...] = ()

    def news(self, drift: Drift) -> bool:
        """Remember `drift`; True when it is worth a warning and a count."""
        new = bool(drift.found) and drift.found != self.seen
        self.seen = drift.found
        return new
