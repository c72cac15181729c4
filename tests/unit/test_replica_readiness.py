"""Model-aware readiness per replica of a fleet (``/readyz/<replica>``): each replica judged on
what its own TFS says, kept ``max_age`` seconds (TFS in memory, a fake clock)."""

from __future__ import annotations

from reconciler.desired import parse_documents
from reconciler.observe import LiveModel, LiveVersion, TfsUnreachable
from reconciler.readiness import Readiness, replica_readiness
from reconciler.replica import Replica

DESIRED = parse_documents(
    [
        (
            "desired.yaml",
            b"apiVersion: tfs-reconciler/v1\nmodels:\n"
            b"  animals:\n    versions: [1, 2]\n    labels: {stable: 2}\n",
        )
    ]
)
REPLICAS = (
    Replica("tfs-a", "http://127.0.0.1:1"),
    Replica("tfs-b", "http://127.0.0.1:2"),
)


class MemoryTfs:
    """One TFS in memory: its versions' states and its labels; ``up`` False refuses."""

    def __init__(self, states: dict[int, str], labels: dict[str, int]) -> None:
        self.states, self.labels, self.up, self.calls = states, labels, True, 0

    def model_status(self, name: str) -> LiveModel:
        self.calls += 1
        if not self.up:
            raise TfsUnreachable("connection refused")
        versions = tuple(LiveVersion(v, s) for v, s in sorted(self.states.items()))
        return LiveModel(name, name == "animals", versions if name == "animals" else ())

    def label_version(self, name: str, label: str) -> int | None:
        return self.labels.get(label)


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def fleet(tfs: dict[str, MemoryTfs], clock: Clock) -> dict[str, Readiness]:
    checks = replica_readiness(
        REPLICAS, lambda: DESIRED, max_age=1.0, clock=clock, source=lambda r, _t: tfs[r.name]
    )
    return {name: check(True) for name, check in checks.items()}


def test_each_replica_is_judged_on_its_own_tfs() -> None:
    tfs = {
        "tfs-a": MemoryTfs({1: "AVAILABLE", 2: "AVAILABLE"}, {"stable": 2}),
        "tfs-b": MemoryTfs({1: "AVAILABLE", 2: "AVAILABLE"}, {}),  # restarted: no labels yet
    }
    assert fleet(tfs, Clock()) == {
        "tfs-a": Readiness(True),
        "tfs-b": Readiness(False, ("model animals: label stable resolves to no version",)),
    }


def test_every_replica_stays_ready_through_a_promotion() -> None:
    """Loading the new version (label on the old), then the flip, then the old one unloading."""
    for states, stable in [
        ({1: "AVAILABLE", 2: "LOADING"}, 1),
        ({1: "AVAILABLE", 2: "AVAILABLE"}, 1),
        ({1: "AVAILABLE", 2: "AVAILABLE"}, 2),
        ({1: "UNLOADING", 2: "AVAILABLE"}, 2),
    ]:
        tfs = {r.name: MemoryTfs(dict(states), {"stable": stable}) for r in REPLICAS}
        assert set(fleet(tfs, Clock()).values()) == {Readiness(True)}, states


def test_a_replica_that_does_not_answer_is_not_ready_and_the_others_are() -> None:
    tfs = {r.name: MemoryTfs({1: "AVAILABLE", 2: "AVAILABLE"}, {"stable": 2}) for r in REPLICAS}
    tfs["tfs-b"].up = False
    answers = fleet(tfs, Clock())
    assert answers["tfs-a"] == Readiness(True)
    assert answers["tfs-b"] == Readiness(False, ("TFS does not answer: connection refused",))


def test_a_label_on_a_version_the_replica_has_not_loaded_is_not_ready() -> None:
    tfs = {r.name: MemoryTfs({1: "AVAILABLE", 2: "LOADING"}, {"stable": 2}) for r in REPLICAS}
    assert fleet(tfs, Clock())["tfs-a"].reasons == (
        "model animals: label stable resolves to version 2, which is not AVAILABLE",
    )


def test_each_replica_is_asked_with_the_timeout_at_most_once_per_max_age() -> None:
    tfs = {r.name: MemoryTfs({1: "AVAILABLE", 2: "AVAILABLE"}, {"stable": 2}) for r in REPLICAS}
    clock, timeouts = Clock(), []

    def source(replica: Replica, timeout: float) -> MemoryTfs:
        timeouts.append(timeout)
        return tfs[replica.name]

    checks = replica_readiness(
        REPLICAS, lambda: DESIRED, timeout=0.5, max_age=1.0, clock=clock, source=source
    )
    assert checks["tfs-a"](True) == Readiness(True)
    asked = tfs["tfs-a"].calls
    tfs["tfs-a"].up = False
    clock.now += 0.9
    assert checks["tfs-a"](True) == Readiness(True)  # kept
    assert tfs["tfs-a"].calls == asked
    clock.now += 0.2
    assert not checks["tfs-a"](True).ready  # asked again
    assert tfs["tfs-b"].calls == 0  # a probe of one replica asks only that one
    assert set(timeouts) == {0.5}


def test_no_desired_state_read_yet_is_not_ready() -> None:
    checks = replica_readiness(REPLICAS, lambda: None, source=lambda r, t: MemoryTfs({}, {}))
    assert checks["tfs-a"](True) == Readiness(False, ("no desired state read yet",))


def test_the_checks_are_named_after_the_replicas() -> None:
    assert list(replica_readiness(REPLICAS, lambda: DESIRED)) == ["tfs-a", "tfs-b"]
    assert replica_readiness((), lambda: DESIRED) == {}
