"""A fleet rollout as values: each replica's survey (what it serves, the phases that take it
to the desired state), the waves over the replicas that change, each step's report and the
rollout's outcome. Pure: `fleet_rollout` carries it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from reconciler.desired import DesiredState
from reconciler.fleet_file import Rollout
from reconciler.fleet_phases import ReplicaPhases, replica_phases
from reconciler.plan import Plan, live_basis, plan, plan_config
from reconciler.replica import Replica
from reconciler.state import Observed
from reconciler.tfs_config import ServingConfig
from reconciler.waves import waves


class Phase(StrEnum):
    PREPARE = "prepare"
    FLIP = "flip"
    CLEANUP = "cleanup"
    ROLLBACK = "rollback"


class FleetResult(StrEnum):
    NOOP = "noop"  # every replica already serves the desired state
    DONE = "done"  # every replica converged
    PARTIAL = "partial"  # done, but up to max_failures replicas failed and were left behind
    BLOCKED = "blocked"  # refused before anything changed (a plan's problems)
    HALTED = "halted"  # past max_failures, on_failure pause: stopped where it was
    ROLLED_BACK = "rolled_back"  # past max_failures: every touched replica put back
    ROLLBACK_FAILED = "rollback_failed"  # past max_failures, and some could not be put back
    INTERRUPTED = "interrupted"

    @property
    def exit_code(self) -> int:
        if self in (FleetResult.NOOP, FleetResult.DONE):
            return 0
        return 130 if self is FleetResult.INTERRUPTED else 1


@dataclass(frozen=True)
class Survey:
    """One replica before the rollout: what it serves, what it should, and the way there."""

    replica: Replica
    phases: ReplicaPhases | None  # None: nothing to change (or it cannot be reached)
    before: ServingConfig | None  # what it served: what a rollback returns it to
    problems: tuple[str, ...] = ()  # why it must not be touched (the whole rollout waits)
    unreachable: str = ""  # why it did not answer (a failure, counted at once)
    drift: tuple[str, ...] = ()
    changes_config: bool = True  # False: only drift to repair (its file already holds it)


def survey_of(replica: Replica, desired: DesiredState, observed: Observed) -> Survey:
    """A replica's way from what it serves (`observed`) to `desired` (pure)."""
    return _survey(replica, plan(desired, observed), observed)


def survey_to(replica: Replica, target: ServingConfig, observed: Observed, source: str) -> Survey:
    """A replica's way back to `target` (a config it served before, named by `source`)."""
    return _survey(replica, plan_config(observed, target, source), observed)


def _survey(replica: Replica, the_plan: Plan, observed: Observed) -> Survey:
    if the_plan.problems:
        return Survey(replica, None, observed.config, tuple(str(p) for p in the_plan.problems))
    live = observed.live
    if live is not None and not live.reachable:
        return Survey(replica, None, observed.config, unreachable=live.error or "no answer")
    drift = tuple(str(d) for d in the_plan.drift)
    if the_plan.in_sync:
        return Survey(replica, None, observed.config)
    basis = live_basis(observed.config or ServingConfig(), live, the_plan.target)
    # What it served: its file, unless live TFS serves something else (then what it serves).
    before = observed.config if observed.config is not None and not drift else basis
    return Survey(
        replica,
        replica_phases(basis, the_plan.target, observed.disk),
        before,
        drift=drift,
        changes_config=the_plan.changes_config,
    )


def served_everywhere(desired: DesiredState, surveys: Sequence[Survey]) -> DesiredState:
    """`desired` cut to the models, and their labels, every replica's config already holds
    (replicas not read left out): what readiness can judge before the fleet first converged
    without taking every replica out of a balancer for a model or label not rolled out yet."""
    configs = [s.before for s in surveys if s.before is not None and not s.unreachable]
    models = []
    for model in desired.models:
        held = [c.model(model.name) for c in configs]
        if any(m is None for m in held):
            continue
        labels = tuple(
            (label, version)
            for label, version in model.labels
            if all(m is not None and label in m.label_map for m in held)
        )
        models.append(replace(model, labels=labels))
    return DesiredState(tuple(models), desired.prune, desired.files)


def serving(observed: Observed, config: ServingConfig) -> bool:
    """Whether a replica serves `config`: its file holds it and live TFS serves it (its
    versions AVAILABLE, its labels resolving), as read in `observed`."""
    live = observed.live
    if live is None or not live.reachable:
        return False
    return plan_config(observed, config).in_sync


@dataclass(frozen=True)
class Report:
    """What one step did on one replica, in one rollout (`generation`)."""

    replica: str
    generation: int
    phase: Phase
    ok: bool
    result: str
    message: str
    seconds: float = 0.0


def wave_done(
    reports: Sequence[Report], names: Sequence[str], generation: int, phase: Phase
) -> bool:
    """Whether every replica in `names` converged on `phase` in this rollout: a report of an
    earlier generation (an old healthy status) never counts."""
    good = {r.replica for r in reports if r.generation == generation and r.phase is phase and r.ok}
    return set(names) <= good


@dataclass(frozen=True)
class FleetPlan:
    """The rollout, before it starts: a survey per replica, in rollout order, and the waves."""

    surveys: tuple[Survey, ...]
    waves: tuple[tuple[str, ...], ...]  # replicas to change, canary wave first
    commit: str | None = None

    @property
    def blocked(self) -> tuple[str, ...]:
        return tuple(f"{s.replica.name}: {p}" for s in self.surveys for p in s.problems)

    @property
    def changing(self) -> tuple[Survey, ...]:
        return tuple(s for s in self.surveys if s.phases is not None)

    def survey(self, name: str) -> Survey:
        return next(s for s in self.surveys if s.replica.name == name)


def fleet_plan(surveys: Sequence[Survey], rollout: Rollout, commit: str | None = None) -> FleetPlan:
    """Waves over the replicas that change; the canary wave is the first of them in order
    (replicas in sync are not waited on, unreachable ones are not touched)."""
    changing = [s.replica.name for s in surveys if s.phases is not None]
    return FleetPlan(tuple(surveys), waves(changing, rollout.canary, rollout.max_parallel), commit)


@dataclass(frozen=True)
class FleetOutcome:
    result: FleetResult
    message: str
    generation: int = 0
    reports: tuple[Report, ...] = ()
    failed: tuple[str, ...] = ()  # replicas that failed (or did not answer)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return self.result.exit_code
