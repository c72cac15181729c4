"""`tfs-reconciler run`: the long-running reconcile loop.

Events (a desired-state edit, a commit, a version folder appearing) only say *when* to
reconcile; every pass reads everything again and plans from scratch, so a missed or doubled
event costs nothing. A resync timer catches drift that makes no event here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import structlog

from reconciler import sd_notify
from reconciler.config_file import write_atomic
from reconciler.converge import Outcome
from reconciler.convergence import Progress
from reconciler.desired import (
    DesiredState,
    check_verify_requests,
    parse_documents,
    read_documents,
)
from reconciler.docker_target import DockerError, DockerTarget
from reconciler.git_source import GitError, GitSource, Snapshot, open_local
from reconciler.history import Record, read_history
from reconciler.http_endpoint import HttpEndpoint, parse_address
from reconciler.lock import acquire
from reconciler.metrics import Metrics
from reconciler.metrics import Outcome as MetricOutcome
from reconciler.no_follow import private_dir
from reconciler.observe import LiveStatus, Observed
from reconciler.plan import Plan, plan
from reconciler.policy import served_versions
from reconciler.problems import InputError, Problem
from reconciler.readiness import LiveReadiness
from reconciler.reconcile import (
    Revision,
    execute,
    observe_for,
    revision_of,
    with_signature_problems,
)
from reconciler.reload import Reloader, ReloadMode, choose_reloader
from reconciler.settings import Settings
from reconciler.settle import Settle
from reconciler.sidecar import FlagCheck, refuse_single_file_mounts
from reconciler.signals import SignalThread
from reconciler.status import status_document
from reconciler.tfs_config import ServingConfig, changed_models, parse_config, render_config
from reconciler.tfs_rest import TfsRest
from reconciler.watch import DEFAULT_IGNORE_NAMES, FILES_CHANGED, Trigger
from reconciler.webhook import (
    PendingFetch,
    WebhookMetrics,
    WebhookReceiver,
    WebhookSecretError,
    read_secret,
)

log = structlog.get_logger("reconciler.daemon")

MAX_BACKOFF = 300.0

# How systemd's STATUS line names a failed pass's outcome (the log and metric say the word).
_STATUS_SAYS = {"error": "error", "invalid": "invalid", "rolled_back": "rolled back"}

Scope = Literal["all", "resync", "change"]

WEBHOOK = "webhook"  # the wake-up reason of a push announced by the webhook receiver


@dataclass(frozen=True)
class DaemonOptions:
    settings: Settings
    reload: ReloadMode = ReloadMode.AUTO
    resync: float = 30.0
    resync_models: int = 100
    self_heal: bool = True
    git: bool = False
    git_branch: str | None = None
    git_remote: str | None = None
    git_interval: float = 60.0
    metrics_addr: str = "127.0.0.1:9109"
    verify: bool = True
    container: str | None = None
    container_label: str | None = None
    allow_restart: bool = False
    debounce: float = 0.05
    retry_base: float = 2.0
    webhook_addr: str | None = None
    webhook_secret_file: str | None = None
    settle: float = 1.0  # seconds a models.config the daemon did not write must read the same
    sidecar: bool = False  # in a Kubernetes pod beside TFS: see reconciler.sidecar


@dataclass
class _Memory:
    """What the loop remembers between passes (only to report and to back off)."""

    desired: DesiredState | None = None
    observed: Observed | None = None
    plan: Plan | None = None
    last_error: str | None = None
    fetch_error: str | None = None  # why the last fetch of --git-remote failed
    watch_error: str | None = None  # why file events are not watched
    last_record: Record | None = None
    failures: int = 0
    retry_at: float = 0.0
    settle_at: float = 0.0  # a models.config someone else wrote is read again then
    failed_target: Any = None  # the (target, disk, TFS answered) that failed: not retried as is
    synced_target: ServingConfig | None = None  # what the last in-sync pass left in the file
    first_done: bool = False
    applied_last: bool = False  # the last pass that ended in sync changed something
    resync_cursor: int = 0
    drift_seen: list[str] = field(default_factory=list)  # what the last pass found
    lock: threading.Lock = field(default_factory=threading.Lock)


class Daemon:
    def __init__(
        self,
        options: DaemonOptions,
        reread_options: Callable[[], DaemonOptions] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self._reread = reread_options
        self._clock = clock
        self._stop = threading.Event()
        self._hup = threading.Event()
        self._trigger: Trigger | None = None
        self._memory = _Memory()
        self._metrics = Metrics.create()
        self._reloader: Reloader | None = None
        self._source: GitSource | None = None
        self._parsed: tuple[object, DesiredState] | None = None
        self._hooks = PendingFetch(lambda: self._trigger.poke(WEBHOOK) if self._trigger else None)
        self._webhook: WebhookReceiver | None = None
        self._webhook_metrics: WebhookMetrics | None = None
        self._settle = Settle(options.settle)
        self._flag_check: FlagCheck | None = None

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        settings = self.options.settings
        config = settings.config_path
        webhook = self._webhook_receiver()  # before anything: an unusable secret stops here
        if self.options.sidecar:
            refuse_single_file_mounts(settings.desired, config)
            self._flag_check = FlagCheck(config)
        # Beside the config, not in the state folder: one writer per models.config, whatever
        # --state-dir each is given.
        with acquire(config, "daemon"), self._signal_thread():
            records = self._read_records()
            self._memory.last_record = _last(records)
            # What the last apply left in models.config: from the first pass on, a file that
            # differs while the desired state still asks for that is drift, also after a restart.
            self._memory.synced_target = _last_applied(records)
            endpoint = HttpEndpoint(
                parse_address(self.options.metrics_addr),
                self._metrics.registry,
                self.status,
                # /healthz fails when the loop has not come round for this long.
                liveness_timeout=2 * self.options.resync + settings.timeout + 60,
                readiness=self._model_readiness() if self.options.sidecar else None,
            )
            with endpoint, webhook or contextlib.nullcontext():
                log.info(
                    "started",
                    metrics=str(endpoint.address),
                    reload=self.options.reload.value,
                    git=self.options.git,
                    branch=self.options.git_branch,
                    remote=self.options.git_remote,
                    desired=str(settings.desired),
                )
                try:
                    self._loop(endpoint)
                finally:
                    if self._trigger is not None:
                        self._trigger.stop()
                    sd_notify.stopping()
        log.info("stopped")
        return 0

    def stop(self) -> None:
        self._stop.set()
        if self._trigger is not None:
            self._trigger.poke("stop")

    def _loop(self, endpoint: HttpEndpoint) -> None:
        watchdog_every = sd_notify.watchdog_interval()
        next_resync = 0.0
        next_fetch = 0.0
        self._trigger = self._start_trigger()
        scope: Scope = "all"
        while not self._stop.is_set():
            now = self._clock()
            if self._hup.is_set():
                self._hup.clear()
                self._reload_settings()
                scope = "all"
            hooked = self._hooks.take()
            if self.options.git_remote and (hooked or now >= next_fetch):
                self._fetch(WEBHOOK if hooked else "interval")
                next_fetch = now + self.options.git_interval
            self._safe_pass(endpoint, scope)
            scope = "resync"
            next_resync = self._clock() + self.options.resync
            sd_notify.watchdog()
            while not self._stop.is_set():
                now = self._clock()
                deadline = min(next_resync, next_fetch if self.options.git_remote else next_resync)
                if self._memory.retry_at > now:
                    deadline = min(deadline, self._memory.retry_at)
                if self._memory.settle_at > now:
                    deadline = min(deadline, self._memory.settle_at)
                if watchdog_every:
                    deadline = min(deadline, now + watchdog_every)
                wake = self._trigger.wait(timeout=max(0.0, deadline - now))
                endpoint.beat()
                if self._webhook is not None:
                    self._webhook.beat()
                sd_notify.watchdog()
                if wake is not None:
                    log.debug("woken", reason=wake.reason, events=wake.events, path=wake.first_path)
                    scope = "change" if wake.reason in (FILES_CHANGED, WEBHOOK) else "resync"
                    break
                now = self._clock()
                if now >= next_resync or (self._memory.retry_at and now >= self._memory.retry_at):
                    break
                if self._memory.settle_at and now >= self._memory.settle_at:
                    break
                if self.options.git_remote and now >= next_fetch:
                    break

    def _start_trigger(self) -> Trigger:
        """The file watcher; when the system refuses it (inotify watches or instances used
        up, a folder it may not read), the daemon says so and re-checks every --resync
        seconds instead of stopping."""
        trigger = self._make_trigger()
        try:
            started = trigger.start()
        except OSError as error:
            log.error("watch_failed", error=str(error))
            self._memory.watch_error = (
                f"cannot watch for changes ({error}): re-checking every {self.options.resync:g} s"
            )
            return Trigger([], debounce=self.options.debounce).start()
        self._memory.watch_error = None
        return started

    def _make_trigger(self) -> Trigger:
        settings = self.options.settings
        paths = [settings.models_dir]
        if self._source is None and self.options.git:
            self._source = open_local(
                settings.desired, self.options.git_branch, self.options.git_remote
            )
        if self._source is not None:
            paths += list(self._source.ref_files())
        else:
            paths.append(settings.desired)
        if settings.config_path.parent.resolve() != settings.models_dir.resolve():
            paths.append(settings.config_path)
        return Trigger(
            paths,
            ignore=[settings.state_path],
            ignore_names=(*DEFAULT_IGNORE_NAMES, ".*.lock"),
            debounce=self.options.debounce,
        )

    # --- one pass --------------------------------------------------------------------------

    def _safe_pass(self, endpoint: HttpEndpoint, scope: Scope = "all") -> None:
        """A pass; one stopped by what is around it (a model folder, state folder or history
        it cannot use, a full disk) or by a fault of its own is reported like any failed
        pass (log, /status, metrics, STATUS) and retried with backoff: never fatal."""
        try:
            self._pass(endpoint, scope)
        except Exception as error:  # the loop outlives any one pass
            if isinstance(error, OSError):
                log.error("environment_error", error=str(error))
                message = str(error)
            else:
                log.exception("internal_error", error=repr(error))
                message = f"internal error: {error!r}"
            self._error(message)
            self._after_first(endpoint)

    def _read_records(self) -> list[Record]:
        """The history at start; one it cannot read is reported, and the daemon runs on."""
        try:
            return read_history(self.options.settings.state_path)
        except OSError as error:
            message = f"cannot read the history: {error}"
            log.error("environment_error", error=message)
            self._memory.last_error = message
            sd_notify.status(f"error: {message}"[:200])
            return []

    def _pass(self, endpoint: HttpEndpoint, scope: Scope = "all") -> None:
        """One reconcile. Whose live status it reads depends on `scope`: every model's at
        start and after SIGHUP; on a resync, the next --resync-models models in turn (all of
        them when there are fewer), so the cost of a resync does not grow with the number of
        models; on a change, only the models it touches, so a commit goes live as fast with
        a thousand models as with one."""
        started = self._clock()
        settings = self.options.settings
        memory = self._memory
        memory.settle_at = 0.0
        try:
            desired, revision = self._read_desired()
        except (InputError, GitError) as error:
            self._invalid(error)
            self._after_first(endpoint)
            return
        rest = TfsRest(settings.rest_url, settings.request_timeout)
        try:
            reloader = self._reloader_for_pass()
        except DockerError as error:
            self._error(f"{error}")
            self._after_first(endpoint)
            return
        try:
            observed = self._observe(desired, rest, scope)
        except InputError as error:  # models.config does not parse: a hand edit gone wrong
            if self._settling(str(error), revision):
                return
            if not self._restore_config(error, revision):
                self._after_first(endpoint)
                return
            observed = self._observe(desired, rest, "all")
        observed = replace(observed, applied=memory.synced_target)
        the_plan = plan(desired, observed)
        if self.options.verify and reloader.waits:
            the_plan = with_signature_problems(the_plan, desired, rest)
        if the_plan.changes_config and observed.config != memory.synced_target:
            if self._settling(observed.config, revision):
                return
        else:
            self._settle.known()
        with memory.lock:
            shown = observed
            if scope != "all" and memory.observed is not None:  # keep what was read before
                shown = replace(observed, live=_merge(memory.observed.live, observed.live))
            memory.desired, memory.observed, memory.plan = desired, shown, the_plan
        self._export_versions(desired, observed, the_plan)
        # models.config no longer says what the last in-sync pass left there, though the desired
        # state still asks for it: edited by hand (or by another tool). Drift, not a new change.
        config_drift = sorted(
            changed_models(the_plan.current, the_plan.target) or the_plan.target.names
            if the_plan.changes_config and the_plan.target == memory.synced_target
            else ()
        )
        found = [f"! {name}: models.config was edited" for name in config_drift]
        found += [str(d) for d in the_plan.drift]
        if found:
            # Left alone (--no-self-heal), the same drift is seen at every resync: warned
            # about and counted when it appears or changes, not each time.
            again = found == memory.drift_seen
            (log.debug if again else log.warning)("drift", commit=revision.commit, drift=found)
            if not again:
                self._metrics.record_drift(
                    sorted({d.model for d in the_plan.drift} | set(config_drift))
                )
        memory.drift_seen = found
        live = observed.live
        # What was tried: the same attempt is not retried before its backoff ends, but TFS
        # answering again (after an outage) is a change worth an immediate retry.
        attempt = (the_plan.target, observed.disk, live is None or live.reachable)
        if live is not None and not live.reachable and not the_plan.changes_config:
            # Nothing to write, but nothing seen either: not "in sync", not ready.
            self._error(
                live.error or f"TFS at {settings.rest_url} does not answer",
                commit=revision.commit,
            )
            self._after_first(endpoint)
            return
        if the_plan.blocked:
            for problem in the_plan.problems:
                log.error("blocked", problem=str(problem), commit=revision.commit)
            self._error(
                "; ".join(str(p) for p in the_plan.problems),
                outcome="invalid",
                commit=revision.commit,
            )
            self._after_first(endpoint)
            return
        if self._flag_check is not None and (refused := self._flag_check.problems(desired)):
            for why in refused:
                log.error("refused", problem=why, commit=revision.commit)
            self._error("; ".join(refused), outcome="invalid", commit=revision.commit)
            self._after_first(endpoint)
            return
        left_alone: list[str] = []
        if not self.options.self_heal and (not the_plan.changes_config or config_drift):
            left_alone = sorted({d.model for d in the_plan.drift} | set(config_drift))
            the_plan = replace(the_plan, phases=(), drift=())  # report drift, repair nothing
        if attempt == memory.failed_target and self._clock() < memory.retry_at:
            log.info(
                "waiting_for_change",
                commit=revision.commit,
                retry_in=round(memory.retry_at - self._clock(), 1),
            )
            return
        sd_notify.status(f"reconciling {revision.commit or 'work tree'}")
        outcome, record = execute(
            the_plan,
            observed,
            desired,
            settings=settings,
            reloader=reloader,
            rest=rest,
            revision=revision,
            verify=self.options.verify,
            heal=self.options.self_heal,
            on_progress=self._keep_alive(endpoint),
            interrupted=self._stop.is_set,
        )
        if outcome.ok and (the_plan.phases or not the_plan.changes_config):
            memory.synced_target = the_plan.target  # what models.config now says
        if outcome.result != "noop" and the_plan.touched:  # show what the change made live
            after = observe_for(settings, desired, rest, live_models=the_plan.touched)
            with memory.lock:
                before = memory.observed.live if memory.observed is not None else None
                memory.observed = replace(after, live=_merge(before, after.live))
        self._finish(outcome, record, revision, attempt, started, endpoint, left_alone)

    def _settling(self, content: object, revision: Revision) -> bool:
        """True when models.config, which the daemon did not write, has not yet read the same
        for the settle time (1 s): it may be half-written, so the pass stops and comes back."""
        wait = self._settle.wait(content, self._clock())
        if wait <= 0:
            return False
        self._memory.settle_at = self._clock() + wait
        log.debug("config_settling", retry_in=round(wait, 3), commit=revision.commit)
        return True

    def _observe(self, desired: DesiredState, rest: TfsRest, scope: Scope) -> Observed:
        settings = self.options.settings
        if scope == "all":
            return observe_for(settings, desired, rest)
        observed = observe_for(settings, desired, None)
        asked = set(plan(desired, observed).touched)
        if scope == "resync":
            asked |= self._resync_turn(desired, observed)
        if asked:
            observed = observe_for(settings, desired, rest, live_models=frozenset(asked))
        return observed

    def _restore_config(self, error: InputError, revision: Revision) -> bool:
        """models.config does not parse, so TFS refuses it and keeps serving what it had. With
        self-heal, put back what the last apply left there (the config TFS serves); True when
        done. Otherwise (or when there is nothing to put back) report it and retry later."""
        problems = "; ".join(str(p) for p in error.problems)
        log.error("config_invalid", problem=problems, commit=revision.commit)
        self._metrics.record_drift(["models.config"])
        synced = self._memory.synced_target
        if not self.options.self_heal or synced is None:
            why = "self-heal is off" if synced is not None else "no earlier apply to restore"
            self._error(f"{problems} (left as it is: {why})", commit=revision.commit)
            return False
        path = self.options.settings.config_path
        try:
            write_atomic(path, render_config(synced))
        except OSError as failed:
            self._error(f"{problems}; restoring it failed: {failed}", commit=revision.commit)
            return False
        log.warning("config_restored", path=str(path), commit=revision.commit)
        return True

    def _resync_turn(self, desired: DesiredState, observed: Observed) -> set[str]:
        names = {m.name for m in desired.models}
        names |= set(observed.config.names if observed.config is not None else ())
        turn, self._memory.resync_cursor = resync_turn(
            names, self._memory.resync_cursor, self.options.resync_models
        )
        return turn

    def _keep_alive(self, endpoint: HttpEndpoint) -> Callable[[Progress, float], None]:
        """While an apply waits for TFS (a load may outlast WatchdogSec), the loop is not
        hung: keep systemd's watchdog and /healthz fed from the converger's progress."""
        every = sd_notify.watchdog_interval()
        last = self._clock()

        def on_progress(_progress: Progress, _elapsed: float) -> None:
            nonlocal last
            endpoint.beat()
            if every is not None and self._clock() - last >= every / 2:
                last = self._clock()
                sd_notify.watchdog()

        return on_progress

    def _finish(
        self,
        outcome: Outcome,
        record: Record | None,
        revision: Revision,
        attempt: Any,
        started: float,
        endpoint: HttpEndpoint,
        left_alone: list[str],
    ) -> None:
        """`left_alone`: the drifted models not repaired (--no-self-heal)."""
        memory = self._memory
        seconds = self._clock() - started
        if record is not None:
            memory.last_record = record
        if outcome.ok:
            memory.failures, memory.retry_at, memory.failed_target = 0, 0.0, None
            memory.last_error = None
            kind: MetricOutcome = "written" if outcome.result == "written" else "applied"
            if outcome.result == "noop":
                kind = "noop"
            self._metrics.record_reconcile(
                kind,
                finished_at=time.time(),
                convergence_seconds=None if kind == "noop" else seconds,
            )
            if kind != "noop" and revision.commit:
                self._metrics.set_applied_commit(revision.commit)
            # The pass an apply's own write of models.config wakes finds nothing to do: it
            # says nothing new.
            said = log.debug if outcome.result == "noop" and memory.applied_last else log.info
            memory.applied_last = outcome.result != "noop"
            said(
                "reconciled",
                outcome=outcome.result,
                commit=revision.commit,
                seconds=round(seconds, 3),
            )
            at = revision.commit or "work tree"
            state = f"in sync at {at}"
            if left_alone:
                state = f"drift left alone (self-heal off) in {', '.join(left_alone)} at {at}"
            if memory.watch_error:
                state += f"; {memory.watch_error}"
            sd_notify.status(state)
            # Ready after the first success, also when earlier passes failed (READY=1 was
            # then already sent by _after_first; /readyz waited for this).
            endpoint.set_ready()
            if not memory.first_done:
                memory.first_done = True
                sd_notify.ready(state)
            return
        if outcome.result == "interrupted":  # stopping: the next start picks it up from here
            log.info("stopped_between_phases", message=outcome.message, commit=revision.commit)
            return
        memory.failed_target = attempt
        self._error(
            outcome.message,
            outcome="rolled_back" if outcome.result == "rolled_back" else "error",
            commit=revision.commit,
            failed_apply=True,
        )
        self._after_first(endpoint)

    def _after_first(self, endpoint: HttpEndpoint) -> None:
        """After the first pass, systemd hears READY even when it failed: the daemon runs and
        keeps retrying; /readyz stays 503 until a pass succeeds."""
        if not self._memory.first_done:
            self._memory.first_done = True
            sd_notify.ready(f"started; last error: {self._memory.last_error}")

    def _invalid(self, error: Exception) -> None:
        commit = None
        if self._source is not None:  # which commit was invalid
            with contextlib.suppress(GitError):
                commit = self._source.resolve()
        problems = getattr(error, "problems", None)
        for problem in problems or (error,):
            log.error("invalid_desired_state", problem=str(problem), commit=commit)
        self._error(str(error), outcome="invalid", commit=commit)

    def _error(
        self,
        message: str,
        outcome: MetricOutcome = "error",
        commit: str | None = None,
        failed_apply: bool = False,
    ) -> None:
        """Record a failed pass. The next pass comes after the backoff, or at the next resync
        if sooner; only a failed apply waits out its whole backoff before it is tried again."""
        memory = self._memory
        memory.last_error = message
        memory.failures += 1
        memory.applied_last = False
        delay = min(MAX_BACKOFF, self.options.retry_base * 2 ** (memory.failures - 1))
        memory.retry_at = self._clock() + delay
        retry_in = delay if failed_apply else min(delay, self.options.resync)
        self._metrics.record_reconcile(outcome, finished_at=time.time())
        log.error(
            "reconcile_failed",
            outcome=outcome,
            error=message,
            commit=commit,
            retry_in=round(retry_in, 1),
        )
        says = _STATUS_SAYS.get(outcome, outcome)
        sd_notify.status(f"{says}, retrying in {retry_in:.0f} s: {message[:200]}")

    # --- inputs ------------------------------------------------------------------------------

    def _read_desired(self) -> tuple[DesiredState, Revision]:
        settings = self.options.settings
        if self._source is None:
            documents = read_documents(settings.desired)
            state = self._parse((settings.serving_root, tuple(documents)), documents)
            check_verify_requests(state, settings.desired)
            return state, revision_of(settings.desired)
        commit = self._source.resolve()
        key = (settings.serving_root, commit)
        if self._parsed is not None and self._parsed[0] == key:
            check_verify_requests(self._parsed[1])
            return self._parsed[1], Revision(commit, False)
        snapshot = self._source.snapshot(commit)
        documents = [(p, b) for p, b in snapshot.files if p.endswith((".yaml", ".yml"))]
        if not documents:
            raise GitError(f"commit {snapshot.commit[:12]} has no *.yaml under {snapshot.path}")
        parsed = self._parse(key, documents)
        self._parsed = None  # kept only once its verify requests are the committed ones
        state = self._committed_verify_requests(parsed, snapshot)
        self._parsed = (key, state)
        check_verify_requests(state)
        return state, Revision(snapshot.commit, False)

    def _committed_verify_requests(self, state: DesiredState, snapshot: Snapshot) -> DesiredState:
        """Point each verify request at the bytes committed with the desired state, not at the
        work tree (where an uncommitted edit would count, and a --git-remote mirror has none):
        written once, by content hash, under the state folder."""
        files = dict(snapshot.files)
        folder = self.options.settings.state_path / "verify-requests"
        models = []
        for model in state.models:
            if model.verify_request is None:
                models.append(model)
                continue
            body = files.get(posixpath.normpath(model.verify_request))
            if body is None:
                where = snapshot.path or "the repository"
                raise InputError(
                    [
                        Problem(
                            model.locate("verify.request"),
                            f"models.{model.name}.verify.request",
                            f"{model.verify_request} is not committed under {where} in "
                            f"{snapshot.commit[:12]}",
                        )
                    ]
                )
            target = folder / f"{hashlib.sha256(body).hexdigest()[:32]}.json"
            if not target.exists():
                private_dir(private_dir(self.options.settings.state_path) / folder.name)
                partial = target.with_suffix(".tmp")
                partial.write_bytes(body)
                os.replace(partial, target)
            models.append(replace(model, verify_request=str(target)))
        return replace(state, models=tuple(models))

    def _parse(self, key: object, documents: list[tuple[str, bytes]]) -> DesiredState:
        """Validate `documents`, or reuse the state parsed from the very same input: parsing
        is the costliest part of a pass with many models, and the input rarely changes."""
        if self._parsed is not None and self._parsed[0] == key:
            return self._parsed[1]
        state = parse_documents(documents, self.options.settings.serving_root)
        self._parsed = (key, state)
        return state

    def _fetch(self, trigger: str = "interval") -> None:
        if self._source is None:
            return
        if trigger == WEBHOOK and self._webhook_metrics is not None:
            self._webhook_metrics.fetches.inc()
        try:
            commit = self._source.fetch()
            log.debug("fetched", remote=self.options.git_remote, commit=commit, trigger=trigger)
        except GitError as error:
            log.error("fetch_failed", remote=self.options.git_remote, error=str(error))
            self._metrics.fetch_failures.inc()
            self._memory.fetch_error = f"fetching {self.options.git_remote} failed: {error}"
        else:
            self._memory.fetch_error = None

    def _reloader_for_pass(self) -> Reloader:
        if self._reloader is not None and self.options.reload is not ReloadMode.AUTO:
            return self._reloader
        settings = self.options.settings
        docker = None
        if self.options.container or self.options.container_label:
            docker = DockerTarget(self.options.container, self.options.container_label)
        self._reloader = choose_reloader(
            self.options.reload,
            grpc_target=settings.grpc_target,
            docker=docker,
            allow_restart=self.options.allow_restart,
        )
        return self._reloader

    def _export_versions(self, desired: DesiredState, observed: Observed, the_plan: Plan) -> None:
        wanted = {}
        for model in desired.models:
            folder = observed.disk.model(model.name)

            wanted[model.name] = len(
                served_versions(model.policy, folder.numbers if folder else ())
            )
        live = {}
        if observed.live is not None:
            live = {m.name: len(m.available) for m in observed.live.models}
        self._metrics.set_versions(wanted, live)

    # --- the webhook receiver ------------------------------------------------------------------

    def _webhook_receiver(self) -> WebhookReceiver | None:
        """The receiver of --webhook-addr (None when off); WebhookSecretError (a ValueError)
        when its secret file cannot be read or is empty."""
        options = self.options
        if not options.webhook_addr:
            return None
        if not options.webhook_secret_file:
            raise WebhookSecretError("--webhook-addr needs --webhook-secret-file")
        secret = read_secret(options.webhook_secret_file)
        metrics = self._webhook_metrics = WebhookMetrics.create(self._metrics.registry)
        self._webhook = WebhookReceiver(
            parse_address(options.webhook_addr),
            secret,
            lambda: self._source.branch if self._source is not None else None,
            self._hooks,
            metrics,
        )
        return self._webhook

    def _model_readiness(self) -> LiveReadiness:
        settings = self.options.settings

        def desired() -> DesiredState | None:
            with self._memory.lock:
                return self._memory.desired

        return LiveReadiness(desired, lambda: TfsRest(settings.rest_url, settings.request_timeout))

    # --- signals and status -------------------------------------------------------------------

    def _signal_thread(self) -> SignalThread:
        def on_term(signum: signal.Signals) -> None:
            log.info("signal", signal=signum.name)
            self.stop()

        def on_hup(signum: signal.Signals) -> None:
            log.info("signal", signal=signum.name)
            self._hup.set()
            if self._trigger is not None:
                self._trigger.poke("sighup")

        return SignalThread(
            {signal.SIGTERM: on_term, signal.SIGINT: on_term, signal.SIGHUP: on_hup}
        )

    def _reload_settings(self) -> None:
        """Re-read the settings; when they are unusable (a bad value, a branch or folder git
        rejects), log it and go on with the old ones: a typo never stops the daemon."""
        sd_notify.reloading()
        options, source = self.options, self._source
        try:
            if self._reread is not None:
                self.options = self._reread()
                _check_fixed_settings(options, self.options)
            self._source = None
            secret = None
            if self._webhook is not None and self.options.webhook_secret_file:
                secret = read_secret(self.options.webhook_secret_file)
            trigger = self._make_trigger().start()
        except (ValueError, OSError, GitError) as error:
            self.options, self._source = options, source
            log.error("settings_reload_failed", error=str(error))
            sd_notify.ready(f"settings not reloaded: {error}")
            return
        self._reloader = None
        if self._webhook is not None and secret is not None:
            self._webhook.set_secret(secret)
        if self._trigger is not None:
            self._trigger.stop()
        self._trigger = trigger
        log.info(
            "settings_reloaded",
            reload=self.options.reload.value,
            git=self.options.git,
            branch=self.options.git_branch,
            remote=self.options.git_remote,
        )
        sd_notify.ready("settings reloaded")

    def status(self) -> dict[str, Any]:
        memory = self._memory
        with memory.lock:
            return status_document(
                memory.desired,
                memory.observed,
                memory.plan,
                last=memory.last_record,
                last_error="; ".join(
                    e for e in (memory.last_error, memory.fetch_error, memory.watch_error) if e
                )
                or None,
                source="daemon",
                config=self.options.settings.real_config_path,
            )


def _check_fixed_settings(before: DaemonOptions, after: DaemonOptions) -> None:
    """ValueError when a reload would change what only a restart can: the models.config the
    daemon holds the lock of (and keeps its history beside), and the endpoint it listens on."""

    def fixed(o: DaemonOptions) -> dict[str, str]:
        return {
            "models.config": o.settings.real_config_path,
            "state folder": os.path.realpath(o.settings.state_path),
            "metrics address": o.metrics_addr,
            "webhook address": o.webhook_addr or "off",
        }

    old, new = fixed(before), fixed(after)
    changed = [name for name in old if old[name] != new[name]]
    if changed:
        raise ValueError(f"the {' and '.join(changed)} can only change with a restart")


def resync_turn(names: set[str], cursor: int, count: int) -> tuple[set[str], int]:
    """The `count` models after `cursor` in name order, wrapping (all when there are fewer),
    and the cursor for the next turn: every model is read once every len/count resyncs."""
    ordered = sorted(names)
    if len(ordered) <= count:
        return set(ordered), 0
    start = cursor % len(ordered)
    return set((ordered + ordered)[start : start + count]), (start + count) % len(ordered)


def _merge(before: LiveStatus | None, now: LiveStatus | None) -> LiveStatus | None:
    """`now`, completed with the models only `before` read (for the status document); when
    TFS did not answer now, what it said before is stale and is not shown."""
    if before is None or now is None or not now.reachable:
        return now or before
    read = {m.name for m in now.models}
    kept = tuple(m for m in before.models if m.name not in read)
    return replace(now, models=tuple(sorted(now.models + kept, key=lambda m: m.name)))


def _last(records: list[Record]) -> Record | None:
    return records[-1] if records else None


def _last_applied(records: list[Record]) -> ServingConfig | None:
    """The config the last successful apply left in models.config, if it still parses."""
    for record in reversed(records):
        if record.outcome in ("applied", "written") and record.config is not None:
            try:
                return parse_config(record.config, f"history record {record.id}")
            except InputError:
                return None
    return None
