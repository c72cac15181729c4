"""The fleet's imperative shell: each replica as a single TFS target (its own settings, history
and last-known-good under <state-dir>/replicas/<name>/), converged by `reconcile.execute`; the
fleet's own history under <state-dir>/fleet/.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.config_file import read_text, write_atomic
from reconciler.converge import Outcome
from reconciler.desired import DesiredState
from reconciler.errors import ReconcilerError
from reconciler.fleet_file import FleetSpec
from reconciler.fleet_rollout import (
    FleetOutcome,
    FleetPlan,
    Phase,
    Survey,
    serving,
    survey_of,
)
from reconciler.history import STARTED, STARTED_MESSAGE, Record, append_record, read_history
from reconciler.observe import Observed, read_config
from reconciler.plan import plan_config
from reconciler.problems import InputError, Location, Problem
from reconciler.reconcile import Revision, execute, observe_for
from reconciler.reload import GrpcReloader, NoReload, PollReloader, Reloader, ReloadMode
from reconciler.replica import Replica
from reconciler.settings import Settings
from reconciler.tfs_config import ServingConfig, parse_config, render_config
from reconciler.tfs_grpc import TfsGrpc
from reconciler.tfs_rest import TfsRest
from reconciler.verify import verify_version

REPLICAS_DIR = "replicas"
FLEET_DIR = "fleet"
SERVING_FILE = "serving.json"  # which rollout (generation) and phase a replica last served

Discover = Callable[[], Sequence[Replica]]
"""Finds replicas (Docker containers by label, DNS records): `fleet_discovery`'s functions,
bound to their arguments."""


def replica_home(state_dir: Path, name: str) -> Path:
    return state_dir / REPLICAS_DIR / name


def one_config_each(base: Settings, replicas: Sequence[Replica]) -> None:
    """Refuse two replicas whose models.config is one file (a link, a shared bind mount):
    each replica's file holds what that replica serves at each moment, and the second lock
    on it would name this very process as another tfs-reconciler."""
    owners: dict[str, str] = {}
    for replica in replicas:
        real = os.path.realpath(replica_settings(base, replica).config_path)
        owner = owners.setdefault(real, replica.name)
        if owner != replica.name:
            why = (
                f"replicas {owner} and {replica.name} have one models.config ({real}, through"
                " a link or a shared mount): each replica's file holds what that replica"
                " serves at each moment"
            )
            raise InputError([Problem(Location(real), "", why)])


def replica_settings(base: Settings, replica: Replica) -> Settings:
    """`base` for one replica: its REST and gRPC, its models.config (or one kept in its
    folder under the state dir), its model folders (or --models-dir), its state folder."""
    home = replica_home(base.state_path, replica.name)
    return replace(
        base,
        models_dir=replica.models_dir or base.models_dir,
        config=replica.config or home / "models.config",
        rest_url=replica.rest,
        grpc_target=replica.grpc or "",
        state_dir=home,
    )


def fleet_replicas(spec: FleetSpec, discover: Discover | None) -> tuple[Replica, ...]:
    """The replicas in rollout order: those listed, in the file's order, then those found
    and not listed, by name."""
    listed = {r.name for r in spec.replicas}
    found = sorted((r for r in (discover() if discover else ()) if r.name not in listed), key=_name)
    return (*spec.replicas, *found)


def _name(replica: Replica) -> str:
    return replica.name


def digest(text: str | bytes | None) -> str | None:
    """A short digest of a models.config (what `status --fleet` compares)."""
    if text is None:
        return None
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(raw).hexdigest()[:12]


FLIP_GATE_SECONDS = 5.0
"""How long a replica ready to flip waits for the others to be ready too (their file written,
their history's write-ahead record made), so that all pushes leave at once: the time the
replicas disagree on a label is then one push long, not one whole converge long."""


@dataclass
class Gate:
    """Holds each of `names`, at its push, until all are there (or `timeout` passed)."""

    names: set[str]
    timeout: float = FLIP_GATE_SECONDS
    _through: set[str] = field(default_factory=set)
    _ready: threading.Condition = field(default_factory=threading.Condition)

    def arrive(self, name: str, wait: bool = True) -> None:
        """`name` is ready; wait for the rest (not when `wait` is false: it leaves)."""
        with self._ready:
            if name in self._through:
                return
            self._through.add(name)
            self.names.discard(name)
            if not self.names:
                self._ready.notify_all()
            elif wait:
                self._ready.wait_for(lambda: not self.names, self.timeout)


@dataclass
class GatedReloader:
    """A reloader whose first push waits at a gate."""

    inner: Reloader
    gate: Gate
    name: str
    mode: ReloadMode = field(init=False)
    waits: bool = field(init=False)
    phased: bool = field(init=False)

    def __post_init__(self) -> None:
        self.mode, self.waits, self.phased = self.inner.mode, self.inner.waits, self.inner.phased

    def check(self, target: ServingConfig) -> None:
        self.inner.check(target)

    def reload(self, config: ServingConfig, timeout: float | None = None) -> None:
        if isinstance(self.inner, GrpcReloader):  # built and connected before the gate
            self.inner.prepare(config)
        self.gate.arrive(self.name)
        self.inner.reload(config, timeout)


@dataclass
class LiveDriver:
    """Replicas as real TFS: REST for status, gRPC pushes (or their own poll of their file)."""

    base: Settings
    desired: DesiredState
    revision: Revision = field(default_factory=Revision)
    mode: ReloadMode = ReloadMode.AUTO
    verifies: bool = True  # --no-verify: the desired state's verify requests are not sent
    _clients: dict[str, TfsGrpc] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _gate: Gate | None = None

    def together(self, names: Sequence[str]) -> None:
        """The next converge of each of `names` pushes at the same moment as the others'."""
        self._gate = Gate(set(names)) if names else None

    def settings(self, replica: Replica) -> Settings:
        return replica_settings(self.base, replica)

    def rest(self, replica: Replica) -> TfsRest:
        return TfsRest(replica.rest, self.base.request_timeout)

    def reloader(self, replica: Replica) -> Reloader:
        """gRPC when the replica has it, else its own poll of its file; none: only write."""
        if self.mode is ReloadMode.NONE:
            return NoReload()
        if replica.grpc is None or self.mode is ReloadMode.POLL:
            return PollReloader()
        with self._lock:
            client = self._clients.get(replica.name)
            if client is None:
                client = self._clients[replica.name] = TfsGrpc(replica.grpc)
        return GrpcReloader(client)

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def observe(self, replica: Replica, extra: ServingConfig | None = None) -> Observed:
        return observe_for(self.settings(replica), self.desired, self.rest(replica), extra)

    def survey(self, replica: Replica) -> Survey:
        return survey_of(replica, self.desired, self.observe(replica))

    def converge(
        self, replica: Replica, config: ServingConfig, action: str, interrupted: Callable[[], bool]
    ) -> Outcome:
        settings = self.settings(replica)
        settings.state_path.mkdir(parents=True, exist_ok=True)
        rest = self.rest(replica)
        reloader = self.reloader(replica)
        gate = self._gate if self._gate is not None and replica.name in self._gate.names else None
        if gate is not None:
            reloader = GatedReloader(reloader, gate, replica.name)
        observed = observe_for(settings, self.desired, rest if reloader.waits else None, config)
        try:
            return self._execute(settings, rest, reloader, observed, config, action, interrupted)
        finally:
            if gate is not None:
                gate.arrive(replica.name, wait=False)  # no push (nothing to do, refused): leave

    def _execute(
        self,
        settings: Settings,
        rest: TfsRest,
        reloader: Reloader,
        observed: Observed,
        config: ServingConfig,
        action: str,
        interrupted: Callable[[], bool],
    ) -> Outcome:
        outcome, _ = execute(
            plan_config(observed, config, action),
            observed,
            self.desired,
            settings=settings,
            reloader=reloader,
            rest=rest,
            revision=self.revision,
            verify=False,  # the rollout verifies each replica after it prepared
            interrupted=interrupted,
            action=action,
        )
        return outcome

    def serves(self, replica: Replica, config: ServingConfig) -> bool:
        if not self.reloader(replica).waits:  # --reload none: only the file is written
            return read_config(self.settings(replica).config_path) == config
        return serving(self.observe(replica, config), config)

    def verify(self, replica: Replica, survey: Survey) -> str | None:
        """Each version a label moves to at the flip, with a verify request, answered right
        by this replica."""
        if survey.phases is None or not self.verifies:
            return None
        before = survey.before or ServingConfig()
        rest = self.rest(replica)
        for model in survey.phases.flip.models:
            wanted = self.desired.model(model.name)
            if wanted is None or wanted.verify_request is None:
                continue
            old = before.model(model.name)
            labelled = set(old.label_map.values()) if old is not None else set()
            for version in sorted({v for _, v in model.labels} - labelled):
                try:
                    verify_version(rest, model.name, version, wanted.verify_request)
                except (ReconcilerError, OSError, ValueError) as error:
                    return str(error)
        return None


@dataclass
class FileFleetLog:
    """The fleet's history (<state-dir>/fleet/history.jsonl, one record per rollout, its id
    the rollout's generation) and, per replica, what it serves (<name>/serving.json)."""

    state_dir: Path
    reload: str = "grpc"
    _plan: FleetPlan | None = None
    _stopped: Record | None = None

    @property
    def fleet_dir(self) -> Path:
        return self.state_dir / FLEET_DIR

    def _record(self, the_plan: FleetPlan, outcome: str, message: str, **extra: Any) -> Record:
        replicas = {
            s.replica.name: {"before": render_config(s.before) if s.before is not None else None}
            for s in the_plan.surveys
        }
        if self._stopped is not None:  # what each replica served before the stopped rollout
            earlier = self._stopped.extra.get("replicas", {})
            for name, entry in replicas.items():
                if isinstance(earlier.get(name), dict) and earlier[name].get("before"):
                    entry["before"] = earlier[name]["before"]
            extra = {"resumes": self._stopped.id, **extra}
        return Record(
            id=0,
            time=_now(),
            outcome=outcome,
            message=message,
            reload=self.reload,
            commit=the_plan.commit,
            steps=tuple(f"wave {i}: {', '.join(w)}" for i, w in enumerate(the_plan.waves, 1)),
            extra={"waves": [list(w) for w in the_plan.waves], "replicas": replicas, **extra},
            action="fleet rollout",
        )

    def start(self, rollout: FleetPlan) -> int:
        """Record the rollout's start. After one stopped part-way (kill -9), the fleet it left
        (some replicas loaded or flipped) was never a state anyone chose: this rollout's
        `before`, what `rollback --fleet` returns to, is what served before that one."""
        self._plan = rollout
        records = read_history(self.fleet_dir)
        last = records[-1] if records else None
        if last is not None and last.outcome == STARTED:
            self._stopped = last
        return append_record(self.fleet_dir, self._record(rollout, STARTED, STARTED_MESSAGE)).id

    def replica_serves(self, replica: Replica, generation: int, phase: Phase, config: str) -> None:
        home = replica_home(self.state_dir, replica.name)
        home.mkdir(parents=True, exist_ok=True)
        commit = self._plan.commit if self._plan is not None else None
        document = {
            "generation": generation,
            "phase": phase.value,
            "commit": commit,
            "digest": digest(config),
            "time": _now(),
        }
        write_atomic(home / SERVING_FILE, json.dumps(document, sort_keys=True) + "\n")

    def finish(self, generation: int, outcome: FleetOutcome) -> None:
        assert self._plan is not None
        results: dict[str, str] = {}
        for report in outcome.reports:
            results[report.replica] = f"{report.phase}: {report.result}"
        record = self._record(
            self._plan,
            outcome.result.value,
            outcome.message,
            failed=list(outcome.failed),
            results=results,
        )
        append_record(
            self.fleet_dir, replace(record, seconds=round(outcome.seconds, 3)), same_id=generation
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_serving(state_dir: Path, name: str) -> dict[str, Any] | None:
    """What a replica was last confirmed serving by a rollout (generation, phase, commit,
    digest), None when no rollout reached it."""
    text = read_text(replica_home(state_dir, name) / SERVING_FILE)
    if text is None:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def fleet_history(state_dir: Path) -> list[Record]:
    """The fleet's rollouts, oldest first (a start without its outcome: one stopped part-way)."""
    records = read_history(state_dir / FLEET_DIR)
    finished = {r.id for r in records if r.outcome != STARTED}
    return [r for r in records if r.outcome != STARTED or r.id not in finished]


def restore_targets(record: Record) -> dict[str, ServingConfig]:
    """The config each replica served before rollout `record`: what `rollback --fleet`
    returns it to."""
    replicas = record.extra.get("replicas", {})
    found = {}
    for name, entry in replicas.items():
        text = entry.get("before") if isinstance(entry, dict) else None
        if isinstance(text, str):
            found[name] = parse_config(text, f"fleet record {record.id}, replica {name}")
    return found
