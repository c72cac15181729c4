"""The pure convergence check: what a config asks of TFS, and whether live status meets it."""

from __future__ import annotations

from reconciler.convergence import (
    Expectation,
    Progress,
    assess,
    end_failures,
    expectations,
    still_known,
)
from reconciler.observe import DiskState, LiveModel, LiveStatus, LiveVersion, ModelDir, VersionDir
from reconciler.policy import Latest, Specific
from reconciler.tfs_config import ConfigModel, ServingConfig


def disk(*numbers: int, name: str = "animals") -> DiskState:
    versions = tuple(VersionDir(n, f"/m/{name}/{n}", True) for n in numbers)
    return DiskState((ModelDir(name, f"/m/{name}", True, versions),))


def config(
    versions: tuple[int, ...] | None, labels: dict[str, int] | None = None, name: str = "animals"
) -> ServingConfig:
    policy = Specific(versions) if versions is not None else Latest(1)
    model = ConfigModel(
        name=name,
        base_path=f"/models/{name}",
        platform="tensorflow",
        policy=policy,
        labels=tuple(sorted((labels or {}).items())),
    )
    return ServingConfig((model,))


def live(
    *versions: tuple[int, str] | tuple[int, str, str],
    labels: dict[str, int] | None = None,
    name: str = "animals",
) -> LiveStatus:
    entries = tuple(
        LiveVersion(v[0], v[1], "DATA_LOSS" if len(v) > 2 else "OK", v[2] if len(v) > 2 else "")
        for v in versions
    )
    model = LiveModel(name, True, entries, tuple(sorted((labels or {}).items())))
    return LiveStatus(True, (model,))


LAB = config((1, 2, 3), {"deprecated": 1, "stable": 2, "canary": 3})
LAB_LIVE_LABELS = {"deprecated": 1, "stable": 2, "canary": 3}


# --- expectations -------------------------------------------------------------------------


def test_expectations_of_the_lab_ask_for_its_versions_and_labels() -> None:
    (want,) = expectations(LAB, None, disk(1, 2, 3))
    assert want == Expectation(
        "animals", (1, 2, 3), (), (("canary", 3), ("deprecated", 1), ("stable", 2))
    )


def test_expectations_name_the_versions_that_must_go() -> None:
    (want,) = expectations(config((2, 3)), LAB, disk(1, 2, 3))
    assert want.serve == (2, 3) and want.gone == (1,)


def test_expectations_follow_the_policy_on_disk() -> None:
    (want,) = expectations(config(None), config((1, 2, 3)), disk(1, 2, 3, 4))
    assert want.serve == (4,) and want.gone == (1, 2, 3)


def test_a_model_left_out_of_the_config_must_have_gone() -> None:
    previous = ServingConfig((*LAB.models, *config((1,), name="iris").models))
    both = DiskState((*disk(1, 2, 3).models, *disk(1, name="iris").models))
    wanted = expectations(LAB, previous, both)
    assert Expectation("iris", (), (1,)) in wanted


# --- assess -------------------------------------------------------------------------------


def test_the_lab_live_is_done() -> None:
    wanted = expectations(LAB, None, disk(1, 2, 3))
    progress = assess(
        wanted, live((3, "AVAILABLE"), (2, "AVAILABLE"), (1, "AVAILABLE"), labels=LAB_LIVE_LABELS)
    )
    assert progress.done and progress.pending == () and progress.failures == ()


def test_a_loading_version_is_pending_with_its_state() -> None:
    wanted = expectations(config((1, 2, 3, 4)), LAB, disk(1, 2, 3, 4))
    status = live((4, "LOADING"), (3, "AVAILABLE"), (2, "AVAILABLE"), (1, "AVAILABLE"))
    progress = assess(wanted, status)
    assert not progress.done
    assert progress.pending == ("animals version 4 is LOADING",)


def test_a_version_not_listed_yet_is_pending() -> None:
    wanted = expectations(config((1, 2, 3, 4)), LAB, disk(1, 2, 3, 4))
    progress = assess(wanted, live((3, "AVAILABLE"), (2, "AVAILABLE"), (1, "AVAILABLE")))
    assert progress.pending == ("animals version 4 is not listed yet",)


def test_a_label_not_yet_moved_is_pending() -> None:
    target = config((1, 2, 3), {"stable": 3})
    progress = assess(
        expectations(target, LAB, disk(1, 2, 3)),
        live((3, "AVAILABLE"), (2, "AVAILABLE"), (1, "AVAILABLE"), labels={"stable": 2}),
    )
    assert progress.pending == ("animals label stable resolves to 2, wanted 3",)


def test_an_unknown_label_is_pending() -> None:
    target = config((1, 2, 3), {"new": 3})
    progress = assess(
        expectations(target, LAB, disk(1, 2, 3)),
        live((3, "AVAILABLE"), (2, "AVAILABLE"), (1, "AVAILABLE")),
    )
    assert progress.pending == ("animals label new is unknown to TFS, wanted 3",)


def test_a_version_still_serving_that_must_go_is_pending_and_end_is_gone() -> None:
    wanted = expectations(config((2, 3)), config((1, 2, 3)), disk(1, 2, 3))
    serving = live((3, "AVAILABLE"), (2, "AVAILABLE"), (1, "UNLOADING"))
    assert assess(wanted, serving).pending == ("animals version 1 is UNLOADING, not unloaded yet",)
    gone = live((3, "AVAILABLE"), (2, "AVAILABLE"), (1, "END"))
    assert assess(wanted, gone).done


def test_a_load_failure_is_a_failure_with_the_tfs_message() -> None:
    wanted = expectations(config((1, 2, 3, 4)), LAB, disk(1, 2, 3, 4))
    status = live(
        (4, "END", "Can't parse saved_model.pb as binary proto"),
        (3, "AVAILABLE"),
        (2, "AVAILABLE"),
        (1, "AVAILABLE"),
    )
    progress = assess(wanted, status)
    assert not progress.done
    assert progress.failures == (
        "animals version 4 failed to load: DATA_LOSS: Can't parse saved_model.pb as binary proto",
    )


def test_a_known_earlier_failure_is_pending_not_a_failure() -> None:
    wanted = expectations(config((1, 2, 3, 4)), LAB, disk(1, 2, 3, 4))
    status = live((4, "END", "old"), (3, "AVAILABLE"), (2, "AVAILABLE"), (1, "AVAILABLE"))
    progress = assess(wanted, status, frozenset({("animals", 4, "old")}))
    assert progress.failures == ()
    assert progress.pending == ("animals version 4 is END (earlier failure)",)


def test_unreachable_tfs_is_pending_not_done() -> None:
    progress = assess(expectations(LAB, None, disk(1, 2, 3)), LiveStatus(False, error="refused"))
    assert not progress.done and progress.pending == ("TFS does not answer: refused",)


def test_a_model_not_loaded_yet_is_pending_and_a_removed_one_is_done() -> None:
    missing = LiveStatus(True, (LiveModel("animals", False),))
    assert assess(expectations(LAB, None, disk(1, 2, 3)), missing).pending == (
        "animals is not loaded yet",
    )
    assert assess((Expectation("animals", (), (1, 2, 3)),), missing).done


def test_status_keeps_end_entries_and_the_newest_live_one_counts() -> None:
    wanted = expectations(config((1, 2, 3, 4)), LAB, disk(1, 2, 3, 4))
    status = live(
        (4, "END", "old failure"), (4, "AVAILABLE"), (3, "AVAILABLE"), (2, "AVAILABLE"),
        (1, "AVAILABLE"),
    )  # fmt: skip
    assert assess(wanted, status).done


# --- earlier failures -----------------------------------------------------------------------


def test_end_failures_lists_only_errors() -> None:
    status = live((4, "END", "broken"), (3, "END"), (2, "AVAILABLE"))
    assert end_failures(status) == frozenset({("animals", 4, "broken")})


def test_a_known_failure_is_forgotten_once_its_version_is_tried_again() -> None:
    known = frozenset({("animals", 4, "broken")})
    assert still_known(known, live((4, "END", "broken"))) == known
    assert still_known(known, live((4, "LOADING"))) == frozenset()
    assert still_known(known, live((4, "END", "another error"))) == frozenset()
    assert still_known(known, LiveStatus(False, error="down")) == known


# --- the whole progress, as one value ---------------------------------------------------------


def test_unreachable_tfs_is_one_pending_item_naming_the_error() -> None:
    progress = assess(expectations(LAB, None, disk(1, 2, 3)), LiveStatus(False, error="refused"))
    assert progress == Progress(False, ("TFS does not answer: refused",))


def test_every_way_of_waiting_is_told_in_order_and_counted() -> None:
    """Two models: each wanted version by where it stands, then those to go, then labels;
    what only TFS's next poll can move is also unpolled; to_load adds up over the models."""
    target = ServingConfig(
        (
            *config((1, 2, 3, 4, 5, 6), {"stable": 2, "canary": 6}).models,
            *config((7, 8), name="iris").models,
        )
    )
    before = ServingConfig((*config((1, 2, 9, 10)).models, *config((6,), name="iris").models))
    on_disk = DiskState((*disk(1, 2, 3, 4, 5, 6, 9, 10).models, *disk(6, 7, 8, name="iris").models))
    animals = LiveModel(
        "animals",
        True,
        (
            LiveVersion(1, "AVAILABLE"),
            LiveVersion(2, "AVAILABLE"),
            LiveVersion(3, "END", "DATA_LOSS", "old"),
            LiveVersion(4, "END"),
            LiveVersion(5, "LOADING"),
            LiveVersion(6, "START"),
            LiveVersion(9, "AVAILABLE"),
            LiveVersion(10, "UNLOADING"),
        ),
        (("stable", 1),),
    )
    iris = LiveModel("iris", True, (LiveVersion(7, "LOADING"), LiveVersion(6, "AVAILABLE")))
    known = frozenset({("animals", 3, "old")})
    progress = assess(
        expectations(target, before, on_disk), LiveStatus(True, (animals, iris)), known
    )
    assert progress == Progress(
        done=False,
        pending=(
            "animals version 3 is END (earlier failure)",
            "animals version 4 is END (unloaded before)",
            "animals version 5 is LOADING",
            "animals version 6 is START",
            "animals version 9 is AVAILABLE, not unloaded yet",
            "animals version 10 is UNLOADING, not unloaded yet",
            "animals label canary is unknown to TFS, wanted 6",
            "animals label stable resolves to 1, wanted 2",
            "iris version 7 is LOADING",
            "iris version 8 is not listed yet",
            "iris version 6 is AVAILABLE, not unloaded yet",
        ),
        unpolled=(
            "animals version 3 is END (earlier failure)",
            "animals version 4 is END (unloaded before)",
            "animals version 9 is AVAILABLE, not unloaded yet",
            "iris version 8 is not listed yet",
            "iris version 6 is AVAILABLE, not unloaded yet",
        ),
        loading=("animals version 5", "iris version 7"),
        to_load=6,
    )
    assert progress.summary == (
        "loading animals version 5, iris version 7; 6 version(s) left to load"
    )


def test_a_failure_is_told_apart_from_what_waits() -> None:
    wanted = expectations(config((1, 2)), None, disk(1, 2))
    status = live((1, "AVAILABLE"), (2, "END", "no saved_model.pb"))
    assert assess(wanted, status) == Progress(
        False, (), ("animals version 2 failed to load: DATA_LOSS: no saved_model.pb",), to_load=1
    )


def test_models_not_loaded_yet_each_add_their_versions_to_load() -> None:
    target = ServingConfig((*config((1, 2)).models, *config((3,), name="iris").models))
    on_disk = DiskState((*disk(1, 2).models, *disk(3, name="iris").models))
    progress = assess(expectations(target, None, on_disk), LiveStatus(True, ()))
    assert progress == Progress(
        False,
        ("animals is not loaded yet", "iris is not loaded yet"),
        unpolled=("animals is not loaded yet", "iris is not loaded yet"),
        to_load=3,
    )


def test_a_model_with_no_folder_on_disk_serves_nothing_under_latest() -> None:
    (want,) = expectations(config(None), None, DiskState(()))
    assert want == Expectation("animals", ())


def test_an_earlier_failure_of_a_model_tfs_no_longer_lists_is_kept() -> None:
    known = frozenset({("iris", 4, "old")})
    assert still_known(known, live((1, "AVAILABLE"))) == known
