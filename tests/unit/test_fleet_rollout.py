"""A fleet rollout over in-memory TFS replicas (reconciler.testing.fakes) on a fake clock: each
replica's step is the single-TFS converger on a plan_config, as in production."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.config_store import FileConfigStore
from reconciler.converge import Converger, Outcome, Target
from reconciler.desired import DesiredState
from reconciler.desired_files import load_desired
from reconciler.fleet_file import Parallel, Rollout
from reconciler.fleet_rollout import (
    FleetOutcome,
    FleetPlan,
    FleetResult,
    FleetRollout,
    Phase,
    Report,
    Survey,
    fleet_plan,
    one_by_one,
    served_everywhere,
    serving,
    survey_of,
    wave_done,
)
from reconciler.observe import Observed, observe
from reconciler.plan import plan_config
from reconciler.reconcile import Revision
from reconciler.replica import Replica
from reconciler.testing.fakes import FakeClock, FakeReloader, FakeTfs
from reconciler.tfs_config import ServingConfig

NAMES = ("tfs-a", "tfs-b", "tfs-c", "tfs-d", "tfs-e")
LAB_LABELS = {"deprecated": 1, "stable": 2, "canary": 3}


@dataclass
class MemoryLog:
    generation: int = 7  # an earlier rollout's number: each start takes the next
    serving: list[tuple[str, int, Phase]] = field(default_factory=list)
    finished: list[FleetOutcome] = field(default_factory=list)

    def start(self, rollout: FleetPlan) -> int:
        self.generation += 1
        return self.generation

    def replica_serves(self, replica: Replica, generation: int, phase: Phase, config: str) -> None:
        self.serving.append((replica.name, generation, phase))

    def finish(self, generation: int, outcome: FleetOutcome) -> None:
        self.finished.append(outcome)


@dataclass
class Fleet:
    """Five replicas sharing the lab's model folders, each with its own models.config."""

    lab: Path
    clock: FakeClock
    tfs: dict[str, FakeTfs]
    replicas: tuple[Replica, ...]
    desired: DesiredState | None = None
    wrong_answer: set[str] = field(default_factory=set)  # replicas failing verification
    pushes: list[tuple[str, ServingConfig]] = field(default_factory=list)
    timeout: float = 30.0
    gated: list[tuple[str, ...]] = field(default_factory=list)

    # ReplicaDriver
    def observe(self, replica: Replica) -> Observed:
        assert self.desired is not None and replica.config is not None
        return observe(
            {m.name: m.base_path for m in self.desired.models},
            {m.name: [label for label, _ in m.labels] for m in self.desired.models},
            models_dir=self.lab / "models",
            serving_root="/models",
            config_path=replica.config,
            live_source=self.tfs[replica.name],
        )

    def converge(
        self, replica: Replica, config: ServingConfig, action: str, interrupted: Callable[[], bool]
    ) -> Outcome:
        assert self.desired is not None and replica.config is not None
        observed = self.observe(replica)
        tfs = self.tfs[replica.name]
        reloader = FakeReloader(tfs)
        converger = Converger(
            Target(tfs, FileConfigStore(replica.config, replica.config.parent), reloader),
            timeout=self.timeout,
            clock=self.clock,
            sleep=self.clock.sleep,
            interrupted=interrupted,
        )
        outcome = converger.apply(plan_config(observed, config), observed.disk, self.desired)
        self.pushes.extend((replica.name, pushed) for pushed in reloader.pushed)
        return outcome

    def serves(self, replica: Replica, config: ServingConfig) -> bool:
        return serving(self.observe(replica), config)

    def verify(self, replica: Replica, survey: Survey) -> str | None:
        return "wrong answer" if replica.name in self.wrong_answer else None

    def together(self, names: Sequence[str]) -> None:
        self.gated.append(tuple(names))

    # what a daemon's pass asks besides
    revision: Revision = field(default_factory=Revision)

    def survey(self, replica: Replica) -> Survey:
        assert self.desired is not None
        return survey_of(replica, self.desired, self.observe(replica))

    def close(self) -> None:
        return None

    # the test's side
    def want(self, versions: str, labels: dict[str, int]) -> None:
        lines = "\n".join(f"      {k}: {v}" for k, v in labels.items())
        (self.lab / "desired_state" / "animals.yaml").write_text(
            "apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n"
            f"    versions: {versions}\n    labels:\n{lines}\n"
        )
        self.desired = load_desired(self.lab / "desired_state")

    def add_version(self, number: int) -> None:
        base = self.lab / "models" / "animals"
        shutil.copytree(base / "3", base / str(number))

    def plan(self, rollout: Rollout) -> FleetPlan:
        assert self.desired is not None
        surveys = [survey_of(r, self.desired, self.observe(r)) for r in self.replicas]
        return fleet_plan(surveys, rollout)

    def roll(self, rollout: Rollout, log: MemoryLog | None = None) -> FleetOutcome:
        return FleetRollout(
            self, log or MemoryLog(), rollout, run_all=one_by_one, clock=self.clock
        ).run(self.plan(rollout))

    def labels(self) -> dict[str, dict[str, int]]:
        return {name: dict(tfs.labels) for name, tfs in self.tfs.items()}


@pytest.fixture
def fleet(lab: Path) -> Fleet:
    clock = FakeClock()
    replicas = []
    tfs = {}
    for name in NAMES:
        home = lab / "replicas" / name
        home.mkdir(parents=True)
        shutil.copy(lab / "models" / "models.config", home / "models.config")
        replicas.append(
            Replica(name, f"http://{name}:8501", f"{name}:8500", home / "models.config")
        )
        tfs[name] = FakeTfs(clock, lab / "models")
    return Fleet(lab, clock, tfs, tuple(replicas))


ROLLOUT = Rollout(canary=1, max_parallel=Parallel(2), max_failures=0, on_failure="rollback")


def promote(fleet: Fleet) -> None:
    """Version 4 loaded, stable moved to it, deprecated dropped, version 1 unloaded."""
    fleet.add_version(4)
    fleet.want("[2, 3, 4]", {"stable": 4, "canary": 3})


def test_a_promotion_prepares_in_waves_then_flips_all_then_cleans_up(fleet: Fleet) -> None:
    promote(fleet)
    the_plan = fleet.plan(ROLLOUT)
    assert the_plan.waves == (("tfs-a",), ("tfs-b", "tfs-c"), ("tfs-d", "tfs-e"))
    outcome = fleet.roll(ROLLOUT)
    assert outcome.result is FleetResult.DONE, outcome.message
    assert outcome.exit_code == 0
    order = [(r.replica, r.phase) for r in outcome.reports]
    prepares = [(n, Phase.PREPARE) for n in NAMES]
    assert order == prepares + [(n, Phase.FLIP) for n in NAMES] + [
        (n, Phase.CLEANUP) for n in NAMES
    ]
    assert fleet.labels() == {n: {"stable": 4, "canary": 3} for n in NAMES}
    assert fleet.gated == [NAMES, ()]  # the flip's pushes leave together
    assert all(tfs.state(1) == "END" and tfs.state(4) == "AVAILABLE" for tfs in fleet.tfs.values())
    for name in NAMES:  # each replica's file holds what it serves
        assert "versions: 4" in (fleet.lab / "replicas" / name / "models.config").read_text()


def test_no_label_moves_on_any_replica_before_every_replica_prepared(fleet: Fleet) -> None:
    promote(fleet)
    fleet.roll(ROLLOUT)
    first_label_push = next(
        i
        for i, (_, config) in enumerate(fleet.pushes)
        if config.models[0].label_map.get("stable") == 4
    )
    loaded_before = {name for name, _ in fleet.pushes[:first_label_push]}
    assert loaded_before == set(NAMES)
    # a label is only ever set on a version AVAILABLE on that replica
    assert all(entry[2] == "AVAILABLE" for tfs in fleet.tfs.values() for entry in tfs.label_log)


def test_a_failed_load_on_one_replica_halts_and_rolls_back_without_touching_labels(
    fleet: Fleet,
) -> None:
    promote(fleet)
    fleet.tfs["tfs-c"].broken = {4}
    log = MemoryLog()
    outcome = fleet.roll(ROLLOUT, log)
    assert outcome.result is FleetResult.ROLLED_BACK, outcome.message
    assert outcome.exit_code == 1
    assert outcome.failed == ("tfs-c",)
    assert "halted in wave 2" in outcome.message
    assert not any(r.phase is Phase.FLIP for r in outcome.reports)
    # every label where it was, on every replica; no replica was ever relabelled
    assert fleet.labels() == {n: LAB_LABELS for n in NAMES}
    assert all(tfs.label_log == [] for tfs in fleet.tfs.values())
    # the versions loaded only for the halted rollout are unloaded again, where they loaded
    for name in ("tfs-a", "tfs-b"):
        assert fleet.tfs[name].state(4) == "END"
    assert fleet.tfs["tfs-d"].state(4) is None  # the later wave was never touched
    rolled = [r.replica for r in outcome.reports if r.phase is Phase.ROLLBACK]
    assert rolled == ["tfs-a", "tfs-b", "tfs-c"]
    assert log.finished == [outcome]


def test_pause_stops_where_it_is(fleet: Fleet) -> None:
    promote(fleet)
    fleet.tfs["tfs-b"].broken = {4}
    outcome = fleet.roll(Rollout(1, Parallel(2), 0, "pause"))
    assert outcome.result is FleetResult.HALTED
    assert "paused" in outcome.message
    assert fleet.tfs["tfs-a"].state(4) == "AVAILABLE"  # the canary keeps what it loaded
    assert fleet.labels() == {n: LAB_LABELS for n in NAMES}


def test_failures_up_to_max_failures_leave_those_replicas_behind(fleet: Fleet) -> None:
    promote(fleet)
    fleet.tfs["tfs-e"].broken = {4}
    outcome = fleet.roll(Rollout(1, Parallel(2), 1, "rollback"))
    assert outcome.result is FleetResult.PARTIAL, outcome.message
    assert outcome.exit_code == 1
    assert outcome.failed == ("tfs-e",)
    assert fleet.tfs["tfs-e"].labels == LAB_LABELS
    assert all(fleet.labels()[n] == {"stable": 4, "canary": 3} for n in NAMES[:4])


def test_a_replica_that_never_finishes_loading_is_given_up_at_the_timeout(fleet: Fleet) -> None:
    promote(fleet)
    fleet.tfs["tfs-b"].load = 10_000.0  # hangs, as far as any deadline is concerned
    outcome = fleet.roll(ROLLOUT)
    assert outcome.result is FleetResult.ROLLED_BACK
    assert outcome.failed == ("tfs-b",)
    assert fleet.clock() < 10 * fleet.timeout  # bounded by the deadlines, not by the hang


def test_a_replica_stopped_mid_rollout_is_not_counted_healthy(fleet: Fleet) -> None:
    promote(fleet)

    class StopsAfterPrepare(FleetRollout):
        def _step(self, the_plan: FleetPlan, names: object, phase: Phase) -> list[Report]:
            if phase is Phase.FLIP:
                fleet.tfs["tfs-d"].reachable = False  # docker stop, between the phases
            return super()._step(the_plan, names, phase)  # type: ignore[arg-type]

    rollout = StopsAfterPrepare(fleet, MemoryLog(), ROLLOUT, run_all=one_by_one, clock=fleet.clock)
    outcome = rollout.run(fleet.plan(ROLLOUT))
    assert "tfs-d" in outcome.failed
    assert outcome.result in (FleetResult.ROLLED_BACK, FleetResult.ROLLBACK_FAILED)
    assert not any(r.replica == "tfs-d" and r.ok for r in outcome.reports if r.phase is Phase.FLIP)
    for name in ("tfs-a", "tfs-b", "tfs-c", "tfs-e"):  # the flip is undone where it happened
        assert fleet.tfs[name].labels == LAB_LABELS


def test_an_unreachable_replica_at_the_start_halts_before_anything_changes(fleet: Fleet) -> None:
    promote(fleet)
    fleet.tfs["tfs-a"].reachable = False
    outcome = fleet.roll(ROLLOUT)
    assert outcome.result is FleetResult.HALTED
    assert "nothing was changed" in outcome.message
    assert fleet.pushes == []


def test_a_wrong_verify_answer_counts_as_a_failure(fleet: Fleet) -> None:
    promote(fleet)
    fleet.wrong_answer = {"tfs-a"}
    outcome = fleet.roll(ROLLOUT)
    assert outcome.result is FleetResult.ROLLED_BACK
    assert outcome.failed == ("tfs-a",)
    assert "halted in wave 1" in outcome.message
    assert fleet.tfs["tfs-b"].state(4) is None


def test_a_fleet_in_sync_is_a_noop(fleet: Fleet) -> None:
    fleet.want("[1, 2, 3]", LAB_LABELS)
    log = MemoryLog()
    outcome = fleet.roll(ROLLOUT, log)
    assert outcome.result is FleetResult.NOOP and outcome.exit_code == 0
    assert log.finished == [] and fleet.pushes == []


def test_interrupt_between_waves_stops_with_130(fleet: Fleet) -> None:
    promote(fleet)
    asked = iter([False, False, True])
    rollout = FleetRollout(
        fleet, MemoryLog(), ROLLOUT, run_all=one_by_one, interrupted=lambda: next(asked, True)
    )
    outcome = rollout.run(fleet.plan(ROLLOUT))
    assert outcome.result is FleetResult.INTERRUPTED and outcome.exit_code == 130


def test_only_this_generations_reports_count() -> None:
    old = Report("tfs-a", 3, Phase.PREPARE, True, "applied", "")
    new = Report("tfs-b", 4, Phase.PREPARE, True, "applied", "")
    assert not wave_done([old, new], ["tfs-a", "tfs-b"], 4, Phase.PREPARE)
    assert wave_done([old, new], ["tfs-b"], 4, Phase.PREPARE)
    assert not wave_done([new], ["tfs-b"], 4, Phase.FLIP)


def test_the_log_hears_each_confirmed_step_of_this_generation(fleet: Fleet) -> None:
    promote(fleet)
    log = MemoryLog()
    fleet.roll(ROLLOUT, log)
    assert {g for _, g, _ in log.serving} == {8}
    assert len(log.serving) == 15


def test_an_interrupt_during_a_wave_stops_without_counting_failures_or_rolling_back(
    fleet: Fleet,
) -> None:
    promote(fleet)
    stop = [False]

    class InterruptedInWave2(FleetRollout):
        def _step(self, the_plan: FleetPlan, names: object, phase: Phase) -> list[Report]:
            if names == ("tfs-b", "tfs-c"):
                stop[0] = True  # Ctrl-C as wave 2 starts
            return super()._step(the_plan, names, phase)  # type: ignore[arg-type]

    rollout = InterruptedInWave2(
        fleet, MemoryLog(), ROLLOUT, run_all=one_by_one, interrupted=lambda: stop[0]
    )
    outcome = rollout.run(fleet.plan(ROLLOUT))
    assert outcome.result is FleetResult.INTERRUPTED and outcome.exit_code == 130
    assert "interrupted in wave 2" in outcome.message
    assert outcome.failed == ()
    assert not any(r.phase is Phase.ROLLBACK for r in outcome.reports)
    assert fleet.tfs["tfs-a"].state(4) == "AVAILABLE"  # the canary keeps what it loaded
    assert fleet.labels() == {n: LAB_LABELS for n in NAMES}


def test_a_cleanup_that_fails_on_one_replica_leaves_the_flip_and_says_partial(
    fleet: Fleet,
) -> None:
    promote(fleet)

    class StopsAfterFlip(FleetRollout):
        def _step(self, the_plan: FleetPlan, names: object, phase: Phase) -> list[Report]:
            if phase is Phase.CLEANUP:
                fleet.tfs["tfs-e"].reachable = False
            return super()._step(the_plan, names, phase)  # type: ignore[arg-type]

    rollout = StopsAfterFlip(fleet, MemoryLog(), ROLLOUT, run_all=one_by_one, clock=fleet.clock)
    outcome = rollout.run(fleet.plan(ROLLOUT))
    assert outcome.result is FleetResult.PARTIAL and outcome.exit_code == 1
    assert outcome.failed == ("tfs-e",)
    assert "cleanup failed on tfs-e" in outcome.message
    assert not any(r.phase is Phase.ROLLBACK for r in outcome.reports)  # labels stay moved
    assert fleet.tfs["tfs-e"].labels == {"stable": 4, "canary": 3}
    assert all(fleet.tfs[n].state(1) == "END" for n in NAMES[:4])


def test_readiness_before_a_first_convergence_judges_only_what_every_replica_holds(
    fleet: Fleet,
) -> None:
    promote(fleet)  # stable moves, deprecated goes: every replica holds both labels now
    surveys = fleet.plan(ROLLOUT).surveys
    assert fleet.desired is not None
    judged = served_everywhere(fleet.desired, surveys)
    assert [(m.name, m.labels) for m in judged.models] == [
        ("animals", (("canary", 3), ("stable", 4)))
    ]
    fleet.want("[1, 2, 3]", {"stable": 2, "brand-new": 3})  # a label no replica has yet
    assert fleet.desired is not None
    judged = served_everywhere(fleet.desired, fleet.plan(ROLLOUT).surveys)
    assert judged.models[0].labels == (("stable", 2),)


def test_a_replica_that_loaded_but_failed_verification_is_put_back_when_the_rollout_goes_on(
    fleet: Fleet,
) -> None:
    promote(fleet)
    fleet.wrong_answer = {"tfs-b"}
    outcome = fleet.roll(Rollout(1, Parallel(2), 1, "rollback"))
    assert outcome.result is FleetResult.PARTIAL, outcome.message
    assert outcome.failed == ("tfs-b",)
    assert fleet.tfs["tfs-b"].labels == LAB_LABELS
    assert fleet.tfs["tfs-b"].state(4) == "END"  # loaded for the rollout, unloaded again
    assert "put back: applied" in next(r.message for r in outcome.reports if not r.ok)
