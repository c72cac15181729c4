"""Waiting until TFS serves a config: read its status until the expected versions serve and
the labels resolve, a load fails, or the deadline passes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from reconciler.convergence import Progress, assess, expectations, still_known
from reconciler.errors import StepError
from reconciler.observe import DiskState, LiveStatus, StatusSource, read_live
from reconciler.tfs_config import ServingConfig

log = structlog.get_logger("reconciler.apply")

# TFS acts on versions added to or dropped from a config only at its next file-system poll
# (--file_system_poll_wait_seconds, 1 s by default): a wait gives it this many periods, and
# some slack for a busy host, before it concludes the poll is not coming. The same grace
# tells a version that failed before, asked for again, from one that failed again as fast.
POLL_PERIODS = 3
POLL_SLACK = 2.0

ProgressHook = Callable[[Progress, float], None]
Failures = frozenset[tuple[str, int, str]]  # (model, version, error) seen in END


class ConvergeFailed(StepError):
    """TFS did not reach the wanted state: a load failed, or the time ran out."""


@dataclass(frozen=True)
class Waiter:
    """Reads one TFS's status (`status`) on `clock` until a phase serves."""

    status: StatusSource
    file_system_poll: float  # TFS's --file_system_poll_wait_seconds
    pushed: bool  # the config is in force once written (a gRPC push), not at TFS's own poll
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    poll_interval: float = 0.02
    on_progress: ProgressHook | None = None
    commit: str | None = None
    started: float = 0.0  # when the command began, and its --timeout (for messages)
    timeout: float = 120.0

    @property
    def poll_grace(self) -> float:
        """How long after a push versions may wait for TFS's next file-system poll."""
        return POLL_PERIODS * max(self.file_system_poll, 0.0) + POLL_SLACK

    def live(self, names: tuple[str, ...], labels: dict[str, set[str]]) -> LiveStatus:
        return read_live(self.status, names, labels)

    def wait(
        self,
        phase: ServingConfig,
        previous: ServingConfig,
        disk: DiskState,
        known: Failures,
        deadline: float,
        names: tuple[str, ...],
        labels: dict[str, set[str]],
        *,
        require_gone: bool = True,
    ) -> Failures:
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
            live = self.live(names, labels)
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
            self._give_up_if_stuck(progress, waited, deadline)
            if self.on_progress is not None:
                self.on_progress(progress, self.clock() - started)
            self.sleep(self.poll_interval)

    def _give_up_if_stuck(self, progress: Progress, waited: float, deadline: float) -> None:
        if progress.unpolled and waited >= self.poll_grace and self.pushed:
            raise ConvergeFailed(self.not_polled(progress, waited))
        if self.clock() >= deadline:
            spent = self.clock() - self.started
            raise ConvergeFailed(
                f"timed out after {spent:.3g} s of the {self.timeout:g} s --timeout "
                "(the rest is kept for a rollback): "
                + "; ".join(filter(None, (progress.summary, *progress.pending)))
            )

    def not_polled(self, progress: Progress, waited: float) -> str:
        return (
            f"TFS took the config but has not acted on its version folders {waited:.3g} s "
            f"later ({'; '.join(progress.unpolled)}), though it polls its disk every "
            f"{self.file_system_poll:g} s as configured (--file-system-poll-seconds). TFS "
            "runs with --file_system_poll_wait_seconds 0 (it reads version folders only at "
            "start) or longer than configured, or a base_path of another model in its config "
            "is missing, which stops its file-system poll for every model"
        )

    def serves(
        self,
        phase: ServingConfig,
        previous: ServingConfig,
        disk: DiskState,
        names: tuple[str, ...],
        labels: dict[str, set[str]],
    ) -> bool:
        """Whether TFS serves `phase` now (its versions and labels; older ones may linger)."""
        wanted = tuple(replace(w, gone=()) for w in expectations(phase, previous, disk))
        return assess(wanted, self.live(names, labels)).done

    def new_models_unlisted(self, names: tuple[str, ...]) -> Callable[[], str | None]:
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
            return self.not_polled(Progress(False, unpolled=unlisted), waited)

        return give_up
