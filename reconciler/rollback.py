"""Rolling a failed apply back to the last-known-good config, through the same safe phases
(write, reload, wait), or, after a push TFS never finished, restoring only the file."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from reconciler.errors import StepError, TransientError
from reconciler.outcome import Result
from reconciler.plan import live_basis, phases_between
from reconciler.preflight import describe_live, describe_serving, names_and_labels
from reconciler.reload import MIN_STEP_SECONDS, RELOAD_FAILURES
from reconciler.state import DiskState
from reconciler.tfs_config import ServingConfig, changed_models, render_config
from reconciler.tfs_grpc import ReloadAbandoned

if TYPE_CHECKING:
    from reconciler.converge import Converger

log = structlog.get_logger("reconciler.apply")

# What can go wrong in a step (write, reload, wait), for an apply and for its rollback alike.
# What rolls an apply back: its two error families (errors.py), and a write of models.config
# that failed (a full disk, a read-only folder).
STEP_FAILURES = (StepError, TransientError, OSError)

Ended = tuple[Result, str]  # (result, message): ROLLED_BACK or FAILED


def roll_back(
    converger: Converger,
    error: Exception,
    attempted: ServingConfig,
    previous: ServingConfig | None,
    previous_text: str | None,
    disk: DiskState,
    started: float,
) -> Ended:
    """Put back `previous` (written as `previous_text`) after `error` while `attempted` was
    applied; what the rollback ended in."""
    log.error("apply_failed", error=str(error), commit=converger.commit)
    target = previous or ServingConfig()
    text = previous_text if previous_text is not None else render_config(target)
    if isinstance(error, ReloadAbandoned):
        every = frozenset(attempted.names) | frozenset(target.names)
        return _restore_only(converger, error, text, *names_and_labels(every, attempted, target))
    names, labels = names_and_labels(changed_models(attempted, target), attempted, target)
    phases: tuple[ServingConfig, ...] = (target,)
    if converger.reloader.phased:
        basis = live_basis(attempted, converger.waiter.live(names, labels), target)
        phases = phases_between(basis, target, disk)
        if not phases or phases[-1] != target:
            phases = (*phases, target)
    deadline = max(started + converger.timeout, converger.clock() + MIN_STEP_SECONDS)
    written = [0]
    try:
        _rollback_phases(converger, phases, text, attempted, disk, deadline, names, labels, written)
    except STEP_FAILURES as again:
        holds = _what_the_file_holds(written[0], len(phases))
        return _failed_again(converger, error, again, holds, previous_text, names, labels)
    if converger.reloader.waits:  # what the rollback waited for is what TFS was seen serving
        serving = describe_serving(target, disk)
        done = f"Rolled back to the last-known-good config; serving now: {serving}"
    else:
        serving = "unknown"
        done = (
            f"Restored the last-known-good config in {converger.store.path} (TFS was not "
            f"asked: --reload {converger.reloader.mode.value})"
        )
    log.warning("rolled_back", error=str(error), serving=serving, commit=converger.commit)
    return Result.ROLLED_BACK, f"{error}. {done}"


def _rollback_phases(
    converger: Converger,
    phases: tuple[ServingConfig, ...],
    text: str,
    attempted: ServingConfig,
    disk: DiskState,
    deadline: float,
    names: tuple[str, ...],
    labels: dict[str, set[str]],
    written: list[int],
) -> None:
    """Write, reload and wait for each phase back (the last one as `text`); `written[0]`
    counts the phases written so far."""
    step_from = attempted
    for number, phase in enumerate(phases, start=1):
        last = number == len(phases)
        converger.store.write(text if last else render_config(phase))
        written[0] = number
        log.warning("rollback_phase_written", phase=number, commit=converger.commit)
        try:
            converger.reload(phase, deadline, step_from)
        except RELOAD_FAILURES:
            # The failed change may never have reached TFS (push unreachable, container
            # not found): if TFS still serves this phase, the rollback holds.
            if not converger.reloader.waits or not converger.waiter.serves(
                phase, step_from, disk, names, labels
            ):
                raise
        if converger.reloader.waits:
            converger.waiter.wait(
                phase, step_from, disk, frozenset(), deadline, names, labels, require_gone=False
            )
        step_from = phase


def _what_the_file_holds(written: int, total: int) -> str:
    if written == total:
        return "holds the last-known-good config"
    if written:
        return f"holds step {written} of {total} back to the last-known-good config"
    return "is unchanged since the failure"


def _failed_again(
    converger: Converger,
    error: Exception,
    again: Exception,
    holds: str,
    previous_text: str | None,
    names: tuple[str, ...],
    labels: dict[str, set[str]],
) -> Ended:
    saved = ""
    if previous_text is not None:
        saved = f"; the last-known-good config is in {converger.store.last_known_good_path}"
    now = "not asked (--reload none)"
    if converger.reloader.waits:
        # A failed reload may already have changed what serves: say what does.
        now = describe_live(converger.waiter.live(names, labels))
    message = (
        f"{error}. Rolling back to the last-known-good config failed too: {again}."
        f" {converger.store.path} {holds}{saved}. TFS serves now: {now}."
    )
    log.error("rollback_failed", error=str(again), serving=now, commit=converger.commit)
    return Result.FAILED, message


def _restore_only(
    converger: Converger,
    error: ReloadAbandoned,
    text: str,
    names: tuple[str, ...],
    labels: dict[str, set[str]],
) -> Ended:
    """After a push given up on: ServerCore::ReloadConfig holds its lock while it waits,
    so TFS takes no other reload until that one ends (never, without a file-system poll)
    or TFS restarts. Restore the file for that restart; push nothing; say what serves."""
    try:
        converger.store.write(text)
        restored = f"{converger.store.path} holds the last-known-good config again"
    except OSError as again:
        restored = f"restoring {converger.store.path} failed too: {again}"
    now = describe_live(converger.waiter.live(names, labels))
    log.error("reload_abandoned", error=str(error), serving=now, commit=converger.commit)
    return Result.FAILED, (
        f"{error}. TFS takes no other reload until that push ends or TFS restarts "
        f"(ServerCore::ReloadConfig waits under its lock), so nothing was pushed back: "
        f"{restored}, for TFS to read at its restart. TFS serves now: {now}."
    )
