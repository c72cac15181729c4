"""Model-aware readiness: the pure rule (a table) and its live reader (a fake TFS, a fake
clock)."""

from __future__ import annotations

import pytest

from reconciler.desired import DesiredState, parse_documents
from reconciler.observe import LiveModel, LiveStatus, LiveVersion, TfsUnreachable
from reconciler.readiness import LiveReadiness, Readiness, decide, judged

DESIRED = parse_documents(
    [
        (
            "desired.yaml",
            b"apiVersion: tfs-reconciler/v1\nmodels:\n"
            b"  animals:\n    versions: [1, 2]\n    labels: {stable: 2}\n"
            b"  plants:\n    versions: {latest: 1}\n",
        )
    ]
)


def live(*models: LiveModel) -> LiveStatus:
    return LiveStatus(True, tuple(models))


def model(name: str, states: dict[int, str], labels: dict[str, int] | None = None) -> LiveModel:
    versions = tuple(LiveVersion(v, s) for v, s in states.items())
    return LiveModel(name, True, versions, tuple(sorted((labels or {}).items())))


PLANTS = model("plants", {1: "AVAILABLE"})

TABLE: list[tuple[str, DesiredState | None, LiveStatus | None, bool, Readiness]] = [
    (
        "serving every model and label",
        DESIRED,
        live(model("animals", {1: "AVAILABLE", 2: "AVAILABLE"}, {"stable": 2}), PLANTS),
        True,
        Readiness(True),
    ),
    (
        "a promotion: the new version loads, the label still on the old one",
        DESIRED,
        live(model("animals", {1: "AVAILABLE", 2: "LOADING"}, {"stable": 1}), PLANTS),
        True,
        Readiness(True),
    ),
    (
        "before the first convergence since the start",
        DESIRED,
        live(model("animals", {1: "AVAILABLE"}, {"stable": 1}), PLANTS),
        False,
        Readiness(False, ("not converged yet since the reconciler started",)),
    ),
    (
        "TFS restarting",
        DESIRED,
        LiveStatus(False, error="connection refused"),
        True,
        Readiness(False, ("TFS does not answer: connection refused",)),
    ),
    (
        "a label that resolves nowhere (a restarted TFS, labels not yet set)",
        DESIRED,
        live(model("animals", {1: "AVAILABLE", 2: "AVAILABLE"}), PLANTS),
        True,
        Readiness(False, ("model animals: label stable resolves to no version",)),
    ),
    (
        "a label on a version that is not AVAILABLE",
        DESIRED,
        live(model("animals", {1: "AVAILABLE", 2: "UNLOADING"}, {"stable": 2}), PLANTS),
        True,
        Readiness(
            False,
            ("model animals: label stable resolves to version 2, which is not AVAILABLE",),
        ),
    ),
    (
        "a model still loading, another not served",
        DESIRED,
        live(model("animals", {2: "LOADING"}, {"stable": 2}), LiveModel("plants", False)),
        True,
        Readiness(
            False,
            (
                "model animals: no AVAILABLE version (versions: 2 LOADING)",
                "model animals: label stable resolves to version 2, which is not AVAILABLE",
                "model plants: not served by TFS",
            ),
        ),
    ),
    (
        "no desired state read",
        None,
        None,
        True,
        Readiness(False, ("no desired state read yet",)),
    ),
]


@pytest.mark.parametrize(
    ("desired", "status", "converged", "expected"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_the_rule(
    desired: DesiredState | None, status: LiveStatus | None, converged: bool, expected: Readiness
) -> None:
    assert decide(desired, status, converged) == expected


class FakeTfs:
    def __init__(self) -> None:
        self.calls = 0
        self.up = True

    def model_status(self, name: str) -> LiveModel:
        self.calls += 1
        if not self.up:
            raise TfsUnreachable("refused")
        if name == "animals":
            return model("animals", {1: "AVAILABLE", 2: "AVAILABLE"})
        return PLANTS

    def label_version(self, name: str, label: str) -> int | None:
        return 2


def test_the_live_reader_asks_tfs_at_most_once_per_max_age() -> None:
    now = [100.0]
    tfs = FakeTfs()
    check = LiveReadiness(lambda: DESIRED, lambda: tfs, max_age=1.0, clock=lambda: now[0])
    assert check(True) == Readiness(True)
    asked = tfs.calls
    assert check(True) == Readiness(True)
    assert tfs.calls == asked
    tfs.up = False
    now[0] += 1.5
    assert check(True) == Readiness(False, ("TFS does not answer: refused",))
    assert check(False).reasons == ("not converged yet since the reconciler started",)


def _labels(state: DesiredState | None) -> dict[str, dict[str, int]]:
    assert state is not None
    return {m.name: m.label_map for m in state.models}


def test_judged_keeps_what_both_ask_for_so_a_change_adds_only_once_live() -> None:
    head = b"apiVersion: tfs-reconciler/v1\nmodels:\n"
    before = parse_documents(
        [
            ("a.yaml", head + b"  animals:\n    versions: [1, 2, 3]\n"
             b"    labels: {deprecated: 1, stable: 2}\n"),
            ("b.yaml", head + b"  plants:\n    versions: [1]\n"),
        ]
    )  # fmt: skip
    after = parse_documents(
        [
            ("a.yaml", head + b"  animals:\n    versions: [2, 3, 4]\n"
             b"    labels: {stable: 4, canary: 3}\n"),
            ("c.yaml", head + b"  iris:\n    versions: [1]\n"),
        ]
    )  # fmt: skip
    # Being applied: what it adds (canary, iris) not yet; what it removes (deprecated, plants)
    # no longer; what both name (stable) still, whatever version it resolves to.
    assert _labels(judged(before, after)) == {"animals": {"stable": 2}}
    assert judged(before, None) == before  # the current one unreadable: the last in sync
    assert judged(None, after) is None  # never in sync: nothing to judge yet
    assert _labels(judged(after, after)) == _labels(after)  # once live, all of it
