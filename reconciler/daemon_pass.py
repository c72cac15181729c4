"""One daemon pass for its target (one TFS and its models.config): observe → plan → decide →
execute, returned as a `PassResult`. Retries, metrics, systemd, readiness and the pass's log
line are the loop's (`reconciler.daemon`); the pass only logs what it does on the way."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import structlog

from reconciler.backoff import Backoff
from reconciler.config_file import write_atomic
from reconciler.converge import Outcome
from reconciler.daemon_options import DaemonOptions
from reconciler.desired import DesiredState
from reconciler.desired_source import DesiredReader
from reconciler.docker_target import DockerTarget
from reconciler.errors import TransientError
from reconciler.git_source import GitError, GitSource
from reconciler.history import Record
from reconciler.observe import LiveStatus, Observed
from reconciler.outcome import Result
from reconciler.pass_result import Drift, PassKind, PassResult
from reconciler.plan import Plan, plan
from reconciler.policy import served_versions
from reconciler.problems import InputError
from reconciler.reconcile import Revision, execute, observe_for, with_signature_problems
from reconciler.reload import Reloader, ReloadMode, choose_reloader
from reconciler.settings import Settings
from reconciler.settle import Settle
from reconciler.sidecar import FlagCheck
from reconciler.tfs_config import ServingConfig, changed_models, render_config
from reconciler.tfs_rest import TfsRest
from reconciler.wait import ProgressHook

log = structlog.get_logger("reconciler.daemon")

Scope = Literal["all", "resync", "change"]

_KIND_OF: dict[str, PassKind] = {
    Result.NOOP: PassKind.IN_SYNC,
    Result.APPLIED: PassKind.APPLIED,
    Result.WRITTEN: PassKind.WRITTEN,
    Result.ROLLED_BACK: PassKind.ROLLED_BACK,
    Result.INTERRUPTED: PassKind.INTERRUPTED,
}


@dataclass
class Seen:
    """What the last passes saw, for /status (read from the endpoint's threads)."""

    desired: DesiredState | None = None
    observed: Observed | None = None
    plan: Plan | None = None
    # The desired state of the last pass that ended in sync: what readiness judges TFS
    # against, so a change that is refused, blocked or rolled back (on every pod at once, for a
    # ConfigMap) never makes a pod that serves as before unready.
    accepted: DesiredState | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Hooks:
    """What the loop is told while a pass runs."""

    drift: Callable[[Drift, Revision], None]  # at once, before any repair is logged
    applying: Callable[[Revision], None]  # an apply starts
    on_progress: ProgressHook | None = None
    interrupted: Callable[[], bool] | None = None


class PassRunner:
    """Runs passes; keeps what one pass leaves the next (the config it left in sync, the
    settle of a hand-written models.config, the resync turn, the parsed input, the reloader)."""

    def __init__(
        self,
        settle: float,
        clock: Callable[[], float],
        tfs: Callable[[Settings], TfsRest] = lambda s: TfsRest(s.rest_url, s.request_timeout),
    ) -> None:
        self.clock = clock
        self.tfs = tfs  # TFS's REST API (an in-memory TFS in tests)
        self.settle = Settle(settle)
        self.synced_target: ServingConfig | None = None  # what the last in-sync pass left
        self.seen = Seen()
        self.resync_cursor = 0
        self.reloader: Reloader | None = None
        self.reader = DesiredReader()
        self.flag_check: FlagCheck | None = None  # --sidecar: TFS's flags, read from its process

    def run(
        self,
        options: DaemonOptions,
        source: GitSource | None,
        scope: Scope,
        backoff: Backoff,
        hooks: Hooks,
    ) -> PassResult:
        """One reconcile. Whose live status it reads depends on `scope`: every model's at
        start and after SIGHUP; on a resync, the next --resync-models models in turn (all of
        them when there are fewer), so the cost of a resync does not grow with the number of
        models; on a change, only the models it touches, so a commit goes live as fast with
        a thousand models as with one."""
        started = self.clock()
        settings = options.settings
        try:
            desired, revision = self.reader.read(settings, source)
        except (InputError, GitError) as error:
            return _invalid(error, source)
        rest = self.tfs(settings)
        try:
            reloader = self._reloader_for(options)
        except TransientError as error:  # the Docker engine, for --reload restart
            return PassResult(PassKind.ERROR, message=f"{error}")
        config_invalid = False
        try:
            observed = self._observe(options, desired, rest, scope)
        except InputError as error:  # models.config does not parse: a hand edit gone wrong
            if settling := self._settling(str(error), revision):
                return settling
            config_invalid = True
            if failed := self._restore_config(options, error, revision):
                return failed
            observed = self._observe(options, desired, rest, "all")
        result = self._decide_and_execute(
            options, desired, revision, observed, rest, reloader, scope, backoff, hooks
        )
        if result.kind.in_sync:
            with self.seen.lock:
                self.seen.accepted = desired
        return replace(result, seconds=self.clock() - started, config_invalid=config_invalid)

    def _decide_and_execute(
        self,
        options: DaemonOptions,
        desired: DesiredState,
        revision: Revision,
        observed: Observed,
        rest: TfsRest,
        reloader: Reloader,
        scope: Scope,
        backoff: Backoff,
        hooks: Hooks,
    ) -> PassResult:
        observed = replace(observed, applied=self.synced_target)
        the_plan = plan(desired, observed)
        if options.verify and reloader.waits:
            the_plan = with_signature_problems(the_plan, desired, rest)
        if the_plan.changes_config and observed.config != self.synced_target:
            if settling := self._settling(observed.config, revision):
                return settling
        else:
            self.settle.known()
        self._show(desired, observed, the_plan, merge=scope != "all")
        versions = _versions(desired, observed)
        config_drift = _config_drift(the_plan, self.synced_target)
        drift = _drift(the_plan, config_drift)
        hooks.drift(drift, revision)
        seen = PassResult(PassKind.IN_SYNC, revision, drift=drift, versions=versions)
        live = observed.live
        # What was tried: the same attempt is not retried before its backoff ends, but TFS
        # answering again (after an outage) is a change worth an immediate retry.
        attempt = (the_plan.target, observed.disk, live is None or live.reachable)
        if stopped := self._stopped(options, desired, observed, the_plan, seen):
            return stopped
        left_alone: tuple[str, ...] = ()
        if not options.self_heal and (not the_plan.changes_config or config_drift):
            left_alone = drift.models
            the_plan = replace(the_plan, phases=(), drift=())  # report drift, repair nothing
        if wait := backoff.defers(attempt, self.clock()):
            return replace(seen, kind=PassKind.DEFERRED, retry_in=wait)
        hooks.applying(revision)
        outcome, record = self._execute(
            options, the_plan, observed, desired, revision, rest, reloader, hooks
        )
        return replace(
            seen,
            kind=_KIND_OF.get(outcome.result, PassKind.FAILED),  # "failed": the rollback too
            message=outcome.message,
            record=record,
            attempt=attempt,
            left_alone=left_alone,
        )

    def _stopped(
        self,
        options: DaemonOptions,
        desired: DesiredState,
        observed: Observed,
        the_plan: Plan,
        seen: PassResult,
    ) -> PassResult | None:
        """Why the pass goes no further (TFS down, a blocked plan, TFS's flags), or None."""
        live = observed.live
        if live is not None and not live.reachable and not the_plan.changes_config:
            # Nothing to write, but nothing seen either: not "in sync", not ready.
            why = live.error or f"TFS at {options.settings.rest_url} does not answer"
            return replace(seen, kind=PassKind.TFS_DOWN, message=why)
        if the_plan.blocked:
            problems = tuple(str(p) for p in the_plan.problems)
            return replace(
                seen, kind=PassKind.BLOCKED, message="; ".join(problems), problems=problems
            )
        if self.flag_check is not None and (refused := tuple(self.flag_check.problems(desired))):
            return replace(
                seen, kind=PassKind.REFUSED, message="; ".join(refused), problems=refused
            )
        return None

    def _execute(
        self,
        options: DaemonOptions,
        the_plan: Plan,
        observed: Observed,
        desired: DesiredState,
        revision: Revision,
        rest: TfsRest,
        reloader: Reloader,
        hooks: Hooks,
    ) -> tuple[Outcome, Record | None]:
        outcome, record = execute(
            the_plan,
            observed,
            desired,
            settings=options.settings,
            reloader=reloader,
            rest=rest,
            revision=revision,
            verify=options.verify,
            heal=options.self_heal,
            on_progress=hooks.on_progress,
            interrupted=hooks.interrupted,
        )
        if outcome.ok and (the_plan.phases or not the_plan.changes_config):
            self.synced_target = the_plan.target  # what models.config now says
        if outcome.result != Result.NOOP and the_plan.touched:  # show what the change made live
            after = observe_for(options.settings, desired, rest, live_models=the_plan.touched)
            self._show(None, after, None, merge=True)
        return outcome, record

    def _show(
        self, desired: DesiredState | None, observed: Observed, the_plan: Plan | None, merge: bool
    ) -> None:
        """Keep what the pass saw for /status; `merge`: with the models only read before."""
        seen = self.seen
        with seen.lock:
            shown = observed
            if merge and seen.observed is not None:  # keep what was read before
                shown = replace(observed, live=merge_live(seen.observed.live, observed.live))
            seen.observed = shown
            if desired is not None and the_plan is not None:
                seen.desired, seen.plan = desired, the_plan

    def _settling(self, content: object, revision: Revision) -> PassResult | None:
        """A SETTLING result while models.config, which the daemon did not write, has not yet
        read the same for the settle time (1 s): it may be half-written."""
        wait = self.settle.wait(content, self.clock())
        if wait <= 0:
            return None
        return PassResult(PassKind.SETTLING, revision, retry_in=wait)

    def _observe(
        self, options: DaemonOptions, desired: DesiredState, rest: TfsRest, scope: Scope
    ) -> Observed:
        settings = options.settings
        if scope == "all":
            return observe_for(settings, desired, rest)
        observed = observe_for(settings, desired, None)
        asked = set(plan(desired, observed).touched)
        if scope == "resync":
            names = {m.name for m in desired.models}
            names |= set(observed.config.names if observed.config is not None else ())
            turn, self.resync_cursor = resync_turn(names, self.resync_cursor, options.resync_models)
            asked |= turn
        if asked:
            observed = observe_for(settings, desired, rest, live_models=frozenset(asked))
        return observed

    def _restore_config(
        self, options: DaemonOptions, error: InputError, revision: Revision
    ) -> PassResult | None:
        """models.config does not parse, so TFS refuses it and keeps serving what it had. With
        self-heal, put back what the last apply left there (the config TFS serves); None when
        done. Otherwise (or when there is nothing to put back) an ERROR to retry later."""
        problems = "; ".join(str(p) for p in error.problems)
        log.error("config_invalid", problem=problems, commit=revision.commit)
        synced = self.synced_target
        failed = replace(PassResult(PassKind.ERROR, revision), config_invalid=True)
        if not options.self_heal or synced is None:
            why = "self-heal is off" if synced is not None else "no earlier apply to restore"
            return replace(failed, message=f"{problems} (left as it is: {why})")
        path = options.settings.config_path
        try:
            write_atomic(path, render_config(synced))
        except OSError as oops:
            return replace(failed, message=f"{problems}; restoring it failed: {oops}")
        log.warning("config_restored", path=str(path), commit=revision.commit)
        return None

    def _reloader_for(self, options: DaemonOptions) -> Reloader:
        if self.reloader is not None and options.reload is not ReloadMode.AUTO:
            return self.reloader
        settings = options.settings
        docker = None
        if options.container or options.container_label:
            docker = DockerTarget(options.container, options.container_label)
        self.reloader = choose_reloader(
            options.reload,
            grpc_target=settings.grpc_target,
            docker=docker,
            allow_restart=options.allow_restart,
        )
        return self.reloader


def _invalid(error: InputError | GitError, source: GitSource | None) -> PassResult:
    commit = None
    if source is not None:  # which commit was invalid
        with contextlib.suppress(GitError):
            commit = source.resolve()
    problems = getattr(error, "problems", None)
    return PassResult(
        PassKind.INVALID,
        Revision(commit),
        message=str(error),
        problems=tuple(str(p) for p in problems or (error,)),
    )


def _drift(the_plan: Plan, config_drift: list[str]) -> Drift:
    return Drift(
        tuple([f"! {n}: models.config was edited" for n in config_drift])
        + tuple(str(d) for d in the_plan.drift),
        tuple(sorted({d.model for d in the_plan.drift} | set(config_drift))),
    )


def _config_drift(the_plan: Plan, synced: ServingConfig | None) -> list[str]:
    """The models whose entry in models.config no longer says what the last in-sync pass
    left there, though the desired state still asks for it: edited by hand (or by another
    tool). Drift, not a new change."""
    if not (the_plan.changes_config and the_plan.target == synced):
        return []
    return sorted(changed_models(the_plan.current, the_plan.target) or the_plan.target.names)


def _versions(desired: DesiredState, observed: Observed) -> tuple[dict[str, int], dict[str, int]]:
    """How many versions each model should serve, and how many TFS reports available."""
    wanted = {}
    for model in desired.models:
        folder = observed.disk.model(model.name)
        wanted[model.name] = len(served_versions(model.policy, folder.numbers if folder else ()))
    live = {}
    if observed.live is not None:
        live = {m.name: len(m.available) for m in observed.live.models}
    return wanted, live


def resync_turn(names: set[str], cursor: int, count: int) -> tuple[set[str], int]:
    """The `count` models after `cursor` in name order, wrapping (all when there are fewer),
    and the cursor for the next turn: every model is read once every len/count resyncs."""
    ordered = sorted(names)
    if len(ordered) <= count:
        return set(ordered), 0
    start = cursor % len(ordered)
    return set((ordered + ordered)[start : start + count]), (start + count) % len(ordered)


def merge_live(before: LiveStatus | None, now: LiveStatus | None) -> LiveStatus | None:
    """`now`, completed with the models only `before` read (for the status document); when
    TFS did not answer now, what it said before is stale and is not shown."""
    if before is None or now is None or not now.reachable:
        return now or before
    read = {m.name for m in now.models}
    kept = tuple(m for m in before.models if m.name not in read)
    return replace(now, models=tuple(sorted(now.models + kept, key=lambda m: m.name)))
