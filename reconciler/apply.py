"""Converging TFS on a plan: write, reload, wait, verify, and roll back on failure.

Every phase is written to models.config before it is pushed, so TFS's own file poll and a
gRPC push never disagree. A failure at any point restores the last-known-good config through
the same safe phases, so nothing that served before the apply stops serving.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import structlog

from reconciler.config_file import (
    LAST_KNOWN_GOOD,
    read_text,
    remove_stale_temps,
    save_last_known_good,
    write_atomic,
)
from reconciler.convergence import Progress, assess, end_failures, expectations, still_known
from reconciler.desired import DesiredState
from reconciler.docker_target import TFS_FILE_SYSTEM_POLL, DockerError, DockerTarget
from reconciler.observe import (
    DiskState,
    LiveStatus,
    StatusSource,
    TfsUnreachable,
    read_live,
)
from reconciler.plan import (
    Plan,
    labels_needing_a_load,
    live_basis,
    missing_base_paths,
    phases_between,
)
from reconciler.policy import served_versions
from reconciler.tfs_config import ServingConfig, changed_models, render_config
from reconciler.tfs_grpc import ReloadAbandoned, ReloadRejected, TfsGrpc
from reconciler.verify import VerifyFailed

log = structlog.get_logger("reconciler.apply")


# What --timeout keeps for a rollback when the apply itself runs out of time: --timeout bounds
# the whole command, so the apply's own wait ends this share early.
ROLLBACK_SHARE = 1 / 3
# The least any one call is given, so that a step at the deadline fails fast rather than at once.
MIN_STEP_SECONDS = 0.5

# TFS acts on versions added to or dropped from a config only at its next file-system poll
# (--file_system_poll_wait_seconds, 1 s by default): a wait gives it this many periods, and
# some slack for a busy host, before it concludes the poll is not coming. The same grace
# tells a version that failed before, asked for again, from one that failed again as fast.
POLL_PERIODS = 3
POLL_SLACK = 2.0


class ReloadMode(StrEnum):
    AUTO = "auto"
    GRPC = "grpc"
    POLL = "poll"
    RESTART = "restart"
    NONE = "none"


class ReloadFailed(Exception):
    """A reload could not be attempted (for example a base_path TFS would hang on)."""


class ConvergeFailed(Exception):
    """TFS did not reach the wanted state: a load failed, or the time ran out."""


# What can go wrong in a step (write, reload, wait), for an apply and for its rollback alike.
_STEP_FAILURES = (
    ReloadRejected,
    ReloadAbandoned,
    ReloadFailed,
    TfsUnreachable,
    DockerError,
    ConvergeFailed,
    OSError,  # writing models.config (a full disk, a read-only folder)
)


class Reloader(Protocol):
    """How TFS takes a config."""

    mode: ReloadMode
    waits: bool  # wait for TFS to converge after each config
    phased: bool  # each phase is its own reload (False: only the final config)

    def check(self, target: ServingConfig) -> None:
        """Before anything is written: raise ReloadFailed, DockerError or TfsUnreachable
        when TFS cannot take `target` this way (e.g. the Docker engine or the container is
        missing)."""

    def reload(self, config: ServingConfig, timeout: float | None = None) -> None:
        """Make TFS take `config`, within `timeout` seconds where the reload can wait."""


@dataclass
class GrpcReloader:
    client: TfsGrpc
    deadline: float = 30.0  # a push's deadline when the caller gives none
    mode: ReloadMode = ReloadMode.GRPC
    waits: bool = True
    phased: bool = True
    # Asked while TFS works on a push; a reason to give up on it (set by the converger).
    give_up: Callable[[], str | None] | None = None

    def check(self, target: ServingConfig) -> None:
        return None

    def reload(self, config: ServingConfig, timeout: float | None = None) -> None:
        """Push `config`; `timeout` (what the command has left) bounds the call: a push that
        adds a model returns only once the model loaded, which may take as long as the apply
        may, and no longer."""
        chosen = max(MIN_STEP_SECONDS, self.deadline if timeout is None else timeout)
        if self.give_up is None:
            self.client.reload(config, timeout=chosen)
        else:
            self.client.reload(config, timeout=chosen, give_up=self.give_up)


@dataclass
class PollReloader:
    """TFS re-reads models.config on its own (--model_config_file_poll_wait_seconds)."""

    mode: ReloadMode = ReloadMode.POLL
    waits: bool = True
    phased: bool = True

    def check(self, target: ServingConfig) -> None:
        return None

    def reload(self, config: ServingConfig, timeout: float | None = None) -> None:
        return None


@dataclass
class RestartReloader:
    """Restart the TFS container: it reads models.config at start. Drops traffic."""

    target: DockerTarget
    mode: ReloadMode = ReloadMode.RESTART
    waits: bool = True
    phased: bool = False

    def check(self, target: ServingConfig) -> None:
        """Raise DockerError now if the engine or the container cannot be reached, and
        ReloadFailed if TFS would not start with `target` (before it is written)."""
        self.target.args()
        self._refuse_labels_tfs_cannot_start_with(target)

    def reload(self, config: ServingConfig, timeout: float | None = None) -> None:
        self._refuse_labels_tfs_cannot_start_with(config)  # a rollback's config too
        self.target.restart()

    def _refuse_labels_tfs_cannot_start_with(self, config: ServingConfig) -> None:
        if any(m.labels for m in config.models) and not self.target.allows_labels_for_unavailable():
            raise ReloadFailed(
                "not restarting: the config has labels and TFS runs without "
                "--allow_version_labels_for_unavailable_models=true, so it would fail to start"
            )


@dataclass
class NoReload:
    """Only write the file."""

    mode: ReloadMode = ReloadMode.NONE
    waits: bool = False
    phased: bool = False

    def check(self, target: ServingConfig) -> None:
        return None

    def reload(self, config: ServingConfig, timeout: float | None = None) -> None:
        return None


@dataclass(frozen=True)
class Outcome:
    result: str  # noop, applied, written, rolled_back, failed, blocked, interrupted
    message: str
    phases: int = 0
    seconds: float = 0.0
    config: str | None = None  # models.config text in force afterwards

    @property
    def ok(self) -> bool:
        return self.result in ("noop", "applied", "written")


Verifier = Callable[[str, int, str], None]  # (model, version, request file) -> raises VerifyFailed
ProgressHook = Callable[[Progress, float], None]


@dataclass
class Converger:
    config_path: Path
    state_dir: Path
    status: StatusSource
    reloader: Reloader
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
    def poll_grace(self) -> float:
        """How long after a push versions may wait for TFS's next file-system poll."""
        return POLL_PERIODS * max(self.file_system_poll, 0.0) + POLL_SLACK

    def apply(
        self, plan: Plan, disk: DiskState, desired: DesiredState, heal: bool = True
    ) -> Outcome:
        started = self.clock()
        # A kill -9 between a temporary file and its rename leaves the file behind; the
        # caller holds the config's lock, so none of ours is being written now.
        remove_stale_temps(self.config_path)
        remove_stale_temps(self.state_dir / LAST_KNOWN_GOOD)
        if plan.blocked:
            return Outcome("blocked", "; ".join(str(p) for p in plan.problems))
        phases = plan.phases
        if not plan.changes_config and (not heal or not self.reloader.waits):
            phases = ()  # only drift, and repairing it is not asked for (or cannot be seen)
        if not phases:
            return Outcome("noop", "nothing to do", config=read_text(self.config_path))
        if not self.reloader.phased:
            early = labels_needing_a_load(plan, disk)
            if early and self.reloader.mode is ReloadMode.NONE:
                return Outcome(
                    "failed",
                    f"{'; '.join(early)} needs the version AVAILABLE first, and --reload none "
                    "writes models.config once without waiting (TFS would refuse the label, or "
                    "answer 404 by it while the version loads). Use --reload grpc or poll, which "
                    "apply it in phases, or load the version in one apply and move the label in "
                    f"the next; nothing was changed ({self.config_path} is as it was)",
                )
            phases = (plan.target,)
        previous_text = read_text(self.config_path)
        previous = plan.current
        if previous_text is not None:
            save_last_known_good(self.state_dir, previous_text)
        names, labels = _names_and_labels(plan.touched, plan.target, previous)
        baseline = self._live(names, labels) if self.reloader.waits else None
        if (
            baseline is not None
            and not baseline.reachable
            and self.reloader.mode is not ReloadMode.RESTART
        ):
            # Nothing to wait on and nothing to confirm a rollback with: change nothing.
            return Outcome(
                "failed",
                f"TFS does not answer, so nothing was changed ({self.config_path} is as it "
                f"was): {baseline.error}",
                0,
                self.clock() - started,
                previous_text,
            )
        try:
            self.reloader.check(plan.target)
            _check_new_models_on_disk(previous, phases, disk)
            self._check_disk_is_polled(previous, phases, disk)
        except (ReloadFailed, DockerError, TfsUnreachable) as error:
            return Outcome(
                "failed",
                f"{error}; nothing was changed ({self.config_path} is as it was)",
                0,
                self.clock() - started,
                previous_text,
            )
        if self.before_first_write is not None:
            try:
                self.before_first_write()
            except OSError as error:
                return Outcome(
                    "failed",
                    f"not applying: the history cannot record this apply before it starts "
                    f"({error}), and a change it cannot record could not be told apart or rolled "
                    f"back later; nothing was changed ({self.config_path} is as it was)",
                    0,
                    self.clock() - started,
                    previous_text,
                )
        known = end_failures(baseline) if baseline is not None else frozenset()
        # --timeout bounds the whole command: the apply stops early enough to leave the
        # rollback its share, and the rollback ends at started + timeout.
        deadline = started + self.timeout * (1 - ROLLBACK_SHARE)
        self._started = started
        applied = previous or ServingConfig()
        for number, phase in enumerate(phases, start=1):
            if self.interrupted is not None and self.interrupted():
                return self._stop_early(number - 1, len(phases), started)
            phase_started = self.clock()
            try:
                if self.reloader.phased and self.reloader.waits:
                    # A label moves in a phase of its own, after its version loaded: verify
                    # the version before the label moves.
                    self._verify_before(phase, applied, previous, disk, desired)
                last = number == len(phases)
                text = self.target_text if last and self.target_text else render_config(phase)
                write_atomic(self.config_path, text)
                log.info(
                    "phase_written",
                    phase=number,
                    of=len(phases),
                    reload=self.reloader.mode.value,
                    path=str(self.config_path),
                    commit=self.commit,
                )
                self._reload(phase, deadline, applied)
                if self.reloader.waits:
                    known = self._wait(phase, applied, disk, known, deadline, names, labels)
                    if not self.reloader.phased:
                        # One config loads the version and moves its label (a restart): the
                        # version can only be verified now; a failure rolls back.
                        self._verify_before(phase, applied, previous, disk, desired)
            except (*_STEP_FAILURES, VerifyFailed) as error:
                return self._roll_back(error, phase, previous, previous_text, disk, started)
            log.info(
                "phase_converged",
                phase=number,
                of=len(phases),
                commit=self.commit,
                seconds=round(self.clock() - phase_started, 3),
                since_start=round(self.clock() - started, 3),
            )
            applied = phase
        result = "applied" if self.reloader.waits else "written"
        return Outcome(
            result,
            f"{len(phases)} phase(s) {result}",
            len(phases),
            self.clock() - started,
            read_text(self.config_path),
        )

    def _stop_early(self, done: int, total: int, started: float) -> Outcome:
        if done == 0:
            message = f"interrupted before anything was changed ({self.config_path} is as it was)"
        else:
            message = (
                f"interrupted after phase {done} of {total}: {self.config_path} holds that "
                "phase, which serves everything the config before it served; apply again to "
                "finish, or roll back"
            )
        log.warning("interrupted", phase=done, of=total, commit=self.commit)
        return Outcome(
            "interrupted", message, done, self.clock() - started, read_text(self.config_path)
        )

    def _check_disk_is_polled(
        self, previous: ServingConfig | None, phases: tuple[ServingConfig, ...], disk: DiskState
    ) -> None:
        """Raise ReloadFailed when a phase adds or drops versions and TFS is known never to poll
        its disk after start: a reload would change the config and TFS would never act on it
        (`SetAspiredVersionsCallback` polls once with a 0 s period, never with a negative one)."""
        if self.file_system_poll > 0 or self.reloader.mode not in (
            ReloadMode.GRPC,
            ReloadMode.POLL,
        ):
            return
        changes = _version_changes(previous, phases, disk)
        if changes:
            raise ReloadFailed(
                f"not applying: TFS runs with --file_system_poll_wait_seconds="
                f"{self.file_system_poll:g}, so it reads version folders only at start and "
                f"would never act on {'; '.join(changes)}. Use --reload restart, or run TFS "
                "with a positive poll period (and tell the reconciler with "
                "--file-system-poll-seconds)"
            )

    def _reload(
        self, phase: ServingConfig, deadline: float, before: ServingConfig | None = None
    ) -> None:
        # A push may take as long as the apply has left (TFS loads a new model in the call).
        if isinstance(self.reloader, GrpcReloader):
            new = tuple(m.name for m in phase.models if before is None or not before.model(m.name))
            self.reloader.give_up = self._new_models_unlisted(new) if new else None
        self.reloader.reload(phase, timeout=deadline - self.clock())

    def _new_models_unlisted(self, names: tuple[str, ...]) -> Callable[[], str | None]:
        """While TFS works on a push that adds `names`: a reason to give up once, a few
        file-system polls in, TFS lists no version of one of them. ServerCore::ReloadConfig
        waits for each new model's highest version, and only a file-system poll finds it."""
        started = self.clock()

        def give_up() -> str | None:
            waited = self.clock() - started
            if waited < self.poll_grace:
                return None
            live = read_live(self.status, names, {})
            if not live.reachable:
                return None
            unlisted = tuple(
                f"{name} has no version listed"
                for name in names
                if (model := live.model(name)) is None or not model.found or not model.versions
            )
            if not unlisted:
                return None
            return self._not_polled(Progress(False, unpolled=unlisted), waited)

        return give_up

    def _live(self, names: tuple[str, ...], labels: dict[str, set[str]]) -> LiveStatus:
        return read_live(self.status, names, labels)

    def _verify_before(
        self,
        phase: ServingConfig,
        applied: ServingConfig,
        previous: ServingConfig | None,
        disk: DiskState,
        desired: DesiredState,
    ) -> None:
        """Verify each version a label is about to move to, if this apply loaded it."""
        if self.verifier is None:
            return
        for model, version, label, request in self._to_verify(
            phase, applied, previous, disk, desired
        ):
            log.info("verify", model=model, version=version, label=label, commit=self.commit)
            self.verifier(model, version, request)

    def _to_verify(
        self,
        phase: ServingConfig,
        applied: ServingConfig,
        previous: ServingConfig | None,
        disk: DiskState,
        desired: DesiredState,
    ) -> list[tuple[str, int, str, str]]:
        """(model, version, label, request file) for each label `phase` moves to a version
        this apply loads, where the desired state asks for verification."""
        found: list[tuple[str, int, str, str]] = []
        for model in phase.models:
            wanted = desired.model(model.name)
            if wanted is None or wanted.verify_request is None:
                continue
            before = previous.model(model.name) if previous is not None else None
            folder = disk.model(model.name)
            served_before = (
                served_versions(before.effective_policy, folder.numbers if folder else ())
                if before is not None
                else ()
            )
            now = applied.model(model.name)
            old_labels = now.label_map if now is not None else {}
            for label, version in model.labels:
                if old_labels.get(label) != version and version not in served_before:
                    found.append((model.name, version, label, wanted.verify_request))
        return found

    def _wait(
        self,
        phase: ServingConfig,
        previous: ServingConfig,
        disk: DiskState,
        known: frozenset[tuple[str, int, str]],
        deadline: float,
        names: tuple[str, ...],
        labels: dict[str, set[str]],
        *,
        require_gone: bool = True,
    ) -> frozenset[tuple[str, int, str]]:
        """Wait until TFS serves `phase`; the earlier failures (`known`) still standing."""
        wanted = tuple(w for w in expectations(phase, previous, disk) if w.model in names)
        if not require_gone:
            # A version TFS is still loading cannot be cancelled: it loads, then unloads. The
            # old state is live again once its versions serve and its labels resolve.
            wanted = tuple(replace(want, gone=()) for want in wanted)
        started = self.clock()
        loading = {(w.model, v) for w in wanted for v in w.serve}
        shown = ""
        while True:
            live = self._live(names, labels)
            known = still_known(known, live)
            waited = self.clock() - started
            if waited >= self.poll_grace:
                # A version failed before and asked for again: a failure as fast as the first
                # one is never seen leaving END, so after a grace it is this change's failure.
                known = frozenset(k for k in known if (k[0], k[1]) not in loading)
            progress = assess(wanted, live, known)
            if progress.failures:
                raise ConvergeFailed("; ".join(progress.failures))
            if progress.done:
                return known
            if progress.summary != shown and progress.loading:
                shown = progress.summary
                log.info("loading", progress=shown, commit=self.commit)
            if (
                progress.unpolled
                and waited >= self.poll_grace
                and self.reloader.mode is ReloadMode.GRPC  # the config is in force
            ):
                raise ConvergeFailed(self._not_polled(progress, waited))
            if self.clock() >= deadline:
                spent = self.clock() - self._started
                raise ConvergeFailed(
                    f"timed out after {spent:.3g} s of the {self.timeout:g} s --timeout "
                    "(the rest is kept for a rollback): "
                    + "; ".join(filter(None, (progress.summary, *progress.pending)))
                )
            if self.on_progress is not None:
                self.on_progress(progress, self.clock() - started)
            self.sleep(self.poll_interval)

    def _not_polled(self, progress: Progress, waited: float) -> str:
        return (
            f"TFS took the config but has not acted on its version folders {waited:.3g} s "
            f"later ({'; '.join(progress.unpolled)}), though it polls its disk every "
            f"{self.file_system_poll:g} s as configured (--file-system-poll-seconds). TFS "
            "runs with --file_system_poll_wait_seconds 0 (it reads version folders only at "
            "start) or longer than configured, or a base_path of another model in its config "
            "is missing, which stops its file-system poll for every model"
        )

    def _serves(
        self,
        phase: ServingConfig,
        previous: ServingConfig,
        disk: DiskState,
        names: tuple[str, ...],
        labels: dict[str, set[str]],
    ) -> bool:
        wanted = tuple(replace(w, gone=()) for w in expectations(phase, previous, disk))
        return assess(wanted, self._live(names, labels)).done

    def _roll_back(
        self,
        error: Exception,
        attempted: ServingConfig,
        previous: ServingConfig | None,
        previous_text: str | None,
        disk: DiskState,
        started: float,
    ) -> Outcome:
        log.error("apply_failed", error=str(error), commit=self.commit)
        target = previous or ServingConfig()
        text = previous_text if previous_text is not None else render_config(target)
        names, labels = _names_and_labels(changed_models(attempted, target), attempted, target)
        if isinstance(error, ReloadAbandoned):
            every = frozenset(attempted.names) | frozenset(target.names)
            return self._restore_only(
                error, text, *_names_and_labels(every, attempted, target), started
            )
        phases: tuple[ServingConfig, ...] = (target,)
        if self.reloader.phased:
            basis = live_basis(attempted, self._live(names, labels), target)
            phases = phases_between(basis, target, disk)
            if not phases or phases[-1] != target:
                phases = (*phases, target)
        deadline = max(started + self.timeout, self.clock() + MIN_STEP_SECONDS)
        step_from = attempted
        written = 0
        try:
            for number, phase in enumerate(phases, start=1):
                last = number == len(phases)
                write_atomic(self.config_path, text if last else render_config(phase))
                written = number
                log.warning("rollback_phase_written", phase=number, commit=self.commit)
                try:
                    self._reload(phase, deadline, step_from)
                except (ReloadRejected, ReloadAbandoned, ReloadFailed, TfsUnreachable, DockerError):
                    # The failed change may never have reached TFS (push unreachable, container
                    # not found): if TFS still serves this phase, the rollback holds.
                    if not self.reloader.waits or not self._serves(
                        phase, step_from, disk, names, labels
                    ):
                        raise
                if self.reloader.waits:
                    self._wait(
                        phase,
                        step_from,
                        disk,
                        frozenset(),
                        deadline,
                        names,
                        labels,
                        require_gone=False,
                    )
                step_from = phase
        except _STEP_FAILURES as again:
            if written == len(phases):
                holds = "holds the last-known-good config"
            elif written:
                holds = f"holds step {written} of {len(phases)} back to the last-known-good config"
            else:
                holds = "is unchanged since the failure"
            saved = ""
            if previous_text is not None:
                saved = f"; the last-known-good config is in {self.state_dir / LAST_KNOWN_GOOD}"
            now = "not asked (--reload none)"
            if self.reloader.waits:
                # A failed reload may already have changed what serves: say what does.
                now = describe_live(self._live(names, labels))
            message = (
                f"{error}. Rolling back to the last-known-good config failed too: {again}."
                f" {self.config_path} {holds}{saved}. TFS serves now: {now}."
            )
            log.error("rollback_failed", error=str(again), serving=now, commit=self.commit)
            return Outcome(
                "failed", message, 0, self.clock() - started, read_text(self.config_path)
            )
        if self.reloader.waits:  # what the rollback waited for is what TFS was seen serving
            serving = describe_serving(target, disk)
            done = f"Rolled back to the last-known-good config; serving now: {serving}"
        else:
            serving = "unknown"
            done = (
                f"Restored the last-known-good config in {self.config_path} (TFS was not asked: "
                f"--reload {self.reloader.mode.value})"
            )
        log.warning("rolled_back", error=str(error), serving=serving, commit=self.commit)
        return Outcome(
            "rolled_back",
            f"{error}. {done}",
            0,
            self.clock() - started,
            read_text(self.config_path),
        )

    def _restore_only(
        self,
        error: ReloadAbandoned,
        text: str,
        names: tuple[str, ...],
        labels: dict[str, set[str]],
        started: float,
    ) -> Outcome:
        """After a push given up on: ServerCore::ReloadConfig holds its lock while it waits,
        so TFS takes no other reload until that one ends (never, without a file-system poll)
        or TFS restarts. Restore the file for that restart; push nothing; say what serves."""
        try:
            write_atomic(self.config_path, text)
            restored = f"{self.config_path} holds the last-known-good config again"
        except OSError as again:
            restored = f"restoring {self.config_path} failed too: {again}"
        now = describe_live(self._live(names, labels))
        log.error("reload_abandoned", error=str(error), serving=now, commit=self.commit)
        return Outcome(
            "failed",
            f"{error}. TFS takes no other reload until that push ends or TFS restarts "
            f"(ServerCore::ReloadConfig waits under its lock), so nothing was pushed back: "
            f"{restored}, for TFS to read at its restart. TFS serves now: {now}.",
            0,
            self.clock() - started,
            read_text(self.config_path),
        )


def _names_and_labels(
    touched: frozenset[str], *configs: ServingConfig | None
) -> tuple[tuple[str, ...], dict[str, set[str]]]:
    """The `touched` models and their labels in `configs`: what a wait reads from TFS."""
    labels: dict[str, set[str]] = {name: set() for name in touched}
    for config in configs:
        for model in config.models if config is not None else ():
            if model.name in touched:
                labels[model.name].update(label for label, _ in model.labels)
    return tuple(sorted(touched)), labels


def _check_new_models_on_disk(
    previous: ServingConfig | None, phases: tuple[ServingConfig, ...], disk: DiskState
) -> None:
    """Raise ReloadFailed when a phase holds a model whose folder is missing: TFS hangs on a
    reload that adds such a model until its deadline (queueing every later reload behind it),
    and one missing base_path, managed or not, stops its file-system poll for every model
    (`PollFileSystemForConfig`), so no version of any model would load or unload."""
    missing = missing_base_paths(phases, disk)
    if missing:
        raise ReloadFailed("not applying: " + "; ".join(f"{n}: {m}" for n, m in missing))
    before = previous or ServingConfig()
    for phase in phases:
        for model in phase.models:
            known = before.model(model.name)
            if known is not None and known.same_base_path(model.base_path):
                continue
            folder = disk.model(model.name)
            if folder is None or not folder.exists:
                where = folder.path if folder is not None else "outside the models folder"
                raise ReloadFailed(
                    f"not applying: {model.name} base_path {model.base_path} is not on disk"
                    f" ({where}), and TFS hangs on a new model whose folder is missing"
                )
        before = phase


def _version_changes(
    previous: ServingConfig | None, phases: tuple[ServingConfig, ...], disk: DiskState
) -> list[str]:
    """What in `phases` only a file-system poll makes TFS do: a model added, versions of a
    model added or dropped (a label move or a removed model needs none)."""
    found = []
    before = previous or ServingConfig()
    for phase in phases:
        for model in phase.models:
            old = before.model(model.name)
            folder = disk.model(model.name)
            numbers = folder.numbers if folder is not None else ()
            now = served_versions(model.effective_policy, numbers)
            if old is None:
                found.append(f"{model.name}: a new model")
                continue
            then = served_versions(old.effective_policy, numbers)
            if set(now) != set(then) or not old.same_base_path(model.base_path):
                found.append(
                    f"{model.name}: versions {', '.join(map(str, then)) or 'none'} -> "
                    f"{', '.join(map(str, now)) or 'none'}"
                )
        before = phase
    return list(dict.fromkeys(found))


def describe_live(live: LiveStatus) -> str:
    """What TFS was seen serving (AVAILABLE versions, labels) for the models read."""
    if not live.reachable:
        return f"unknown (TFS does not answer: {live.error})"
    parts = []
    for model in live.models:
        if not model.found:
            parts.append(f"{model.name} not served")
            continue
        labels = ", ".join(f"{label}={version}" for label, version in model.labels)
        text = f"{model.name} versions {', '.join(map(str, model.available)) or 'none'}"
        parts.append(text + (f" ({labels})" if labels else ""))
    return "; ".join(parts) or "nothing that was read"


def describe_serving(config: ServingConfig, disk: DiskState) -> str:
    parts = []
    for model in config.models:
        folder = disk.model(model.name)
        versions = served_versions(model.effective_policy, folder.numbers if folder else ())
        labels = ", ".join(f"{label}={version}" for label, version in model.labels)
        text = f"{model.name} versions {', '.join(map(str, versions)) or 'none'}"
        parts.append(text + (f" ({labels})" if labels else ""))
    return "; ".join(parts) or "no models"


def choose_reloader(
    mode: ReloadMode,
    *,
    grpc_target: str,
    docker: DockerTarget | None,
    allow_restart: bool,
) -> Reloader:
    """The reloader for `mode`; `auto` takes gRPC when it answers, else polling.

    `auto` restarts the container only with `allow_restart`, since a restart drops traffic.
    """
    if mode is ReloadMode.NONE:
        return NoReload()
    if mode is ReloadMode.POLL:
        return PollReloader()
    if mode is ReloadMode.RESTART:
        if docker is None:
            raise DockerError("--reload restart needs --container NAME or --container-label K=V")
        return RestartReloader(docker)
    client = TfsGrpc(grpc_target)
    if mode is ReloadMode.GRPC or client.answers(timeout=1.0):
        return GrpcReloader(client)
    client.close()
    chosen: Reloader = PollReloader()
    if allow_restart and docker is not None:
        chosen = RestartReloader(docker)
    log.warning("reload_auto", grpc_target=grpc_target, grpc="no answer", using=chosen.mode.value)
    return chosen
