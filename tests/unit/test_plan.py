"""The plan: a pure function from desired and observed state to target config, steps, phases."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.desired import DesiredModel, DesiredState, parse_documents
from reconciler.observe import (
    DiskState,
    LiveModel,
    LiveStatus,
    LiveVersion,
    ModelDir,
    Observed,
    VersionDir,
)
from reconciler.plan import Plan, Step, StepKind, labels_needing_a_load, plan
from reconciler.policy import AllVersions, Latest, Specific, VersionPolicy, served_versions
from reconciler.problems import Location
from reconciler.render import plan_json, plan_text
from reconciler.tfs_config import ConfigModel, ServingConfig, parse_config
from unit.lab import LAB_CONFIG

OLD_MODEL = "config { name: 'old' base_path: '/models/old' model_platform: 'tensorflow' }"
OTHER_MODEL = (
    "config { name: 'other' base_path: '/models/other' model_platform: 'tensorflow'"
    " model_version_policy { specific { versions: 1 } } }"
)


def desired(models: str = "", *, prune: bool = False, lab: bool = True) -> DesiredState:
    """The lab's desired state (optionally with its `animals` spec replaced) plus `models`."""
    text = f"apiVersion: tfs-reconciler/v1\nprune: {str(prune).lower()}\nmodels:\n"
    if lab:
        text += (
            "  animals:\n    versions: [1, 2, 3]\n"
            "    labels: {deprecated: 1, stable: 2, canary: 3}\n"
        )
    text += models
    return parse_documents([("desired.yaml", text.encode())])


def animals(spec: str) -> DesiredState:
    return desired(f"  animals:\n{spec}", lab=False)


def disk(models: Mapping[str, Iterable[int]], *, empty: Iterable[int] = ()) -> DiskState:
    """Model folders under /host, each version loadable unless listed in `empty`."""
    return DiskState(
        tuple(
            ModelDir(
                name,
                f"/host/{name}",
                True,
                tuple(
                    VersionDir(v, f"/host/{name}/{v}", v not in set(empty))
                    for v in sorted(versions)
                ),
            )
            for name, versions in sorted(models.items())
        )
    )


def observed(
    config: str | None = LAB_CONFIG,
    on_disk: dict[str, Iterable[int]] | None = None,
    *,
    empty: Iterable[int] = (),
    live: LiveStatus | None = None,
) -> Observed:
    return Observed(
        disk=disk(on_disk if on_disk is not None else {"animals": [1, 2, 3]}, empty=empty),
        config=parse_config(config) if config is not None else None,
        live=live,
    )


def steps(result: Plan) -> list[str]:
    return [str(step) for step in result.steps]


def problems(result: Plan) -> list[str]:
    return [str(problem) for problem in result.problems]


# --- the table of scenarios ----------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    desired: DesiredState
    observed: Observed
    steps: list[str]
    phases: int
    problems: list[str] = field(default_factory=list)
    unmanaged: tuple[str, ...] = ()


SCENARIOS = {
    "the lab is in sync": Scenario(desired(), observed(), steps=[], phases=0),
    "promote canary to stable": Scenario(
        animals("    versions: [1, 2, 3]\n    labels: {deprecated: 2, stable: 3, canary: 3}\n"),
        observed(),
        steps=["~ animals: label deprecated 1 -> 2", "~ animals: label stable 2 -> 3"],
        phases=1,
    ),
    "add version 4 on disk and move canary to it": Scenario(
        animals("    versions: [1, 2, 3, 4]\n    labels: {deprecated: 1, stable: 2, canary: 4}\n"),
        observed(on_disk={"animals": [1, 2, 3, 4]}),
        steps=["+ animals: load version 4", "~ animals: label canary 3 -> 4"],
        phases=2,
    ),
    "retire version 1": Scenario(
        animals("    versions: [2, 3]\n    labels: {stable: 2, canary: 3}\n"),
        observed(),
        steps=["- animals: remove label deprecated (was 1)", "- animals: unload version 1"],
        phases=2,
    ),
    "version missing on disk": Scenario(
        animals("    versions: [1, 2, 3, 4]\n    labels: {stable: 4}\n"),
        observed(),
        steps=[
            "+ animals: load version 4",
            "~ animals: label stable 2 -> 4",
            "- animals: remove label canary (was 3)",
            "- animals: remove label deprecated (was 1)",
        ],
        phases=0,
        problems=[
            "desired.yaml:5:15: models.animals.versions: version 4 is not on disk:"
            " /host/animals/4 does not exist"
        ],
    ),
    "version folder without a SavedModel": Scenario(
        desired(),
        observed(empty=[3]),
        steps=[],
        phases=0,
        problems=[
            "desired.yaml:5:15: models.animals.versions: version 3 has no SavedModel:"
            " /host/animals/3 holds no saved_model.pb or saved_model.pbtxt"
        ],
    ),
    "model folder missing": Scenario(
        desired("  zoo:\n    versions: [1]\n"),
        observed(),
        steps=["+ zoo: add model (base_path /models/zoo)", "+ zoo: load version 1"],
        phases=0,
        problems=[
            "desired.yaml:7:3: models.zoo: model folder /models/zoo does not exist; with a"
            " base_path missing, TFS stops loading and unloading versions of every model (its"
            " file-system poll gives up at the first missing one)"
        ],
    ),
    "prune off leaves an unknown model alone": Scenario(
        desired(),
        observed(LAB_CONFIG.replace("}\n}\n", f"}}\n  {OLD_MODEL}\n}}\n")),
        steps=[],
        phases=0,
        unmanaged=("old",),
    ),
    "prune on removes an unknown model": Scenario(
        desired(prune=True),
        observed(LAB_CONFIG.replace("}\n}\n", f"}}\n  {OLD_MODEL}\n}}\n")),
        steps=["- old: remove model"],
        phases=1,
    ),
    "latest policy serves the highest versions": Scenario(
        animals("    versions: {latest: 2}\n    labels: {stable: 2, canary: 3}\n"),
        observed(),
        steps=[
            "- animals: remove label deprecated (was 1)",
            "- animals: unload version 1",
        ],
        phases=2,
    ),
    "latest policy picks up a new version on disk": Scenario(
        animals("    versions: {latest: 3}\n    labels: {stable: 3}\n"),
        observed(on_disk={"animals": [1, 2, 3, 4]}),
        steps=[
            "+ animals: load version 4",
            "~ animals: label stable 2 -> 3",
            "- animals: remove label canary (was 3)",
            "- animals: remove label deprecated (was 1)",
            "- animals: unload version 1",
        ],
        phases=3,
    ),
    "label on a version latest does not serve": Scenario(
        animals("    versions: {latest: 1}\n    labels: {stable: 2}\n"),
        observed(),
        steps=[
            "- animals: remove label canary (was 3)",
            "- animals: remove label deprecated (was 1)",
            "- animals: unload version 1",
            "- animals: unload version 2",
        ],
        phases=0,
        problems=[
            "desired.yaml:6:22: models.animals.labels.stable: version 2 is not served by"
            " {latest: 1} (served: 3)"
        ],
    ),
    "all policy loads every version on disk": Scenario(
        animals("    versions: all\n    labels: {deprecated: 1, stable: 2, canary: 4}\n"),
        observed(on_disk={"animals": [1, 2, 3, 4]}),
        steps=[
            "+ animals: load version 4",
            "~ animals: label canary 3 -> 4",
        ],
        phases=2,
    ),
    "no models.config yet": Scenario(
        desired(),
        observed(config=None),
        steps=[
            "+ animals: add model (base_path /models/animals)",
            "+ animals: load version 1",
            "+ animals: load version 2",
            "+ animals: load version 3",
            "+ animals: label canary -> 3",
            "+ animals: label deprecated -> 1",
            "+ animals: label stable -> 2",
        ],
        phases=2,
    ),
    "new model beside the lab": Scenario(
        desired("  zoo:\n    versions: [7]\n    labels: {stable: 7}\n"),
        observed(on_disk={"animals": [1, 2, 3], "zoo": [7]}),
        steps=[
            "+ zoo: add model (base_path /models/zoo)",
            "+ zoo: load version 7",
            "+ zoo: label stable -> 7",
        ],
        phases=2,
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_planning_scenario(name: str) -> None:
    scenario = SCENARIOS[name]
    result = plan(scenario.desired, scenario.observed)
    assert steps(result) == scenario.steps
    assert len(result.phases) == scenario.phases
    assert problems(result) == scenario.problems
    assert result.unmanaged == scenario.unmanaged
    if result.phases:
        assert result.phases[-1] == result.target


def test_lab_in_sync_plans_no_change() -> None:
    result = plan(desired(), observed())
    assert result.in_sync
    assert not result.changes_config
    assert result.target == result.current


def test_lab_target_keeps_the_hand_written_base_path() -> None:
    (model,) = plan(desired(), observed()).target.models
    assert model.base_path == "/models/animals/"


def test_label_move_between_served_versions_is_one_phase_equal_to_the_target() -> None:
    result = plan(animals("    versions: [1, 2, 3]\n    labels: {stable: 3}\n"), observed())
    assert result.phases == (result.target,)


def test_new_version_loads_before_a_label_moves_onto_it() -> None:
    result = plan(
        animals("    versions: [1, 2, 3, 4]\n    labels: {stable: 4}\n"),
        observed(on_disk={"animals": [1, 2, 3, 4]}),
    )
    load, relabel = result.phases
    assert load.models[0].policy == Specific((1, 2, 3, 4))
    assert load.models[0].label_map == {"deprecated": 1, "stable": 2, "canary": 3}
    assert relabel.models[0].label_map == {"stable": 4}


def test_labelled_version_unloads_only_after_its_label_has_moved() -> None:
    result = plan(
        animals("    versions: [3, 4]\n    labels: {stable: 4}\n"),
        observed(on_disk={"animals": [1, 2, 3, 4]}),
    )
    load, relabel, final = result.phases
    assert load.models[0].policy == Specific((1, 2, 3, 4))
    assert relabel.models[0].policy == Specific((1, 2, 3, 4))
    assert relabel.models[0].label_map == {"stable": 4}
    assert final.models[0].policy == Specific((3, 4))


def test_blocked_plan_has_no_phases() -> None:
    result = plan(desired(), observed(empty=[2]))
    assert result.blocked
    assert result.phases == ()


def test_platform_change_is_refused() -> None:
    result = plan(animals("    versions: [1, 2, 3]\n    platform: onnx\n"), observed())
    assert problems(result) == [
        "desired.yaml:4:3: models.animals.platform: TFS cannot change a served model's"
        " platform (tensorflow -> onnx); remove the model first, then add it back"
    ]


def test_custom_model_config_is_refused() -> None:
    result = plan(desired(), observed(config="custom_model_config { type_url: 'x/y' }"))
    assert problems(result)[0].startswith("models.config: custom_model_config: this models.config")


def test_unmanaged_model_keeps_its_entry_in_the_target() -> None:
    result = plan(desired(), observed(LAB_CONFIG.replace("}\n}\n", f"}}\n  {OLD_MODEL}\n}}\n")))
    assert [m.name for m in result.target.models] == ["animals", "old"]
    assert not result.changes_config


def test_unmanaged_fields_of_a_managed_model_are_kept() -> None:
    config = LAB_CONFIG.replace("model_platform:", "model_type: TENSORFLOW\n    model_platform:")
    result = plan(animals("    versions: [1, 2, 3]\n    labels: {stable: 3}\n"), observed(config))
    assert result.target.models[0].unmanaged == parse_config(config).models[0].unmanaged
    assert result.target.models[0].unmanaged


# --- which models a plan touches ----------------------------------------------------------------


def test_a_plan_touches_only_the_models_it_changes() -> None:
    other = "  other:\n    versions: [1]\n"
    promoted = "  animals:\n    versions: [1, 2, 3]\n    labels: {stable: 3}\n" + other
    config = LAB_CONFIG.replace("model_config_list {", "model_config_list {\n" + OTHER_MODEL)
    seen = observed(config, {"animals": [1, 2, 3], "other": [1]})
    assert plan(desired(other), seen).touched == frozenset()
    assert plan(desired(promoted, lab=False), seen).touched == frozenset({"animals"})


def test_a_plan_touches_a_drifted_model_and_a_removed_one() -> None:
    status = live((1, "AVAILABLE"), (2, "AVAILABLE"), (3, "LOADING"), labels=LAB_LABELS)
    assert plan(desired(), observed(live=status)).touched == frozenset({"animals"})
    config = LAB_CONFIG.replace("model_config_list {", "model_config_list {\n" + OLD_MODEL)
    pruned = plan(desired(prune=True), observed(config, {"animals": [1, 2, 3], "old": [1]}))
    assert pruned.touched == frozenset({"old"})


# --- live drift ----------------------------------------------------------------------------------


def live(*versions: tuple[int, str], labels: dict[str, int] | None = None) -> LiveStatus:
    entries = tuple(LiveVersion(v, state) for v, state in versions)
    labelled = tuple(sorted((labels or {}).items()))
    return LiveStatus(True, (LiveModel("animals", True, entries, labelled),))


LAB_LABELS = {"deprecated": 1, "stable": 2, "canary": 3}


def test_live_tfs_serving_the_config_is_no_drift() -> None:
    status = live((1, "AVAILABLE"), (2, "AVAILABLE"), (3, "AVAILABLE"), labels=LAB_LABELS)
    assert plan(desired(), observed(live=status)).in_sync


def test_version_still_loading_is_drift() -> None:
    status = live((1, "AVAILABLE"), (2, "AVAILABLE"), (3, "LOADING"), labels=LAB_LABELS)
    result = plan(desired(), observed(live=status))
    assert [str(d) for d in result.drift] == ["! animals: version 3 is LOADING"]
    assert not result.in_sync


def test_label_tfs_resolves_elsewhere_is_drift() -> None:
    labels = {**LAB_LABELS, "stable": 3}
    status = live((1, "AVAILABLE"), (2, "AVAILABLE"), (3, "AVAILABLE"), labels=labels)
    result = plan(desired(), observed(live=status))
    assert [str(d) for d in result.drift] == [
        "! animals: label stable resolves to 3, config says 2"
    ]


def test_unreachable_tfs_is_not_drift() -> None:
    result = plan(desired(), observed(live=LiveStatus(reachable=False, error="refused")))
    assert result.in_sync


# --- determinism ---------------------------------------------------------------------------------


def test_same_inputs_render_byte_identical_plans() -> None:
    def render() -> tuple[str, str]:
        result = plan(
            animals("    versions: {latest: 3}\n    labels: {stable: 4, canary: 3}\n"),
            observed(
                LAB_CONFIG.replace("}\n}\n", f"}}\n  {OLD_MODEL}\n}}\n"),
                on_disk={"animals": [4, 2, 3, 1], "old": [1]},
            ),
        )
        return plan_text(result, "models.config"), json.dumps(
            plan_json(result, "models.config", {}), sort_keys=False
        )

    assert render() == render()


# --- the key safety invariant, over random scenarios ---------------------------------------------

_VERSIONS = st.sets(st.integers(1, 6), min_size=1)
_POLICY: st.SearchStrategy[VersionPolicy] = st.one_of(
    _VERSIONS.map(lambda v: Specific(tuple(sorted(v)))),
    st.builds(Latest, st.integers(1, 4)),
    st.builds(AllVersions),
)
_LABELS = ("stable", "canary", "deprecated")


@st.composite
def _labelled(draw: st.DrawFn, policy: VersionPolicy, on_disk: set[int]) -> dict[str, int]:
    served = served_versions(policy, on_disk)
    if not served:
        return {}
    names = draw(st.sets(st.sampled_from(_LABELS)))
    return {name: draw(st.sampled_from(served)) for name in sorted(names)}


def _serving_some(
    on_disk: set[int], *, only_on_disk: bool = False
) -> st.SearchStrategy[VersionPolicy]:
    """Policies serving at least one version (and, if asked, only versions on disk)."""

    def fits(policy: VersionPolicy) -> bool:
        if only_on_disk and isinstance(policy, Specific) and not set(policy.versions) <= on_disk:
            return False
        return bool(served_versions(policy, on_disk))

    return _POLICY.filter(fits)


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[DesiredState, Observed]:
    names = draw(st.sets(st.sampled_from(("a", "b", "c")), min_size=1))
    on_disk = {name: draw(_VERSIONS) for name in sorted(names)}
    current = []
    for name in sorted(names):
        if draw(st.booleans()):
            policy = draw(_serving_some(on_disk[name]))
            labels = draw(_labelled(policy, on_disk[name]))
            current.append(
                ConfigModel(
                    name, f"/models/{name}", "tensorflow", policy, tuple(sorted(labels.items()))
                )
            )
    prune = draw(st.booleans())
    wanted = []
    for name in sorted(names):
        if draw(st.booleans()):
            policy = draw(_serving_some(on_disk[name], only_on_disk=True))
            labels = draw(_labelled(policy, on_disk[name]))
            wanted.append(
                DesiredModel(
                    name=name,
                    policy=policy,
                    labels=tuple(sorted(labels.items())),
                    base_path=f"/models/{name}",
                    platform="tensorflow",
                    location=Location("d.yaml", 1, 1),
                )
            )
    state = DesiredState(tuple(wanted), prune=prune)
    has_file = bool(current) or draw(st.booleans())
    config = ServingConfig(tuple(current)) if has_file else None
    return state, Observed(disk(on_disk), config)


def _served_in(config: ServingConfig, name: str, observed_state: Observed) -> set[int]:
    model = config.model(name)
    if model is None:
        return set()
    folder = observed_state.disk.model(name)
    return set(served_versions(model.effective_policy, folder.numbers if folder else ()))


@settings(max_examples=200, deadline=None)
@given(_scenario())
def test_no_phase_labels_an_unserved_version_or_unloads_a_labelled_one(
    scenario: tuple[DesiredState, Observed],
) -> None:
    state, seen = scenario
    result = plan(state, seen)
    assert not result.problems
    if not result.changes_config:
        return
    assert result.phases[-1] == result.target
    previous = seen.config or ServingConfig()
    for phase in result.phases:
        for model in phase.models:
            served_before = _served_in(previous, model.name, seen)
            assert set(model.label_map.values()) <= served_before, (
                f"{model.name}: labels {model.label_map} on versions not served before"
                f" ({sorted(served_before)})"
            )
            if previous.model(model.name) is not None:
                labelled_before = set(previous.model(model.name).label_map.values())  # type: ignore[union-attr]
                served_now = _served_in(phase, model.name, seen)
                assert labelled_before <= served_now, (
                    f"{model.name}: unloads labelled versions {labelled_before - served_now}"
                )
        previous = phase


def test_label_move_onto_an_unserved_version_takes_at_least_two_phases() -> None:
    result = plan(
        animals("    versions: [1, 2, 3, 5]\n    labels: {stable: 5}\n"),
        observed(on_disk={"animals": [1, 2, 3, 5]}),
    )
    assert len(result.phases) >= 2
    assert 5 not in result.phases[0].models[0].label_map.values()


@st.composite
def _scenario_with_live(draw: st.DrawFn) -> tuple[DesiredState, Observed]:
    """As above, with TFS serving only part of what the file says (a reload not yet taken)."""
    state, seen = draw(_scenario())
    models = []
    for model in (seen.config or ServingConfig()).models:
        served = sorted(_served_in(seen.config or ServingConfig(), model.name, seen))
        available = draw(st.sets(st.sampled_from(served))) if served else set()
        versions = tuple(LiveVersion(v, "AVAILABLE") for v in sorted(available))
        labels = tuple((lb, v) for lb, v in model.labels if v in available)
        models.append(LiveModel(model.name, True, versions, labels))
    return state, Observed(seen.disk, seen.config, LiveStatus(True, tuple(models)))


def _live_served(seen: Observed) -> ServingConfig:
    """What the live status says TFS serves, as a config (the first phase's predecessor)."""
    assert seen.live is not None
    return ServingConfig(
        tuple(
            ConfigModel(m.name, "", policy=Specific(m.available), labels=m.labels)
            for m in seen.live.models
            if m.found
        )
    )


@settings(max_examples=100, deadline=None)
@given(_scenario_with_live())
def test_phases_are_safe_from_what_tfs_really_serves(
    scenario: tuple[DesiredState, Observed],
) -> None:
    state, seen = scenario
    result = plan(state, seen)
    if not result.phases:
        return
    assert result.phases[-1] == result.target
    previous = _live_served(seen)
    for phase in result.phases:
        for model in phase.models:
            served_before = _served_in(previous, model.name, seen)
            assert set(model.label_map.values()) <= served_before
            before = previous.model(model.name)
            if before is not None:
                assert set(before.label_map.values()) <= _served_in(phase, model.name, seen)
        previous = phase


# --- a file that lost what TFS serves (emptied by hand, caught half-written) ---------------------

SERVING_LAB = live((1, "AVAILABLE"), (2, "AVAILABLE"), (3, "AVAILABLE"), labels=LAB_LABELS)


@pytest.mark.parametrize("file", ["", "model_config_list {}\n", None])
def test_a_repair_of_an_emptied_file_keeps_every_label_tfs_serves_in_every_phase(
    file: str | None,
) -> None:
    """Emptied in place, edited to an empty list, or deleted: TFS still serves the lab."""
    result = plan(desired(), observed(file, live=SERVING_LAB))
    assert result.phases, "the file differs from the target: a repair is planned"
    for phase in result.phases:
        (model,) = phase.models
        assert model.label_map == LAB_LABELS, f"a phase drops labels: {model.labels}"


def test_a_model_the_file_lost_is_put_back_as_the_last_apply_wrote_it() -> None:
    lab = parse_config(LAB_CONFIG)
    seen = replace(observed("", live=SERVING_LAB), applied=lab)
    result = plan(desired(), seen)
    assert result.target == lab  # base_path '/models/animals/', trailing slash and all
    assert result.phases == (lab,)


def test_without_a_record_of_the_last_apply_a_lost_model_takes_the_desired_base_path() -> None:
    result = plan(desired(), observed("", live=SERVING_LAB))
    assert result.target.models[0].base_path == "/models/animals"


def test_a_lost_model_is_not_put_back_from_an_apply_that_served_it_from_elsewhere() -> None:
    elsewhere = parse_config(LAB_CONFIG.replace("/models/animals/", "/models/zoo"))
    seen = replace(observed("", live=SERVING_LAB), applied=elsewhere)
    assert plan(desired(), seen).target.models[0].base_path == "/models/animals"


@st.composite
def _scenario_file_lost(draw: st.DrawFn) -> tuple[DesiredState, Observed]:
    """TFS serves what the file said; then the file lost some of its models (or all)."""
    state, seen = draw(_scenario_with_live())
    config = seen.config or ServingConfig()
    kept = tuple(m for m in config.models if draw(st.booleans()))
    return state, replace(seen, config=ServingConfig(kept))


@settings(max_examples=150, deadline=None)
@given(_scenario_file_lost())
def test_no_phase_drops_a_label_tfs_serves_that_the_target_keeps(
    scenario: tuple[DesiredState, Observed],
) -> None:
    state, seen = scenario
    result = plan(state, seen)
    assert seen.live is not None
    for served in seen.live.models:
        wanted = result.target.model(served.name)
        if wanted is None:
            continue
        kept = {label for label, _ in served.labels} & set(wanted.label_map)
        for number, phase in enumerate(result.phases, start=1):
            model = phase.model(served.name)
            assert model is not None and kept <= set(model.label_map), (
                f"phase {number} of {len(result.phases)} drops labels of {served.name}: "
                f"{sorted(kept - set(model.label_map if model else {}))}"
            )


# --- a base_path change ---------------------------------------------------------------------------

MOVED = "    versions: [4]\n    base_path: /models/zoo\n    labels: {stable: 4}\n"


def test_a_base_path_change_that_would_strand_labels_is_refused() -> None:
    # The disk scan reads the new folder (/host/animals here stands for /models/zoo).
    result = plan(animals(MOVED), observed(on_disk={"animals": [4]}))
    assert result.blocked and result.phases == ()
    (problem,) = problems(result)
    assert problem.startswith(
        "desired.yaml:6:16: models.animals.base_path: base_path /models/animals/ -> /models/zoo:"
        " label(s) canary, deprecated, stable point at version(s) 1, 2, 3, which are not in"
        " /host/animals; TFS serves a model from one folder"
    )


def test_what_tfs_serves_decides_which_labels_a_base_path_change_would_strand() -> None:
    serving = live((2, "AVAILABLE"), (3, "AVAILABLE"), labels={"stable": 3})
    result = plan(animals(MOVED), observed(on_disk={"animals": [4]}, live=serving))
    assert "label(s) stable point at version(s) 3, which" in problems(result)[0]


def test_a_base_path_change_drops_unlabelled_versions_left_behind_first() -> None:
    """2 is not in the new folder and no label points at it: it goes with the move, while
    3 keeps serving `stable` and 4 loads before `canary` points at it."""
    current = """\
model_config_list {
  config {
    name: 'animals'
    base_path: '/models/animals/'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 2 versions: 3 } }
    version_labels { key: 'stable' value: 3 }
  }
}
"""
    wanted = (
        "    versions: [3, 4]\n    base_path: /models/zoo\n    labels: {stable: 3, canary: 4}\n"
    )
    result = plan(animals(wanted), observed(current, on_disk={"animals": [3, 4]}))
    assert not result.blocked, problems(result)
    load, relabel = result.phases
    assert load.models[0].base_path == "/models/zoo"
    assert (load.models[0].policy, load.models[0].label_map) == (Specific((3, 4)), {"stable": 3})
    assert relabel.models[0].label_map == {"stable": 3, "canary": 4}


def test_a_labelled_model_under_latest_or_all_is_pinned_to_the_versions_on_disk() -> None:
    """TFS would serve a new folder under latest on its own and drop the oldest version,
    labelled or not; pinned, versions change only through a plan, in safe phases."""
    result = plan(
        animals("    versions: {latest: 2}\n    labels: {stable: 3}\n"),
        observed(on_disk={"animals": [1, 2, 3]}),
    )
    (model,) = result.target.models
    assert model.policy == Specific((2, 3))


def test_an_unlabelled_model_under_latest_keeps_the_policy_for_tfs_to_follow() -> None:
    result = plan(animals("    versions: {latest: 2}\n"), observed(on_disk={"animals": [1, 2, 3]}))
    assert result.target.models[0].policy == Latest(2)


# --- a missing base_path stops TFS's file-system poll for every model (issue 9) ------------------


def _with_old_model_folder(state: Observed, *, exists: bool, outside: bool = False) -> Observed:
    old = ModelDir("old", "/host/old", exists, outside=outside)
    return replace(state, disk=DiskState((*state.disk.models, old)))


def test_an_unmanaged_model_whose_folder_is_missing_blocks_the_plan() -> None:
    """file_system_storage_path_source.cc PollFileSystemForConfig returns at the first servable
    whose base path is missing: no model gets new versions until it is back, managed or not."""
    config = LAB_CONFIG.replace("}\n}\n", f"}}\n  {OLD_MODEL}\n}}\n")
    state = _with_old_model_folder(observed(config), exists=False)
    result = plan(animals("    versions: [1, 2, 3]\n    labels: {stable: 3}\n"), state)
    assert result.blocked and result.phases == ()
    (problem,) = problems(result)
    assert problem.startswith("models.config: old: base_path /models/old: model folder /host/old")
    assert "TFS stops loading and unloading versions of every model" in problem


def test_a_pruned_model_whose_folder_is_missing_blocks_the_plan_it_stays_in_for_a_phase() -> None:
    config = LAB_CONFIG.replace("}\n}\n", f"}}\n  {OLD_MODEL}\n}}\n")
    state = _with_old_model_folder(observed(config, {"animals": [1, 2, 3, 4]}), exists=False)
    spec = "    versions: [1, 2, 3, 4]\n    labels: {stable: 4}\n"
    result = plan(desired(f"  animals:\n{spec}", prune=True, lab=False), state)
    assert result.blocked, result.phases
    assert any("old: base_path /models/old" in p for p in problems(result))


def test_a_base_path_outside_the_models_folder_is_not_judged() -> None:
    config = LAB_CONFIG.replace("}\n}\n", f"}}\n  {OLD_MODEL}\n}}\n")
    state = _with_old_model_folder(observed(config), exists=False, outside=True)
    result = plan(animals("    versions: [1, 2, 3]\n    labels: {stable: 3}\n"), state)
    assert not result.blocked and result.phases


def _with_versions(*extra: VersionDir) -> Observed:
    state = observed(on_disk={"animals": [1, 2, 3]})
    (animals_dir,) = state.disk.models
    ordered = sorted((*animals_dir.versions, *extra), key=lambda v: (v.version, v.path))
    folder = replace(animals_dir, versions=tuple(ordered))
    return replace(state, disk=DiskState((folder,)))


def test_a_plain_file_with_a_version_s_name_is_a_problem() -> None:
    """file_system_storage_path_source.cc: every child whose name parses is a version, a
    plain file too; TFS would try to load it and fail."""
    state = _with_versions(VersionDir(7, "/host/animals/7", False, plain_file=True))
    result = plan(desired(), state)
    assert result.blocked
    assert any(
        "/host/animals/7 is a plain file with a version's name: TFS takes it for version 7" in p
        for p in problems(result)
    )


def test_two_folders_naming_one_version_are_a_problem() -> None:
    state = _with_versions(VersionDir(2, "/host/animals/0002", True))
    result = plan(desired(), state)
    assert result.blocked
    assert any("0002 and 2 in /host/animals both name version 2" in p for p in problems(result))


# --- problems and steps told whole (each field of each value checked) ------------------------


def test_version_name_problems_say_where_which_field_and_what_to_do() -> None:
    state = _with_versions(
        VersionDir(7, "/host/animals/7", False, plain_file=True),
        VersionDir(2, "/host/animals/0002", True),
    )
    assert sorted(problems(plan(desired(), state))) == [
        "desired.yaml:5:15: models.animals.versions: /host/animals/7 is a plain file with a"
        " version's name: TFS takes it for version 7 and fails to load it; remove or rename it",
        "desired.yaml:5:15: models.animals.versions: 0002 and 2 in /host/animals both name"
        " version 2 (TFS reads a version folder's name as a number); keep one",
    ]


def test_a_policy_serving_nothing_from_its_folder_is_told_whole() -> None:
    result = plan(animals("    versions: {latest: 2}\n"), observed(on_disk={"animals": []}))
    assert problems(result) == [
        "desired.yaml:5:15: models.animals.versions: no version folders in /host/animals for"
        " {latest: 2}"
    ]


def test_a_version_refused_says_why_and_one_without_a_saved_model_says_so() -> None:
    state = observed()
    (folder,) = state.disk.models
    versions = (
        folder.versions[0],
        VersionDir(2, "/host/animals/2", False, refused="leads out of /host"),
        VersionDir(3, "/host/animals/3", False),
    )
    result = plan(desired(), replace(state, disk=DiskState((replace(folder, versions=versions),))))
    assert problems(result) == [
        "desired.yaml:5:15: models.animals.versions: version 2 has no SavedModel:"
        " /host/animals/2 leads out of /host",
        "desired.yaml:5:15: models.animals.versions: version 3 has no SavedModel:"
        " /host/animals/3 holds no saved_model.pb or saved_model.pbtxt",
    ]


def test_a_change_of_policy_kind_and_of_base_path_are_steps_of_their_own() -> None:
    result = plan(
        animals("    versions: {latest: 3}\n    base_path: /models/zoo\n"),
        observed(on_disk={"animals": [1, 2, 3]}),
    )
    assert [s for s in result.steps if s.kind in (StepKind.SET_POLICY, StepKind.SET_BASE_PATH)] == [
        Step(StepKind.SET_POLICY, "animals", old="[1, 2, 3]", new="{latest: 3}"),
        Step(StepKind.SET_BASE_PATH, "animals", old="/models/animals/", new="/models/zoo"),
    ]


@pytest.mark.parametrize(
    ("before", "after", "steps"),
    [
        ("specific { versions: 1 versions: 2 }", "[1, 2]", []),  # said by load/unload steps
        ("latest { num_versions: 2 }", "[1, 2]", ["~ animals: versions {latest: 2} -> [1, 2]"]),
        ("all {}", "{latest: 2}", ["~ animals: versions all -> {latest: 2}"]),
    ],
)
def test_a_policy_step_is_planned_unless_both_policies_list_versions(
    before: str, after: str, steps: list[str]
) -> None:
    config = (
        "model_config_list { config { name: 'animals' base_path: '/models/animals'"
        f" model_platform: 'tensorflow' model_version_policy {{ {before} }} }} }}"
    )
    result = plan(animals(f"    versions: {after}\n"), observed(config, {"animals": [1, 2]}))
    assert [str(s) for s in result.steps if s.kind is StepKind.SET_POLICY] == steps


def test_labels_needing_a_load_are_those_set_on_a_version_not_served_now() -> None:
    state = observed(on_disk={"animals": [1, 2, 3, 4], "zoo": [1]})
    change = parse_documents(
        [
            (
                "desired.yaml",
                b"apiVersion: tfs-reconciler/v1\nmodels:\n"
                b"  animals:\n    versions: [1, 2, 3, 4]\n"
                b"    labels: {deprecated: 1, stable: 3, canary: 4}\n"
                b"  zoo:\n    versions: [1]\n    labels: {stable: 1}\n",
            )
        ]
    )
    result = plan(change, state)
    assert labels_needing_a_load(result, state.disk) == (
        "animals: label canary -> 4",
        "zoo: label stable -> 1",
    )  # stable 2 -> 3 moves onto a version served now
    assert labels_needing_a_load(plan(desired(), observed()), observed().disk) == ()
