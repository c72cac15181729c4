"""A replica's prepare, flip and cleanup configs: plan.phases_between's phases taken apart."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.fleet_phases import label_map, replica_phases
from reconciler.observe import DiskState, ModelDir, VersionDir
from reconciler.plan import phases_between
from reconciler.policy import AllVersions, Latest, Specific, VersionPolicy, served_versions
from reconciler.tfs_config import ConfigModel, ServingConfig

_VERSIONS = st.sets(st.integers(1, 6), min_size=1)
_POLICY: st.SearchStrategy[VersionPolicy] = st.one_of(
    _VERSIONS.map(lambda v: Specific(tuple(sorted(v)))),
    st.builds(Latest, st.integers(1, 4)),
    st.builds(AllVersions),
)
_LABELS = ("stable", "canary")


def _disk(on_disk: dict[str, set[int]]) -> DiskState:
    return DiskState(
        tuple(
            ModelDir(
                name,
                f"/host/{name}",
                True,
                tuple(VersionDir(n, f"/host/{name}/{n}", True) for n in sorted(numbers)),
            )
            for name, numbers in sorted(on_disk.items())
        )
    )


@st.composite
def _config(draw: st.DrawFn, on_disk: dict[str, set[int]]) -> ServingConfig:
    models = []
    for name in sorted(on_disk):
        if not draw(st.booleans()):
            continue
        policy = draw(_POLICY)
        served = served_versions(policy, on_disk[name])
        labels = {}
        if served:
            for label in draw(st.sets(st.sampled_from(_LABELS))):
                labels[label] = draw(st.sampled_from(served))
        base = draw(st.sampled_from((f"/models/{name}", f"/models/{name}-v2")))
        models.append(ConfigModel(name, base, "tensorflow", policy, tuple(sorted(labels.items()))))
    return ServingConfig(tuple(models))


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[ServingConfig, ServingConfig, DiskState]:
    names = draw(st.sets(st.sampled_from(("a", "b", "c")), min_size=1))
    on_disk = {name: draw(_VERSIONS) for name in sorted(names)}
    return draw(_config(on_disk)), draw(_config(on_disk)), _disk(on_disk)


def _without_repeats(
    current: ServingConfig, configs: tuple[ServingConfig, ...]
) -> tuple[ServingConfig, ...]:
    found: list[ServingConfig] = []
    previous = current
    for config in configs:
        if config != previous:
            found.append(config)
            previous = config
    return tuple(found)


@settings(max_examples=300, deadline=None)
@given(_scenario())
def test_prepare_flip_cleanup_without_repeats_are_the_single_tfs_phases(
    scenario: tuple[ServingConfig, ServingConfig, DiskState],
) -> None:
    current, target, disk = scenario
    phases = replica_phases(current, target, disk)
    assert _without_repeats(current, phases.after("")) == phases_between(current, target, disk)


@settings(max_examples=200, deadline=None)
@given(_scenario())
def test_prepare_moves_no_label_and_flip_moves_every_wanted_one(
    scenario: tuple[ServingConfig, ServingConfig, DiskState],
) -> None:
    current, target, disk = scenario
    phases = replica_phases(current, target, disk)
    for model in phases.prepare.models:
        before = current.model(model.name)
        assert set(model.labels) <= set(before.labels if before is not None else ())
    kept = {name: labels for name, labels in label_map(phases.flip).items() if target.model(name)}
    assert kept == label_map(target)  # a model pruned keeps its labels until it leaves


def test_a_promotion_loads_then_moves_then_unloads() -> None:
    disk = _disk({"m": {1, 2}})
    old = ServingConfig(
        (ConfigModel("m", "/models/m", "tensorflow", Specific((1,)), (("stable", 1),)),)
    )
    new = ServingConfig(
        (ConfigModel("m", "/models/m", "tensorflow", Specific((2,)), (("stable", 2),)),)
    )
    phases = replica_phases(old, new, disk)
    assert phases.prepare.models[0].policy == Specific((1, 2))
    assert phases.prepare.models[0].labels == (("stable", 1),)
    assert phases.flip.models[0].policy == Specific((1, 2))
    assert phases.flip.models[0].labels == (("stable", 2),)
    assert phases.cleanup == new
    assert phases.after("prepare") == (phases.flip, new)
    assert phases.after("cleanup") == ()
