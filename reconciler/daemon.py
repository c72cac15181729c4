"""`tfs-reconciler run`: the long-running reconcile loop.

Events (a desired-state edit, a commit, a version folder appearing) only say *when* to
reconcile; every pass reads everything again and plans from scratch, so a missed or doubled
event costs nothing. A resync timer catches drift that makes no event here.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from reconciler import sd_notify
from reconciler.convergence import Progress
from reconciler.daemon_options import DaemonOptions, check_fixed_settings
from reconciler.daemon_pass import Hooks, PassRunner, Scope
from reconciler.desired import DesiredState
from reconciler.errors import TransientError
from reconciler.git_source import GitError, GitSource, open_local
from reconciler.history import Record, last_applied, read_history
from reconciler.http_endpoint import HttpEndpoint, parse_address
from reconciler.lock import acquire
from reconciler.metrics import Metrics
from reconciler.pass_policy import PassPolicy
from reconciler.pass_result import PassKind, PassResult
from reconciler.readiness import LiveReadiness, judged
from reconciler.reconcile import Revision
from reconciler.sidecar import FlagCheck, refuse_single_file_mounts
from reconciler.signals import SignalThread
from reconciler.status import status_document
from reconciler.tfs_rest import TfsRest
from reconciler.watch import DEFAULT_IGNORE_NAMES, FILES_CHANGED, Trigger
from reconciler.webhook import PendingFetch, WebhookReceiver, read_secret, webhook_receiver

__all__ = ["Daemon", "DaemonOptions"]

log = structlog.get_logger("reconciler.daemon")

WEBHOOK = "webhook"  # the wake-up reason of a push announced by the webhook receiver


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
        self._metrics = Metrics.create()
        self._policy = PassPolicy(self._metrics, clock)
        self._memory = self._policy.memory
        self._backoff = self._policy.backoff
        self._source: GitSource | None = None
        self._runner = PassRunner(options.settle, clock)
        self._hooks = PendingFetch(lambda: self._trigger.poke(WEBHOOK) if self._trigger else None)
        self._webhook: WebhookReceiver | None = None

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        settings = self.options.settings
        config = settings.config_path
        webhook = self._webhook_receiver()  # before anything: an unusable secret stops here
        if self.options.sidecar:
            refuse_single_file_mounts(settings.desired, config)
            self._runner.flag_check = FlagCheck(config)
        # Beside the config, not in the state folder: one writer per models.config, whatever
        # --state-dir each is given.
        with acquire(config, "daemon"), self._signal_thread():
            records = self._read_records()
            self._memory.last_record = _last(records)
            # What the last apply left in models.config: from the first pass on, a file that
            # differs while the desired state still asks for that is drift, also after a restart.
            self._runner.synced_target = last_applied(records)
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
            next_resync = self._next_resync()
            sd_notify.watchdog()
            while not self._stop.is_set():
                now = self._clock()
                deadline = self._wake_at(now, next_resync, next_fetch, watchdog_every)
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
                if now >= next_resync or self._backoff.due(now):
                    break
                if self._memory.settle_at and now >= self._memory.settle_at:
                    break
                if self.options.git_remote and now >= next_fetch:
                    break

    def _wake_at(
        self, now: float, next_resync: float, next_fetch: float, watchdog_every: float | None
    ) -> float:
        """When the idle loop wakes by itself: the next resync, fetch, retry or settle, and
        soon enough to feed systemd's watchdog."""
        deadline = min(next_resync, next_fetch if self.options.git_remote else next_resync)
        deadline = self._backoff.wakes_before(deadline, now)
        if self._memory.settle_at > now:
            deadline = min(deadline, self._memory.settle_at)
        if watchdog_every:
            deadline = min(deadline, now + watchdog_every)
        return deadline

    def _next_resync(self) -> float:
        """When the loop resyncs next, counted from now by the options in force (a SIGHUP
        may have changed them)."""
        return self._clock() + self.options.resync

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

    # --- one pass, and what the loop makes of it ----------------------------------------------

    def _safe_pass(self, endpoint: HttpEndpoint, scope: Scope = "all") -> None:
        """A pass; one stopped by what is around it (a model folder, state folder or history
        it cannot use, a full disk) or by a fault of its own is reported like any failed
        pass (log, /status, metrics, STATUS) and retried with backoff: never fatal."""
        try:
            self._pass(endpoint, scope)
        except Exception as error:  # the loop outlives any one pass
            if isinstance(error, OSError | TransientError):
                log.error("environment_error", error=str(error))
                message = str(error)
            else:
                log.exception("internal_error", error=repr(error))
                message = f"internal error: {error!r}"
            self._policy.handle(PassResult(PassKind.ERROR, message=message), endpoint, self.options)

    def _pass(self, endpoint: HttpEndpoint, scope: Scope = "all") -> None:
        """One pass, and what the loop makes of its result."""
        hooks = self._pass_hooks(endpoint)
        result = self._runner.run(self.options, self._source, scope, self._backoff, hooks)
        self._policy.handle(result, endpoint, self.options)

    def _pass_hooks(self, endpoint: HttpEndpoint) -> Hooks:
        def applying(revision: Revision) -> None:
            sd_notify.status(f"reconciling {revision.commit or 'work tree'}")

        return Hooks(
            drift=self._policy.report_drift,
            applying=applying,
            on_progress=self._keep_alive(endpoint),
            interrupted=self._stop.is_set,
        )

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

    # --- inputs ------------------------------------------------------------------------------

    def _fetch(self, trigger: str = "interval") -> None:
        if self._source is None:
            return
        if trigger == WEBHOOK and self._webhook is not None:
            self._webhook.metrics.fetches.inc()
        try:
            commit = self._source.fetch()
            log.debug("fetched", remote=self.options.git_remote, commit=commit, trigger=trigger)
        except GitError as error:
            log.error("fetch_failed", remote=self.options.git_remote, error=str(error))
            self._metrics.fetch_failures.inc()
            self._memory.fetch_error = f"fetching {self.options.git_remote} failed: {error}"
        else:
            self._memory.fetch_error = None

    # --- the webhook receiver ------------------------------------------------------------------

    def _webhook_receiver(self) -> WebhookReceiver | None:
        """The receiver of --webhook-addr (None when off); WebhookSecretError (a ValueError)
        when its secret file cannot be read or is empty."""
        self._webhook = webhook_receiver(
            self.options.webhook_addr,
            self.options.webhook_secret_file,
            self._metrics.registry,
            lambda: self._source.branch if self._source is not None else None,
            self._hooks,
        )
        return self._webhook

    def _model_readiness(self) -> LiveReadiness:
        settings = self.options.settings
        seen = self._runner.seen

        def desired() -> DesiredState | None:
            with seen.lock:
                return judged(seen.accepted, seen.desired)

        return LiveReadiness(
            desired,
            lambda: TfsRest(settings.rest_url, settings.request_timeout),
            clock=self._clock,
        )

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
                check_fixed_settings(options, self.options)
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
        self._runner.reloader = None
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
        memory, seen = self._memory, self._runner.seen
        with seen.lock:
            return status_document(
                seen.desired,
                seen.observed,
                seen.plan,
                last=memory.last_record,
                last_error="; ".join(
                    e for e in (memory.last_error, memory.fetch_error, memory.watch_error) if e
                )
                or None,
                source="daemon",
                config=self.options.settings.real_config_path,
            )


def _last(records: list[Record]) -> Record | None:
    return records[-1] if records else None
