"""Converging one TFS on a plan: for each phase verify, write, reload, wait; roll back on failure.

Every phase is written to models.config before it is pushed, so TFS's own file poll and a
gRPC push never disagree. A failure at any point restores the last-known-good config through
the same safe phases (`rollback`), so nothing that served before the apply stops serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from reconciler.config_store import ConfigStore
from reconciler.convergence import end_failures
from reconciler.desired import DesiredState
from reconciler.docker_target import TFS_FILE_SYSTEM_POLL, DockerError
from reconciler.outcome import Result
from reconciler.plan import Plan, labels_needing_a_load
from reconciler.preflight import missing_folders, names_and_labels, to_verify, version_changes
from reconciler.reload import (
    GrpcReloader,
    Reloader,
    ReloadFailed,
    ReloadMode,
)
from reconciler.rollback import STEP_FAILURES, roll_back
from reconciler.state import DiskState, LiveStatus, StatusSource, TfsUnreachable
from reconciler.tfs_config import ServingConfig, render_config
from reconciler.wait import Failures, ProgressHook, Waiter

log = structlog.get_logger("reconciler.apply")


# What --timeout keeps for a rollback when the apply itself runs out of time: --timeout bounds
# the whole command, so the apply's own wait ends this share early.
ROLLBACK_SHARE = 1 / 3


@dataclass(frozen=True)
class Target:
    """One TFS: where its status is read (REST), its models.config, how it takes a config."""

    status: StatusSource
    store: ConfigStore
    reloader: Reloader


@dataclass(frozen=True)
class Outcome:
    result: Result
    message: str
    phases: int = 0
    seconds: float = 0.0
    config: str | None = None  # models.config text in force afterwards

    @property
    def ok(self) -> bool:
        return self.result in (Result.NOOP, Result.APPLIED, Result.WRITTEN)


Verifier = Callable[[str, int, str], None]  # (model, version, request file) -> raises VerifyFailed


@dataclass
class Converger:
    target: Target
    timeout: float = 120.0
    poll_interval: float = 0.02
    verifier: Verifier | None = None
    on_progress: ProgressHook | None = None
    commit: str | None = None
    interrupted: Callable[[], bool] | None = None  # true: stop before the next phase
    target_text: str | None = None  # the plan's target as written before (a rollback's)
    # Called once before the first write of models.config (the history's write-ahead record);
    # an OSError from it stops the apply with nothing changed.
    before_first_write: Callable[[], None] | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    file_system_poll: float = TFS_FILE_SYSTEM_POLL  # TFS's --file_system_poll_wait_seconds
    _started: float = field(default=0.0, init=False)  # when the command's apply began

    @property
    def store(self) -> ConfigStore:
        return self.target.store

    @property
    def reloader(self) -> Reloader:
        return self.target.reloader

    @property
    def waiter(self) -> Waiter:
        return Waiter(
            self.target.status,
            self.file_system_poll,
            pushed=self.reloader.mode is ReloadMode.GRPC,
            clock=self.clock,
            sleep=self.sleep,
            poll_interval=self.poll_interval,
            on_progress=self.on_progress,
            commit=self.commit,
            started=self._started,
            timeout=self.timeout,
        )

    def apply(
        self, plan: Plan, disk: DiskState, desired: DesiredState, heal: bool = True
    ) -> Outcome:
        """check → save last-known-good → for each phase: verify, write, reload, wait."""
        started = self._started = self.clock()
        # A kill -9 between a temporary file and its rename leaves the file behind; the
        # caller holds the config's lock, so none of ours is being written now.
        self.store.remove_stale_temps()
        if plan.blocked:
            return Outcome(Result.BLOCKED, "; ".join(str(p) for p in plan.problems))
        phases = self._phases(plan, disk, heal)
        if isinstance(phases, Outcome):
            return phases
        previous_text = self.store.read()
        if previous_text is not None:
            self.store.save_last_known_good(previous_text)
        names, labels = names_and_labels(plan.touched, plan.target, plan.current)
        baseline = self.waiter.live(names, labels) if self.reloader.waits else None
        refused = self._refusal(plan, phases, disk, baseline)
        if refused is not None:
            return Outcome(Result.FAILED, refused, 0, self.clock() - started, previous_text)
        known = end_failures(baseline) if baseline is not None else frozenset()
        return self._run(plan, phases, disk, desired, previous_text, known, names, labels)

    def _phases(
        self, plan: Plan, disk: DiskState, heal: bool
    ) -> tuple[ServingConfig, ...] | Outcome:
        """The configs to write in turn, or why there are none."""
        phases = plan.phases
        if not plan.changes_config and (not heal or not self.reloader.waits):
            phases = ()  # only drift, and repairing it is not asked for (or cannot be seen)
        if not phases:
            return Outcome(Result.NOOP, "nothing to do", config=self.store.read())
        if self.reloader.phased:
            return phases
        early = labels_needing_a_load(plan, disk)
        if early and self.reloader.mode is ReloadMode.NONE:
            return Outcome(
                Result.FAILED,
                f"{'; '.join(early)} needs the version AVAILABLE first, and --reload none "
                "writes models.config once without waiting (TFS would refuse the label, or "
                "answer 404 by it while the version loads). Use --reload grpc or poll, which "
                "apply it in phases, or load the version in one apply and move the label in "
                f"the next; nothing was changed ({self.store.path} is as it was)",
            )
        return (plan.target,)

    def _refusal(
        self,
        plan: Plan,
        phases: tuple[ServingConfig, ...],
        disk: DiskState,
        baseline: LiveStatus | None,
    ) -> str | None:
        """Why nothing may be written, checked before the first write; None: go ahead."""
        unchanged = f"nothing was changed ({self.store.path} is as it was)"
        if (
            baseline is not None
            and not baseline.reachable
            and self.reloader.mode is not ReloadMode.RESTART
        ):
            # Nothing to wait on and nothing to confirm a rollback with: change nothing.
            return (
                f"TFS does not answer, so nothing was changed ({self.store.path} is as it "
                f"was): {baseline.error}"
            )
        try:
            self.reloader.check(plan.target)
            refused = missing_folders(plan.current, phases, disk) or self._disk_not_polled(
                plan.current, phases, disk
            )
        except (ReloadFailed, DockerError, TfsUnreachable) as error:
            refused = str(error)
        if refused is not None:
            return f"{refused}; {unchanged}"
        if self.before_first_write is None:
            return None
        try:
            self.before_first_write()
        except OSError as error:
            return (
                f"not applying: the history cannot record this apply before it starts "
                f"({error}), and a change it cannot record could not be told apart or rolled "
                f"back later; {unchanged}"
            )
        return None

    def _run(
        self,
        plan: Plan,
        phases: tuple[ServingConfig, ...],
        disk: DiskState,
        desired: DesiredState,
        previous_text: str | None,
        known: Failures,
        names: tuple[str, ...],
        labels: dict[str, set[str]],
    ) -> Outcome:
        """Write, reload and wait for each phase in turn; roll back at the first failure."""
        started = self._started
        # --timeout bounds the whole command: the apply stops early enough to leave the
        # rollback its share, and the rollback ends at started + timeout.
        deadline = started + self.timeout * (1 - ROLLBACK_SHARE)
        run = _Run(plan.current, disk, desired, deadline, names, labels, len(phases))
        applied = plan.current or ServingConfig()
        for number, phase in enumerate(phases, start=1):
            if self.interrupted is not None and self.interrupted():
                return self._stop_early(number - 1, len(phases), started)
            phase_started = self.clock()
            try:
                known = self._step(run, number, phase, applied, known)
            except STEP_FAILURES as error:
                result, message = roll_back(
                    self, error, phase, plan.current, previous_text, disk, started
                )
                return Outcome(result, message, 0, self.clock() - started, self.store.read())
            log.info(
                "phase_converged",
                phase=number,
                of=len(phases),
                commit=self.commit,
                seconds=round(self.clock() - phase_started, 3),
                since_start=round(self.clock() - started, 3),
            )
            applied = phase
        result = Result.APPLIED if self.reloader.waits else Result.WRITTEN
        return Outcome(
            result,
            f"{len(phases)} phase(s) {result}",
            len(phases),
            self.clock() - started,
            self.store.read(),
        )

    def _step(
        self, run: _Run, number: int, phase: ServingConfig, applied: ServingConfig, known: Failures
    ) -> Failures:
        """Phase `number`: verify, write, reload, wait; raises what failed."""
        if self.reloader.phased and self.reloader.waits:
            # A label moves in a phase of its own, after its version loaded: verify
            # the version before the label moves.
            self._verify_before(phase, applied, run)
        last = number == run.total
        text = self.target_text if last and self.target_text else render_config(phase)
        self.store.write(text)
        log.info(
            "phase_written",
            phase=number,
            of=run.total,
            reload=self.reloader.mode.value,
            path=str(self.store.path),
            commit=self.commit,
        )
        self.reload(phase, run.deadline, applied)
        if self.reloader.waits:
            known = self.waiter.wait(
                phase, applied, run.disk, known, run.deadline, run.names, run.labels
            )
            if not self.reloader.phased:
                # One config loads the version and moves its label (a restart): the
                # version can only be verified now; a failure rolls back.
                self._verify_before(phase, applied, run)
        return known

    def _stop_early(self, done: int, total: int, started: float) -> Outcome:
        if done == 0:
            message = f"interrupted before anything was changed ({self.store.path} is as it was)"
        else:
            message = (
                f"interrupted after phase {done} of {total}: {self.store.path} holds that "
                "phase, which serves everything the config before it served; apply again to "
                "finish, or roll back"
            )
        log.warning("interrupted", phase=done, of=total, commit=self.commit)
        return Outcome(Result.INTERRUPTED, message, done, self.clock() - started, self.store.read())

    def _disk_not_polled(
        self, previous: ServingConfig | None, phases: tuple[ServingConfig, ...], disk: DiskState
    ) -> str | None:
        """Why not to apply when a phase adds or drops versions and TFS is known never to poll
        its disk after start: a reload would change the config and TFS would never act on it
        (`SetAspiredVersionsCallback` polls once with a 0 s period, never with a negative one)."""
        if self.file_system_poll > 0 or self.reloader.mode not in (
            ReloadMode.GRPC,
            ReloadMode.POLL,
        ):
            return None
        changes = version_changes(previous, phases, disk)
        if not changes:
            return None
        return (
            f"not applying: TFS runs with --file_system_poll_wait_seconds="
            f"{self.file_system_poll:g}, so it reads version folders only at start and "
            f"would never act on {'; '.join(changes)}. Use --reload restart, or run TFS "
            "with a positive poll period (and tell the reconciler with "
            "--file-system-poll-seconds)"
        )

    def reload(
        self, phase: ServingConfig, deadline: float, before: ServingConfig | None = None
    ) -> None:
        """Ask TFS to take `phase`, within what is left until `deadline`."""
        # A push may take as long as the apply has left (TFS loads a new model in the call).
        reloader = self.reloader
        if isinstance(reloader, GrpcReloader):
            new = tuple(m.name for m in phase.models if before is None or not before.model(m.name))
            reloader.give_up = self.waiter.new_models_unlisted(new) if new else None
        reloader.reload(phase, timeout=deadline - self.clock())

    def _verify_before(self, phase: ServingConfig, applied: ServingConfig, run: _Run) -> None:
        """Verify each version a label is about to move to, if this apply loaded it."""
        if self.verifier is None:
            return
        for model, version, label, request in to_verify(
            phase, applied, run.previous, run.disk, run.desired
        ):
            log.info("verify", model=model, version=version, label=label, commit=self.commit)
            self.verifier(model, version, request)


@dataclass(frozen=True)
class _Run:
    """What every phase of one apply shares."""

    previous: ServingConfig | None  # the config before the apply
    disk: DiskState
    desired: DesiredState
    deadline: float
    names: tuple[str, ...]  # the models read from TFS, and their labels
    labels: dict[str, set[str]]
    total: int  # phases
