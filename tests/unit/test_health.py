"""The health assessment: what each state TFS reports means for serving a version, and one
model judged against the versions and labels it should serve. Compared as whole values, so a
changed field or a changed order fails."""

from __future__ import annotations

import pytest

from reconciler.health import (
    LabelHealth,
    ModelHealth,
    Standing,
    VersionHealth,
    assess_model,
    standing,
    version_health,
)
from reconciler.state import LiveModel, LiveVersion
from reconciler.version_state import VersionState

FAILED_LOAD = LiveVersion(4, "END", "DATA_LOSS", "no saved_model.pb")


def served(
    *versions: LiveVersion, labels: dict[str, int] | None = None, name: str = "animals"
) -> LiveModel:
    return LiveModel(name, True, versions, tuple(sorted((labels or {}).items())))


def available(*numbers: int) -> tuple[LiveVersion, ...]:
    return tuple(LiveVersion(n, "AVAILABLE") for n in numbers)


# --- one version ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (None, Standing.NOT_LISTED),
        (LiveVersion(4, "AVAILABLE"), Standing.SERVING),
        (LiveVersion(4, "START"), Standing.IN_PROGRESS),
        (LiveVersion(4, "LOADING"), Standing.IN_PROGRESS),
        (LiveVersion(4, "UNLOADING"), Standing.IN_PROGRESS),
        (LiveVersion(4, "UNKNOWN"), Standing.IN_PROGRESS),
        (LiveVersion(4, "END"), Standing.ENDED),
        (LiveVersion(4, "END", "OK", "unloaded"), Standing.ENDED),
        (FAILED_LOAD, Standing.FAILED),
    ],
)
def test_each_state_tfs_reports_stands_for_one_standing(
    entry: LiveVersion | None, expected: Standing
) -> None:
    assert standing("animals", entry) is expected


def test_an_end_error_seen_before_the_change_is_an_earlier_failure() -> None:
    known = frozenset({("animals", 4, "no saved_model.pb")})
    assert standing("animals", FAILED_LOAD, known) is Standing.FAILED_BEFORE


@pytest.mark.parametrize(
    "known",
    [
        ("iris", 4, "no saved_model.pb"),  # another model
        ("animals", 5, "no saved_model.pb"),  # another version
        ("animals", 4, "permission denied"),  # another error: this load failed anew
    ],
)
def test_an_end_error_unlike_every_earlier_one_is_this_change_failure(
    known: tuple[str, int, str],
) -> None:
    assert standing("animals", FAILED_LOAD, frozenset({known})) is Standing.FAILED


def test_an_earlier_failure_counts_only_for_an_end_with_an_error() -> None:
    known = frozenset({("animals", 4, "")})
    assert standing("animals", LiveVersion(4, "END"), known) is Standing.ENDED
    assert standing("animals", LiveVersion(4, "AVAILABLE"), known) is Standing.SERVING


def test_a_version_not_listed_has_no_state_and_no_error() -> None:
    assert version_health("animals", served(), 4) == VersionHealth(4, Standing.NOT_LISTED)
    assert version_health("animals", None, 4) == VersionHealth(4, Standing.NOT_LISTED, "", "OK", "")


def test_a_listed_version_keeps_what_tfs_said_of_it() -> None:
    health = version_health("animals", served(FAILED_LOAD), 4)
    assert health == VersionHealth(4, Standing.FAILED, "END", "DATA_LOSS", "no saved_model.pb")


def test_the_newest_entry_of_a_version_is_judged() -> None:
    # END entries stay listed after a reload: a version loading again is judged by that.
    live = served(FAILED_LOAD, LiveVersion(4, "LOADING"))
    assert version_health("animals", live, 4) == VersionHealth(4, Standing.IN_PROGRESS, "LOADING")


def test_known_failures_reach_the_version_judged() -> None:
    known = frozenset({("animals", 4, "no saved_model.pb")})
    health = version_health("animals", served(FAILED_LOAD), 4, known)
    assert health.standing is Standing.FAILED_BEFORE


@pytest.mark.parametrize("state", list(VersionState))
def test_only_a_version_in_the_loading_state_is_loading(state: VersionState) -> None:
    health = VersionHealth(4, Standing.IN_PROGRESS, state.value)
    assert health.loading is (state is VersionState.LOADING)


def test_a_label_is_healthy_when_it_resolves_to_the_version_asked() -> None:
    assert LabelHealth("stable", 2, 2).ok is True
    assert LabelHealth("stable", 2, 3).ok is False
    assert LabelHealth("stable", 2, None).ok is False


def test_to_load_counts_the_wanted_versions_not_available() -> None:
    health = ModelHealth(
        "animals",
        True,
        (
            VersionHealth(1, Standing.SERVING),
            VersionHealth(2, Standing.IN_PROGRESS, "LOADING"),
            VersionHealth(3, Standing.NOT_LISTED),
            VersionHealth(4, Standing.FAILED, "END", "DATA_LOSS", "x"),
        ),
    )
    assert health.to_load == 3
    assert ModelHealth("animals", True).to_load == 0


# --- one model ------------------------------------------------------------------------------


def test_a_model_serving_what_is_asked() -> None:
    live = served(*available(1, 2, 3), labels={"stable": 2, "canary": 3})
    health = assess_model("animals", live, (1, 2, 3), (("canary", 3), ("stable", 2)))
    assert health == ModelHealth(
        "animals",
        True,
        (
            VersionHealth(1, Standing.SERVING, "AVAILABLE"),
            VersionHealth(2, Standing.SERVING, "AVAILABLE"),
            VersionHealth(3, Standing.SERVING, "AVAILABLE"),
        ),
        (),
        (),
        (LabelHealth("canary", 3, 3), LabelHealth("stable", 2, 2)),
    )
    assert health.to_load == 0


@pytest.mark.parametrize("live", [None, LiveModel("animals", False)])
def test_a_model_tfs_does_not_know_waits_for_every_version(live: LiveModel | None) -> None:
    health = assess_model("animals", live, (3, 1), (("stable", 3),), (2,))
    assert health == ModelHealth(
        "animals",
        False,
        (VersionHealth(3, Standing.NOT_LISTED), VersionHealth(1, Standing.NOT_LISTED)),
    )
    assert health.to_load == 2


def test_versions_are_judged_in_the_order_asked() -> None:
    live = served(LiveVersion(2, "LOADING"), *available(5))
    health = assess_model("animals", live, (5, 2, 7))
    assert health.wanted == (
        VersionHealth(5, Standing.SERVING, "AVAILABLE"),
        VersionHealth(2, Standing.IN_PROGRESS, "LOADING"),
        VersionHealth(7, Standing.NOT_LISTED),
    )


def test_versions_leaving_are_judged_as_listed() -> None:
    live = served(*available(1, 2), LiveVersion(3, "UNLOADING"), LiveVersion(4, "END"))
    health = assess_model("animals", live, (2,), (), (1, 3, 4, 9))
    assert health.leaving == (
        VersionHealth(1, Standing.SERVING, "AVAILABLE"),
        VersionHealth(3, Standing.IN_PROGRESS, "UNLOADING"),
        VersionHealth(4, Standing.ENDED, "END"),
        VersionHealth(9, Standing.NOT_LISTED),
    )


def test_versions_available_but_not_wanted_are_extra_leaving_or_not() -> None:
    live = served(*available(4, 1, 3), LiveVersion(2, "LOADING"))
    health = assess_model("animals", live, (3,), (), (1,))
    assert health.extra == (1, 4)


def test_labels_are_judged_in_the_order_asked_with_what_tfs_resolves() -> None:
    live = served(*available(1, 2), labels={"stable": 1, "old": 1})
    health = assess_model("animals", live, (1, 2), (("stable", 2), ("canary", 2), ("old", 1)))
    assert health.labels == (
        LabelHealth("stable", 2, 1),
        LabelHealth("canary", 2, None),
        LabelHealth("old", 1, 1),
    )


def test_known_failures_reach_the_versions_wanted_and_leaving() -> None:
    known = frozenset({("animals", 4, "no saved_model.pb"), ("animals", 5, "gone")})
    live = served(FAILED_LOAD, LiveVersion(5, "END", "NOT_FOUND", "gone"))
    health = assess_model("animals", live, (4,), (), (5,), known)
    assert [v.standing for v in health.wanted + health.leaving] == [
        Standing.FAILED_BEFORE,
        Standing.FAILED_BEFORE,
    ]
    fresh = assess_model("animals", live, (4,), (), (5,))
    assert [v.standing for v in fresh.wanted + fresh.leaving] == [Standing.FAILED, Standing.FAILED]


def test_a_model_with_no_wanted_versions_has_nothing_to_load() -> None:
    assert assess_model("animals", served(*available(1)), ()) == ModelHealth(
        "animals", True, (), (), (1,), ()
    )
