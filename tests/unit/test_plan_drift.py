"""Drift (live TFS against the config it should serve) and plans to a given config
(rollbacks), as tables: each row one branch, compared as whole values, not as text."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pytest

from reconciler.observe import (
    DiskState,
    LiveModel,
    LiveStatus,
    LiveVersion,
    ModelDir,
    Observed,
    VersionDir,
)
from reconciler.plan import STOPS_EVERY_MODEL, Drift, plan_config
from reconciler.problems import Location, Problem
from reconciler.tfs_config import ServingConfig, parse_config

LABELS = {"deprecated": 1, "stable": 2, "canary": 3}


def config(
    policy: str = "specific { versions: 1 versions: 2 versions: 3 }",
    *,
    labels: Mapping[str, int] = LABELS,
    name: str = "animals",
    base_path: str = "/models/animals",
) -> str:
    entries = "".join(f" version_labels {{ key: '{k}' value: {v} }}" for k, v in labels.items())
    return (
        f"config {{ name: '{name}' base_path: '{base_path}' model_platform: 'tensorflow'"
        f" model_version_policy {{ {policy} }}{entries} }}"
    )


def the_file(*entries: str) -> ServingConfig:
    return parse_config("model_config_list {" + " ".join(entries) + "}")


def folder(name: str, versions: Iterable[int], *, exists: bool = True) -> ModelDir:
    return ModelDir(
        name,
        f"/host/{name}",
        exists,
        tuple(VersionDir(v, f"/host/{name}/{v}", True) for v in sorted(versions)),
    )


def serving(
    *states: tuple[int, str] | tuple[int, str, str],
    labels: Mapping[str, int] = LABELS,
    name: str = "animals",
) -> LiveModel:
    versions = tuple(
        LiveVersion(s[0], s[1], error_message=s[2] if len(s) > 2 else "") for s in states
    )
    return LiveModel(name, True, versions, tuple(sorted(labels.items())))


ALL_THREE = ((1, "AVAILABLE"), (2, "AVAILABLE"), (3, "AVAILABLE"))
ON_DISK = DiskState((folder("animals", [1, 2, 3]),))


@dataclass(frozen=True)
class Row:
    file: ServingConfig
    live: LiveStatus | None
    drift: list[Drift]
    disk: DiskState = ON_DISK


def reachable(*models: LiveModel) -> LiveStatus:
    return LiveStatus(True, models)


DRIFT = {
    "in sync": Row(the_file(config()), reachable(serving(*ALL_THREE)), []),
    "TFS not asked": Row(the_file(config()), None, []),
    "TFS unreachable": Row(the_file(config()), LiveStatus(False, error="refused"), []),
    "TFS unreachable, models read before it stopped answering": Row(
        the_file(config()),
        LiveStatus(False, (LiveModel("animals", False),), error="refused"),
        [],
    ),
    "a model TFS was not asked about, before one that drifted": Row(
        the_file(
            config("specific { versions: 1 }", name="aardvark", labels={}),
            config(),
        ),
        reachable(serving((1, "AVAILABLE"), (2, "AVAILABLE"), (3, "LOADING"))),
        [Drift("animals", "version 3 is LOADING", 3)],
        DiskState((folder("aardvark", [1]), folder("animals", [1, 2, 3]))),
    ),
    "a model not served, then two that drifted: each model is judged": Row(
        the_file(
            config("specific { versions: 1 }", name="aardvark", labels={}),
            config(),
            config("specific { versions: 1 }", name="zebra", labels={}),
        ),
        reachable(
            LiveModel("aardvark", False),
            serving((1, "AVAILABLE"), (2, "AVAILABLE"), (3, "LOADING")),
            serving((1, "AVAILABLE"), (2, "AVAILABLE"), name="zebra", labels={}),
        ),
        [
            Drift("aardvark", "TFS does not serve this model"),
            Drift("animals", "version 3 is LOADING", 3),
            Drift("zebra", "version 2 is AVAILABLE but not configured", 2),
        ],
        DiskState((folder("aardvark", [1]), folder("animals", [1, 2, 3]), folder("zebra", [1, 2]))),
    ),
    "model not served": Row(
        the_file(config()),
        reachable(LiveModel("animals", False)),
        [Drift("animals", "TFS does not serve this model")],
    ),
    "version not loaded, its label unknown": Row(
        the_file(config()),
        reachable(
            serving((1, "AVAILABLE"), (2, "AVAILABLE"), labels={"deprecated": 1, "stable": 2})
        ),
        [
            Drift("animals", "version 3 is not loaded", 3),
            Drift("animals", "label canary is unknown to TFS", 3, "canary"),
        ],
    ),
    "version loading": Row(
        the_file(config()),
        reachable(serving((1, "AVAILABLE"), (2, "AVAILABLE"), (3, "LOADING"))),
        [Drift("animals", "version 3 is LOADING", 3)],
    ),
    "version failed, with TFS's message": Row(
        the_file(config()),
        reachable(serving((1, "AVAILABLE"), (2, "AVAILABLE"), (3, "END", "no SavedModel"))),
        [Drift("animals", "version 3 is END: no SavedModel", 3)],
    ),
    "an older END entry of a version serving again": Row(
        the_file(config()),
        reachable(serving((1, "AVAILABLE"), (2, "AVAILABLE"), (3, "END"), (3, "AVAILABLE"))),
        [],
    ),
    "a version served that the file does not name": Row(
        the_file(config()),
        reachable(serving(*ALL_THREE, (4, "AVAILABLE"))),
        [Drift("animals", "version 4 is AVAILABLE but not configured", 4)],
        DiskState((folder("animals", [1, 2, 3, 4]),)),
    ),
    "a label resolving elsewhere": Row(
        the_file(config()),
        reachable(serving(*ALL_THREE, labels={**LABELS, "stable": 3})),
        [Drift("animals", "label stable resolves to 3, config says 2", 2, "stable")],
    ),
    "latest 2 serves the two newest on disk": Row(
        the_file(config("latest { num_versions: 2 }", labels={})),
        reachable(serving(*ALL_THREE, labels={})),
        [Drift("animals", "version 1 is AVAILABLE but not configured", 1)],
    ),
    "latest, folder gone: what TFS loaded is expected, labels still checked": Row(
        the_file(config("latest { num_versions: 1 }", labels={"stable": 2})),
        reachable(serving((1, "AVAILABLE"), (2, "AVAILABLE"), labels={"stable": 1})),
        [Drift("animals", "label stable resolves to 1, config says 2", 2, "stable")],
        DiskState(()),
    ),
    "all, folder listed but missing: what TFS loaded is expected": Row(
        the_file(config("all {}", labels={})),
        reachable(serving((5, "AVAILABLE"), labels={})),
        [],
        DiskState((folder("animals", [], exists=False),)),
    ),
    "latest, folder on disk without versions: TFS serving one is drift": Row(
        the_file(config("latest { num_versions: 1 }", labels={})),
        reachable(serving((5, "AVAILABLE"), labels={})),
        [Drift("animals", "version 5 is AVAILABLE but not configured", 5)],
        DiskState((folder("animals", []),)),
    ),
    "specific, folder gone: the versions named are expected": Row(
        the_file(config(labels={})),
        reachable(serving((1, "AVAILABLE"), labels={})),
        [
            Drift("animals", "version 2 is not loaded", 2),
            Drift("animals", "version 3 is not loaded", 3),
        ],
        DiskState(()),
    ),
}


@pytest.mark.parametrize("name", DRIFT)
def test_drift(name: str) -> None:
    row = DRIFT[name]
    observed = Observed(row.disk, row.file, row.live)
    result = plan_config(observed, row.file)
    assert list(result.drift) == row.drift
    # Drift alone (the file already says the target) is repaired by pushing the target.
    if not result.problems:  # a folder gone blocks a plan to this config (see below)
        assert bool(result.phases) is bool(row.drift)
        assert result.phases[-1:] == ((row.file,) if row.drift else ())
        assert result.in_sync is (not row.drift)


# --- plans to a given config (a rollback) --------------------------------------------------------

SOURCE = "history record 3"


def test_a_rollback_to_a_config_whose_folders_are_on_disk_is_planned_in_safe_phases() -> None:
    now = the_file(config(labels={**LABELS, "stable": 3}))
    back = the_file(config())
    tfs = reachable(serving(*ALL_THREE, labels={**LABELS, "stable": 3}))
    result = plan_config(Observed(ON_DISK, now, tfs), back, SOURCE)
    assert result.problems == ()
    assert result.current == now and result.target == back
    assert result.phases == (back,)
    assert [str(s) for s in result.steps] == ["~ animals: label stable 3 -> 2"]
    assert result.changes_config and not result.in_sync


def test_a_rollback_to_the_config_in_place_with_tfs_serving_it_is_nothing_to_do() -> None:
    back = the_file(config())
    result = plan_config(Observed(ON_DISK, back, reachable(serving(*ALL_THREE))), back, SOURCE)
    assert result.phases == () and result.steps == () and result.in_sync


def test_a_rollback_with_no_file_yet_writes_the_config() -> None:
    back = the_file(config())
    result = plan_config(Observed(ON_DISK, None), back, SOURCE)
    assert result.current is None
    assert result.phases[-1] == back
    assert str(result.steps[0]) == "+ animals: add model (base_path /models/animals)"


@pytest.mark.parametrize(
    ("disk", "message"),
    [
        (DiskState(()), f"model folder /models/animals does not exist; {STOPS_EVERY_MODEL}"),
        (
            DiskState((folder("animals", [1, 2, 3], exists=False),)),
            f"model folder /host/animals does not exist; {STOPS_EVERY_MODEL}",
        ),
        (
            DiskState((folder("animals", [1, 2]),)),
            "version 3 is not on disk (or has no SavedModel): /host/animals/3",
        ),
    ],
)
def test_a_rollback_to_a_config_whose_folders_are_gone_is_blocked(
    disk: DiskState, message: str
) -> None:
    back = the_file(config())
    result = plan_config(Observed(disk, the_file(config(labels={}))), back, SOURCE)
    assert list(result.problems) == [Problem(Location(SOURCE), "animals", message)]
    assert result.blocked and result.phases == ()


def test_a_version_without_a_saved_model_blocks_a_rollback() -> None:
    empty = ModelDir("animals", "/host/animals", True, (VersionDir(1, "/host/animals/1", False),))
    back = the_file(config("specific { versions: 1 }", labels={}))
    result = plan_config(Observed(DiskState((empty,)), None), back, SOURCE)
    assert [str(p) for p in result.problems] == [
        f"{SOURCE}: animals: version 1 is not on disk (or has no SavedModel): /host/animals/1"
    ]


def test_each_model_of_a_rollback_is_checked_and_the_problems_are_sorted() -> None:
    back = the_file(config(name="zebra", labels={}), config(name="ant", labels={}))
    result = plan_config(Observed(DiskState(()), None), back, SOURCE)
    assert [p.field for p in result.problems] == ["ant", "zebra"]


def test_a_rollback_under_latest_checks_the_versions_latest_serves_from_disk() -> None:
    back = the_file(config("latest { num_versions: 1 }", labels={}))
    fine = plan_config(Observed(ON_DISK, None), back, SOURCE)
    assert fine.problems == ()


def test_a_rollback_moving_base_path_that_would_strand_a_label_is_refused() -> None:
    now = the_file(config())
    back = the_file(
        config("specific { versions: 2 }", base_path="/models/zoo", labels={"stable": 2})
    )
    zoo = DiskState((ModelDir("animals", "/host/zoo", True, folder("animals", [2]).versions),))
    result = plan_config(Observed(zoo, now, reachable(serving(*ALL_THREE))), back, SOURCE)
    (problem,) = result.problems
    assert problem.location == Location(SOURCE)
    assert problem.field == "animals.base_path"
    assert "label(s) canary, deprecated point at version(s) 1, 3" in problem.message
    assert result.phases == ()


def test_a_model_folder_it_cannot_read_blocks_the_plan_naming_why() -> None:
    from reconciler.desired import parse_documents
    from reconciler.plan import plan

    unreadable = ModelDir("animals", "/host/animals", False, error="Permission denied")
    seen = Observed(DiskState((unreadable,)), the_file(config()), reachable(serving(*ALL_THREE)))
    state = parse_documents(
        [("d.yaml", b"apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: [1]\n")]
    )
    result = plan(state, seen)
    assert [p.message for p in result.problems] == [
        "cannot read model folder /host/animals: Permission denied"
    ]
    assert result.blocked and result.phases == ()
    back = plan_config(seen, the_file(config()), SOURCE)
    assert [p.message for p in back.problems] == [
        "cannot read model folder /host/animals: Permission denied"
    ]


def test_the_problems_of_a_rollback_come_sorted_whatever_found_them() -> None:
    now = the_file(config(name="ant"))
    back = the_file(
        config("specific { versions: 2 }", name="ant", base_path="/models/zoo", labels={}),
        config(name="zebra", labels={}),
    )
    zoo = DiskState((ModelDir("ant", "/host/zoo", True, folder("ant", [2]).versions),))
    tfs = reachable(serving(*ALL_THREE, name="ant"))
    result = plan_config(Observed(zoo, now, tfs), back, SOURCE)
    assert [p.field for p in result.problems] == ["ant.base_path", "zebra"]


CANARY_4 = {**LABELS, "canary": 4}


def test_a_rollback_dropping_a_model_whose_folder_is_gone_is_blocked_at_models_config() -> None:
    """The dropped model stays in the phases before the last (version 4 loads before canary
    moves to it): TFS would stop loading every model's versions at its missing folder, so
    nothing is written."""
    old = config("specific { versions: 1 }", labels={}, name="old", base_path="/models/old")
    now = the_file(config(), old)
    back = the_file(
        config("specific { versions: 1 versions: 2 versions: 3 versions: 4 }", labels=CANARY_4)
    )
    disk = DiskState((folder("animals", [1, 2, 3, 4]), folder("old", [1], exists=False)))
    result = plan_config(
        Observed(disk, now, reachable(serving(*ALL_THREE)), config_path="/m/models.config"),
        back,
        SOURCE,
    )
    assert result.problems == (
        Problem(
            Location("/m/models.config"),
            "old",
            f"base_path /models/old: model folder /host/old does not exist; {STOPS_EVERY_MODEL}."
            " Restore the folder, or remove the model from models.config (or from the desired"
            " state, with prune)",
        ),
    )
    assert result.phases == ()


def test_a_rollback_names_the_config_it_rolls_back_to_by_default() -> None:
    result = plan_config(Observed(DiskState(()), None), the_file(config()))
    assert [str(p) for p in result.problems] == [
        "the config to roll back to: animals: model folder /models/animals does not exist;"
        f" {STOPS_EVERY_MODEL}"
    ]
