"""`tfs-reconciler run --fleet`: the fleet's reconcile loop.

Every --resync seconds (level-triggered: each pass reads the fleet file, the desired state,
the replicas found and every replica's state again) the pass is one fleet rollout: replicas
in sync are left alone, a replica that drifted (restarted with an old file, edited by hand) or
was added is converged like any other, in waves. A rollout that halted is not tried again as
it was before its backoff is over (a change to the desired state is tried at once). /status
serves the fleet's status document, /metrics a gauge per replica and a counter per outcome.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from reconciler.backoff import Backoff
from reconciler.desired import DesiredState
from reconciler.desired_files import load_desired
from reconciler.errors import TransientError
from reconciler.fleet_file import FleetSpec, load_fleet
from reconciler.fleet_replicas import (
    Discover,
    FileFleetLog,
    LiveDriver,
    fleet_replicas,
    one_config_each,
    replica_settings,
)
from reconciler.fleet_rollout import (
    FleetOutcome,
    FleetResult,
    FleetRollout,
    ReplicaDriver,
    Survey,
    fleet_plan,
    served_everywhere,
)
from reconciler.fleet_status import fleet_status
from reconciler.http_endpoint import HttpEndpoint, parse_address
from reconciler.lock import AlreadyRunningError, acquire
from reconciler.metrics import NAMESPACE
from reconciler.problems import InputError
from reconciler.readiness import LiveReadiness, judged, replica_readiness
from reconciler.reconcile import Revision, revision_of
from reconciler.reload import ReloadMode
from reconciler.replica import Replica
from reconciler.settings import Settings
from reconciler.signals import GracefulInterrupt
from reconciler.tfs_config import render_config

log = structlog.get_logger("reconciler.fleet")

TICK = 0.2  # seconds between looks at the stop flag while waiting for the next pass


class SurveyingDriver(ReplicaDriver, Protocol):
    """A ReplicaDriver that also surveys a replica against its desired state."""

    revision: Revision

    def survey(self, replica: Replica) -> Survey: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class FleetMetrics:
    registry: CollectorRegistry
    rollouts: Counter  # by result: a bounded set
    in_sync: Gauge  # by replica: bounded by the fleet's size

    @classmethod
    def create(cls) -> FleetMetrics:
        registry = CollectorRegistry(auto_describe=True)
        rollouts = Counter(
            "fleet_rollouts",
            "Fleet passes that changed something, by result (done, partial, halted,"
            " rolled_back, rollback_failed, blocked, interrupted).",
            ["result"],
            namespace=NAMESPACE,
            registry=registry,
        )
        for result in FleetResult:
            if result is not FleetResult.NOOP:
                rollouts.labels(result=result.value)
        in_sync = Gauge(
            "fleet_replica_in_sync",
            "1 when the replica serves the desired state, 0 when not, -1 when unknown.",
            ["replica"],
            namespace=NAMESPACE,
            registry=registry,
        )
        return cls(registry, rollouts, in_sync)


@dataclass
class FleetDaemon:
    fleet_file: Path
    base: Settings
    mode: ReloadMode = ReloadMode.AUTO
    resync: float = 30.0
    retry_base: float = 2.0
    verifies: bool = True
    self_heal: bool = True
    metrics_addr: str = "127.0.0.1:9109"
    discover_for: Callable[[FleetSpec], Discover | None] = lambda spec: None
    clock: Callable[[], float] = time.monotonic
    metrics: FleetMetrics = field(default_factory=FleetMetrics.create)
    _backoff: Backoff = field(default_factory=Backoff)
    _status: dict[str, Any] = field(default_factory=lambda: {"state": "unknown", "replicas": []})
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _known: set[str] = field(default_factory=set)
    # /readyz/<replica>: each replica judged against the desired state of the last pass that
    # ended with every replica serving it (a change not yet live is not judged: a new model
    # or label would take every replica out of the balancer at once)
    _in_sync_desired: DesiredState | None = None
    _current_desired: DesiredState | None = None  # the last one read, valid
    _checks: dict[str, LiveReadiness] = field(default_factory=dict)
    _checked: tuple[Replica, ...] = ()
    _surveys: list[Survey] = field(default_factory=list)

    def replica_checks(self) -> dict[str, LiveReadiness]:
        return self._checks

    def status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._status)

    def run(self) -> int:
        endpoint = HttpEndpoint(
            parse_address(self.metrics_addr),
            self.metrics.registry,
            self.status,
            liveness_timeout=2 * self.resync + 3 * self.base.timeout + 60,
            replica_readiness=self.replica_checks,
        )
        with endpoint, GracefulInterrupt("stopping after the step in flight") as stop:
            log.info("fleet_started", fleet=str(self.fleet_file), metrics=str(endpoint.address))
            endpoint.set_ready(True)
            while not stop.requested:
                self.one_pass(lambda: stop.requested)
                endpoint.beat()
                deadline = self._backoff.wakes_before(self.clock() + self.resync, self.clock())
                while not stop.requested and self.clock() < deadline:
                    time.sleep(TICK)
            log.info("fleet_stopped")
        return 0

    def one_pass(self, interrupted: Callable[[], bool]) -> FleetOutcome | None:
        """Read everything, roll out what differs; None when nothing could be read."""
        try:
            spec = load_fleet(self.fleet_file)
            desired = load_desired(self.base.desired, self.base.serving_root)
            replicas = fleet_replicas(spec, self.discover_for(spec))
        except InputError as error:
            self._failed(str(error))
            return None
        except (TransientError, OSError) as error:  # a discovery that did not answer
            self._failed(f"{type(error).__name__}: {error}")
            return None
        self._current_desired = desired
        revision = revision_of(self.base.desired)
        driver = LiveDriver(self.base, desired, revision, self.mode, self.verifies)
        try:
            with self._locked(replicas):
                outcome = self._roll(spec, driver, replicas, interrupted)
            if outcome is not None and outcome.exit_code == 0:
                self._in_sync_desired = desired
            elif self._in_sync_desired is None:  # not yet in sync since the start
                self._in_sync_desired = served_everywhere(desired, self._surveys)
            if replicas != self._checked:
                self._checks = replica_readiness(
                    replicas,
                    lambda: judged(self._in_sync_desired, self._current_desired),
                    timeout=self.base.request_timeout,
                )
                self._checked = replicas
            self._show(fleet_status(self.base, replicas, desired), outcome)
        except (AlreadyRunningError, InputError) as error:  # a replica's models.config unreadable
            self._failed(str(error))
            return None
        except (TransientError, OSError) as error:
            self._failed(f"{type(error).__name__}: {error}")
            return None
        finally:
            driver.close()
        return outcome

    def _roll(
        self,
        spec: FleetSpec,
        driver: SurveyingDriver,
        replicas: tuple[Replica, ...],
        interrupted: Callable[[], bool],
    ) -> FleetOutcome | None:
        surveys = self._surveys = [driver.survey(r) for r in replicas]
        if not self.self_heal:  # drift is reported (status), not repaired
            for survey in surveys:
                if survey.drift and not survey.changes_config:
                    log.warning("fleet_drift", replica=survey.replica.name, drift=survey.drift)
            surveys = [replace(s, phases=None) if not s.changes_config else s for s in surveys]
        the_plan = fleet_plan(surveys, spec.rollout, driver.revision.commit)
        fingerprint = tuple(
            (s.replica.name, render_config(s.phases.cleanup))
            for s in the_plan.surveys
            if s.phases is not None
        )
        wait = self._backoff.defers(fingerprint, self.clock())
        if wait > 0:
            log.info(
                "fleet_rollout_deferred", seconds=round(wait, 1), failures=self._backoff.failures
            )
            return None
        outcome = FleetRollout(
            driver,
            FileFleetLog(self.base.state_path, self.mode.value),
            spec.rollout,
            interrupted=interrupted,
        ).run(the_plan)
        if outcome.result is not FleetResult.NOOP:
            self.metrics.rollouts.labels(result=outcome.result.value).inc()
            log.info(
                "fleet_reconciled",
                result=outcome.result.value,
                message=outcome.message,
                generation=outcome.generation,
                seconds=round(outcome.seconds, 3),
            )
        if outcome.exit_code == 0:
            self._backoff.forget()
        elif outcome.result is not FleetResult.INTERRUPTED:
            delay = self._backoff.failed(self.clock(), self.retry_base, fingerprint)
            log.warning("fleet_retry_later", seconds=round(delay, 1), result=outcome.result.value)
        return outcome

    @contextlib.contextmanager
    def _locked(self, replicas: tuple[Replica, ...]) -> Iterator[None]:
        one_config_each(self.base, replicas)
        with contextlib.ExitStack() as stack:
            for replica in replicas:
                path = replica_settings(self.base, replica).config_path
                path.parent.mkdir(parents=True, exist_ok=True)
                stack.enter_context(acquire(path, "daemon"))
            yield

    def _failed(self, error: str) -> None:
        log.error("fleet_pass_failed", error=error)
        with self._lock:
            self._status = {**self._status, "state": "unknown", "last_error": error}

    def _show(self, document: dict[str, Any], outcome: FleetOutcome | None) -> None:
        names = set()
        for replica in document["replicas"]:
            state = replica.get("state")
            value = 1.0 if state == "in_sync" else -1.0 if state == "unknown" else 0.0
            self.metrics.in_sync.labels(replica=replica["name"]).set(value)
            names.add(replica["name"])
        for gone in self._known - names:  # a replica no longer found: its series goes too
            self.metrics.in_sync.remove(gone)
        self._known = names
        last = None
        if outcome is not None:
            last = {
                "result": outcome.result.value,
                "message": outcome.message,
                "generation": outcome.generation,
                "failed": list(outcome.failed),
            }
        with self._lock:
            previous = self._status.get("last_rollout")
            self._status = {
                **document,
                "source": "daemon",
                "fleet": str(self.fleet_file.resolve()),
                "last_rollout": last or previous,
                "last_error": None,
            }
