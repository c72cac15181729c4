"""A rollout across a fleet of TFS replicas: prepare wave by wave, flip everywhere at once,
clean up; halt past `max_failures`, then roll back or pause.

Each replica's step is one converge of a plan to one config (`plan.plan_config`), the same
converger a single TFS uses, with the replica as the target: `ReplicaDriver` is that seam
(`fleet_replicas.LiveDriver` in production, an in-memory TFS in the unit tests). A replica's
step counts only when the replica was seen serving that step's config afterwards, in this
rollout (its generation): a status left from an earlier rollout never counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

import structlog

from reconciler.converge import Outcome
from reconciler.fleet_file import Rollout
from reconciler.fleet_plan import (
    FleetOutcome,
    FleetPlan,
    FleetResult,
    Phase,
    Report,
    Survey,
    fleet_plan,
    served_everywhere,
    serving,
    survey_of,
    survey_to,
    wave_done,
)
from reconciler.outcome import Result
from reconciler.replica import Replica
from reconciler.state import Observed
from reconciler.tfs_config import ServingConfig

__all__ = [
    "FleetLog",
    "FleetOutcome",
    "FleetPlan",
    "FleetResult",
    "FleetRollout",
    "Phase",
    "ReplicaDriver",
    "Report",
    "RunAll",
    "Survey",
    "fleet_plan",
    "in_threads",
    "one_by_one",
    "served_everywhere",
    "serving",
    "survey_of",
    "survey_to",
    "wave_done",
]

log = structlog.get_logger("reconciler.fleet")

T = TypeVar("T")


class ReplicaDriver(Protocol):
    """How the rollout reads and changes one replica; every call has a deadline."""

    def observe(self, replica: Replica) -> Observed:
        """Its disk, models.config and live status."""

    def converge(
        self, replica: Replica, config: ServingConfig, action: str, interrupted: Callable[[], bool]
    ) -> Outcome:
        """Converge it on `config` (its safe phases; rolled back to where it was on failure),
        recorded in its history as `action`; bounded by --timeout."""

    def serves(self, replica: Replica, config: ServingConfig) -> bool:
        """Whether it serves `config` now (read afresh)."""

    def verify(self, replica: Replica, survey: Survey) -> str | None:
        """After prepare: why a version a label is about to move to fails its verify
        request on this replica, or None."""

    def together(self, names: Sequence[str]) -> None:
        """The next converge of each of `names` pushes at the same moment as the others'
        (bounded: a replica that never gets there holds the others a few seconds at most);
        no names: each on its own again."""


class FleetLog(Protocol):
    """Where a rollout is recorded: its generation, and what each replica serves."""

    def start(self, rollout: FleetPlan) -> int:
        """Record the rollout's start; its generation (a number no earlier rollout had)."""

    def replica_serves(self, replica: Replica, generation: int, phase: Phase, config: str) -> None:
        """`replica` serves `phase` of rollout `generation` (confirmed)."""

    def finish(self, generation: int, outcome: FleetOutcome) -> None:
        """Record how the rollout ended."""


def _never() -> bool:
    return False


RunAll = Callable[[Sequence[Callable[[], T]]], list[T]]


def in_threads(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Run `tasks` at once, one thread each; their results in order."""
    if len(tasks) <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="replica") as pool:
        return list(pool.map(lambda task: task(), tasks))


def one_by_one(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Run `tasks` in turn (tests with a fake clock)."""
    return [task() for task in tasks]


@dataclass
class FleetRollout:
    driver: ReplicaDriver
    log: FleetLog
    rollout: Rollout
    run_all: RunAll[Report] = in_threads
    interrupted: Callable[[], bool] = lambda: False
    clock: Callable[[], float] = time.monotonic
    reports: list[Report] = field(default_factory=list)
    _generation: int = field(default=0, init=False)

    def run(self, the_plan: FleetPlan) -> FleetOutcome:
        """Prepare wave by wave, flip all, clean up all; halt past max_failures."""
        started = self.clock()
        if the_plan.blocked:
            return FleetOutcome(
                FleetResult.BLOCKED, "; ".join(the_plan.blocked), seconds=self.clock() - started
            )
        failed = [s.replica.name for s in the_plan.surveys if s.unreachable]
        for survey in the_plan.surveys:
            if survey.unreachable:
                log.warning(
                    "replica_unreachable", replica=survey.replica.name, error=survey.unreachable
                )
        if not the_plan.changing and not failed:
            return FleetOutcome(FleetResult.NOOP, "every replica serves the desired state")
        self._generation = generation = self.log.start(the_plan)
        outcome = self._run(the_plan, failed, started)
        self.log.finish(generation, outcome)
        return outcome

    def _run(self, the_plan: FleetPlan, failed: list[str], started: float) -> FleetOutcome:
        touched: list[str] = []
        if len(failed) > self.rollout.max_failures:
            return self._halt(the_plan, touched, failed, started, "before the first wave")
        prepared = self._prepare(the_plan, touched, failed, started)
        if isinstance(prepared, FleetOutcome):
            return prepared
        if self.interrupted():
            return self._end(
                FleetResult.INTERRUPTED, "interrupted before the flip", failed, started
            )
        return self._flip_and_clean(the_plan, prepared, touched, failed, started)

    def _prepare(
        self, the_plan: FleetPlan, touched: list[str], failed: list[str], started: float
    ) -> list[str] | FleetOutcome:
        """Prepare wave by wave: the replicas prepared, or how the rollout ended."""
        prepared: list[str] = []
        for number, wave in enumerate(the_plan.waves, start=1):
            if self.interrupted():
                return self._end(
                    FleetResult.INTERRUPTED, f"interrupted before wave {number}", failed, started
                )
            log.info(
                "wave",
                wave=number,
                of=len(the_plan.waves),
                replicas=list(wave),
                generation=self._generation,
            )
            touched.extend(wave)
            reports = self._step(the_plan, wave, Phase.PREPARE)
            prepared += [r.replica for r in reports if r.ok]
            if self.interrupted():  # a replica stopped by it has not failed
                return self._end(
                    FleetResult.INTERRUPTED,
                    f"interrupted in wave {number}: its replicas hold what they loaded, labels"
                    " untouched; apply again to finish, or roll back",
                    failed,
                    started,
                )
            failed += [r.replica for r in reports if not r.ok]
            if len(failed) > self.rollout.max_failures:
                return self._halt(the_plan, touched, failed, started, f"in wave {number}")
        if not wave_done(self.reports, prepared, self._generation, Phase.PREPARE):
            raise AssertionError("a prepared replica has no report of this rollout")
        return prepared

    def _flip_and_clean(
        self,
        the_plan: FleetPlan,
        prepared: list[str],
        touched: list[str],
        failed: list[str],
        started: float,
    ) -> FleetOutcome:
        self.driver.together(prepared)
        try:
            flip_reports = self._step(the_plan, tuple(prepared), Phase.FLIP)
        finally:
            self.driver.together(())
        failed += [r.replica for r in flip_reports if not r.ok]
        if len(failed) > self.rollout.max_failures:
            return self._halt(the_plan, touched, failed, started, "at the flip")
        flipped = [r.replica for r in flip_reports if r.ok]
        cleanup = self._step(the_plan, tuple(flipped), Phase.CLEANUP)
        left = [r.replica for r in cleanup if not r.ok]
        if failed or left:
            names = ", ".join(dict.fromkeys(failed))
            what = f"{len(set(failed))} replica(s) failed and were left as they were ({names})"
            if left:
                what += (
                    f"; cleanup failed on {', '.join(left)} (they serve the new labels, the"
                    " old versions still loaded)"
                )
            return self._end(FleetResult.PARTIAL, what, [*failed, *left], started)
        return self._end(
            FleetResult.DONE,
            f"{len(flipped)} replica(s) converged in {len(the_plan.waves)} wave(s)",
            [],
            started,
        )

    def _step(self, the_plan: FleetPlan, names: Sequence[str], phase: Phase) -> list[Report]:
        """`phase` on the replicas `names` at once; one report each, kept."""
        tasks = [partial(self._one, the_plan.survey(name), phase) for name in names]
        reports = self.run_all(tasks)
        self.reports.extend(reports)
        return reports

    def _one(self, survey: Survey, phase: Phase) -> Report:
        replica = survey.replica
        assert survey.phases is not None
        config = {
            Phase.PREPARE: survey.phases.prepare,
            Phase.FLIP: survey.phases.flip,
            Phase.CLEANUP: survey.phases.cleanup,
        }[phase]
        return self._converge(replica, config, phase, survey)

    def _converge(
        self, replica: Replica, config: ServingConfig, phase: Phase, survey: Survey
    ) -> Report:
        started = self.clock()
        action = f"fleet rollout {self._generation}: {phase}"
        # Only a prepare stops part-way: a flip, a cleanup or a rollback, once started,
        # finishes on every replica (a second Ctrl-C still stops at once).
        stop = self.interrupted if phase is Phase.PREPARE else _never
        outcome = Outcome(Result.FAILED, "not converged")
        try:
            outcome = self.driver.converge(replica, config, action, stop)
            ok, message = outcome.ok, outcome.message
            if ok and not self.driver.serves(replica, config):
                ok, message = False, "converged, but not seen serving the config afterwards"
            if ok and phase is Phase.PREPARE:
                wrong = self.driver.verify(replica, survey)
                if wrong is not None:
                    ok, message = False, wrong
        except Exception as error:  # one replica's surprise must not leave the others half-done
            log.exception("replica_failed", replica=replica.name, phase=phase.value)
            ok, message = False, f"{type(error).__name__}: {error}"
        if not ok and outcome.ok and phase is Phase.PREPARE and survey.before is not None:
            # It loaded, then failed its check (verify, serving): nothing else undoes that
            # when the rollout goes on without it (up to max_failures).
            try:
                back = self.driver.converge(replica, survey.before, f"{action}: put back", _never)
                message += f"; put back: {back.result}"
            except Exception as error:
                log.exception("replica_put_back_failed", replica=replica.name)
                message += f"; putting it back failed: {type(error).__name__}: {error}"
        if ok:
            self.log.replica_serves(replica, self._generation, phase, outcome.config or "")
        log.info(
            "replica_step",
            replica=replica.name,
            phase=phase.value,
            generation=self._generation,
            ok=ok,
            result=outcome.result,
            message=message,
        )
        return Report(
            replica.name,
            self._generation,
            phase,
            ok,
            outcome.result,
            message,
            self.clock() - started,
        )

    def _halt(
        self, the_plan: FleetPlan, touched: list[str], failed: list[str], started: float, where: str
    ) -> FleetOutcome:
        why = (
            f"halted {where}: {len(set(failed))} replica(s) failed"
            f" ({', '.join(dict.fromkeys(failed))}),"
            f" more than max_failures {self.rollout.max_failures}"
        )
        log.error("rollout_halted", generation=self._generation, failed=failed, where=where)
        if self.rollout.on_failure == "pause" or not touched:
            note = (
                "; paused: replicas are left where they are" if touched else "; nothing was changed"
            )
            return self._end(FleetResult.HALTED, why + note, failed, started)
        reports = self.run_all([partial(self._put_back, the_plan.survey(n)) for n in touched])
        self.reports.extend(reports)
        stuck = [r.replica for r in reports if not r.ok]
        if stuck:
            return self._end(
                FleetResult.ROLLBACK_FAILED,
                f"{why}; rolling back failed on {', '.join(stuck)}",
                [*failed, *stuck],
                started,
            )
        return self._end(
            FleetResult.ROLLED_BACK,
            f"{why}; {len(touched)} touched replica(s) rolled back to what they served",
            failed,
            started,
        )

    def _put_back(self, survey: Survey) -> Report:
        if survey.before is None:
            return Report(
                survey.replica.name,
                self._generation,
                Phase.ROLLBACK,
                True,
                "noop",
                "nothing to restore",
            )
        return self._converge(survey.replica, survey.before, Phase.ROLLBACK, survey)

    def _end(
        self, result: FleetResult, message: str, failed: list[str], started: float
    ) -> FleetOutcome:
        return FleetOutcome(
            result,
            message,
            self._generation,
            tuple(self.reports),
            tuple(dict.fromkeys(failed)),
            self.clock() - started,
        )
