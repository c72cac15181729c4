"""What the daemon's loop does with a pass's result, in one place (controller-runtime's
`reconcileHandler`): the backoff, the metrics, the `reconciled` / `reconcile_failed` log line,
systemd's STATUS and READY, and the endpoint's readiness."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from reconciler import sd_notify
from reconciler.backoff import Backoff
from reconciler.daemon_options import DaemonOptions
from reconciler.history import Record
from reconciler.metrics import Metrics
from reconciler.outcome import Result
from reconciler.pass_result import PROBLEM_EVENT, Drift, DriftMemory, PassKind, PassResult
from reconciler.reconcile import Revision

log = structlog.get_logger("reconciler.daemon")

# How systemd's STATUS line names a failed pass's outcome (the log and metric say the word).
_STATUS_SAYS = {Result.ROLLED_BACK: "rolled back"}


class ReadyEndpoint(Protocol):
    def set_ready(self) -> None: ...


@dataclass
class LoopMemory:
    """What the loop remembers between passes to report (the pass keeps what it needs in
    its PassRunner, the retry state is the Backoff)."""

    last_error: str | None = None
    fetch_error: str | None = None  # why the last fetch of --git-remote failed
    watch_error: str | None = None  # why file events are not watched
    last_record: Record | None = None
    settle_at: float = 0.0  # a models.config someone else wrote is read again then
    first_done: bool = False
    applied_last: bool = False  # the last pass that ended in sync changed something


class PassPolicy:
    def __init__(self, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.metrics = metrics
        self.clock = clock
        self.memory = LoopMemory()
        self.backoff = Backoff()
        self.drift = DriftMemory()

    def handle(self, result: PassResult, endpoint: ReadyEndpoint, options: DaemonOptions) -> None:
        """The loop's policy, from what the pass returned: backoff, metrics, log, systemd's
        STATUS and READY, the endpoint's readiness."""
        memory = self.memory
        commit = result.revision.commit
        if result.record is not None:
            memory.last_record = result.record
        if result.versions is not None:
            self.metrics.set_versions(*result.versions)
        if result.config_invalid:
            self.metrics.record_drift(["models.config"])
        memory.settle_at = 0.0
        match result.kind:
            case PassKind.SETTLING:
                memory.settle_at = self.clock() + result.retry_in
                log.debug("config_settling", retry_in=round(result.retry_in, 3), commit=commit)
            case PassKind.DEFERRED:
                log.info("waiting_for_change", commit=commit, retry_in=round(result.retry_in, 1))
            case PassKind.INTERRUPTED:  # stopping: the next start picks it up from here
                log.info("stopped_between_phases", message=result.message, commit=commit)
            case kind if kind.in_sync:
                self._succeeded(result, endpoint)
            case kind:
                for problem in result.problems:
                    log.error(PROBLEM_EVENT[kind], problem=problem, commit=commit)
                self._failed(result, options)
                self.after_first()

    def report_drift(self, drift: Drift, revision: Revision) -> None:
        if not drift.found:
            self.drift.news(drift)
            return
        if self.drift.news(drift):
            log.warning("drift", commit=revision.commit, drift=list(drift.found))
            self.metrics.record_drift(drift.models)
        else:
            log.debug("drift", commit=revision.commit, drift=list(drift.found))

    def _succeeded(self, result: PassResult, endpoint: ReadyEndpoint) -> None:
        memory = self.memory
        self.backoff.forget()
        memory.last_error = None
        counted = result.kind.result or Result.NOOP
        changed = counted is not Result.NOOP
        self.metrics.record_reconcile(
            counted,
            finished_at=time.time(),
            convergence_seconds=result.seconds if changed else None,
        )
        commit = result.revision.commit
        if changed and commit:
            self.metrics.set_applied_commit(commit)
        # The pass an apply's own write of models.config wakes finds nothing to do: it
        # says nothing new.
        said = log.info if changed or not memory.applied_last else log.debug
        memory.applied_last = changed
        said("reconciled", outcome=counted, commit=commit, seconds=round(result.seconds, 3))
        at = commit or "work tree"
        state = f"in sync at {at}"
        if result.left_alone:
            state = f"drift left alone (self-heal off) in {', '.join(result.left_alone)} at {at}"
        if memory.watch_error:
            state += f"; {memory.watch_error}"
        sd_notify.status(state)
        # Ready after the first success, also when earlier passes failed (READY=1 was
        # then already sent by after_first; /readyz waited for this).
        endpoint.set_ready()
        if not memory.first_done:
            memory.first_done = True
            sd_notify.ready(state)

    def after_first(self) -> None:
        """After the first pass, systemd hears READY even when it failed: the daemon runs and
        keeps retrying; /readyz stays 503 until a pass succeeds."""
        if not self.memory.first_done:
            self.memory.first_done = True
            sd_notify.ready(f"started; last error: {self.memory.last_error}")

    def _failed(self, result: PassResult, options: DaemonOptions) -> None:
        """Record a failed pass. The next pass comes after the backoff, or at the next resync
        if sooner; only a failed apply waits out its whole backoff before it is tried again."""
        memory = self.memory
        memory.last_error = result.message
        memory.applied_last = False
        failed_apply = result.kind.failed_apply
        delay = self.backoff.failed(
            self.clock(), options.retry_base, result.attempt if failed_apply else None
        )
        retry_in = delay if failed_apply else min(delay, options.resync)
        counted = result.kind.result or Result.ERROR
        self.metrics.record_reconcile(counted, finished_at=time.time())
        log.error(
            "reconcile_failed",
            outcome=counted,
            error=result.message,
            commit=result.revision.commit,
            retry_in=round(retry_in, 1),
        )
        says = _STATUS_SAYS.get(counted, counted)
        sd_notify.status(f"{says}, retrying in {retry_in:.0f} s: {result.message[:200]}")
