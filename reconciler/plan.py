"""The plan: a pure function from desired and observed state to the configs and steps that
make TFS serve what is desired.

A plan's phases are the configs to apply in order. Labels never point at a version that is not
yet AVAILABLE and a labelled version is never unloaded in the same change (TFS accepts the
config, then the label dangles), so a change is split in up to three phases:
  1. load: new versions are added, current labels stay;
  2. relabel: labels move to the (now AVAILABLE) versions;
  3. final: versions no longer wanted are unloaded, pruned models removed.
Phases equal to the one before are dropped, so a pure label move is one phase.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.desired import DesiredModel, DesiredState
from reconciler.plan_drift import Drift, find_drift
from reconciler.plan_problems import (
    STOPS_EVERY_MODEL,
    config_problems,
    desired_problems,
    missing_base_paths,
    move_problem,
)
from reconciler.plan_steps import Step, StepKind, steps_between
from reconciler.plan_versions import live_basis, on_disk, phases_between, versions_served
from reconciler.policy import Specific, served_versions
from reconciler.problems import Location, Problem
from reconciler.state import DiskState, Observed
from reconciler.tfs_config import ConfigModel, ServingConfig, changed_models

__all__ = [
    "STOPS_EVERY_MODEL",
    "Drift",
    "Plan",
    "Step",
    "StepKind",
    "labels_needing_a_load",
    "live_basis",
    "missing_base_paths",
    "phases_between",
    "plan",
    "plan_config",
]


@dataclass(frozen=True)
class Plan:
    current: ServingConfig | None
    target: ServingConfig
    phases: tuple[ServingConfig, ...]
    steps: tuple[Step, ...]
    problems: tuple[Problem, ...] = ()
    drift: tuple[Drift, ...] = ()
    unmanaged: tuple[str, ...] = ()

    @property
    def changes_config(self) -> bool:
        return self.current != self.target

    @property
    def blocked(self) -> bool:
        return bool(self.problems)

    @property
    def touched(self) -> frozenset[str]:
        """The models this plan changes or repairs: only these need watching while it runs."""
        return changed_models(self.current, self.target) | {d.model for d in self.drift}

    @property
    def in_sync(self) -> bool:
        return not self.changes_config and not self.drift and not self.problems


def plan(desired: DesiredState, observed: Observed) -> Plan:
    current = observed.config or ServingConfig()
    problems = list(desired_problems(desired, observed, current))
    target = _target(desired, current, observed.disk, observed.applied)
    steps = tuple(steps_between(current, target, observed.disk))
    drift = tuple(find_drift(current, observed)) if observed.live is not None else ()
    phases: tuple[ServingConfig, ...] = ()
    if not problems and (observed.config != target or drift):
        phases = _phases_to(target, observed)
    managed = {m.name for m in desired.models}  # their missing folders are reported above
    missing = missing_base_paths((target, *phases), observed.disk, skip=managed)
    if missing:
        where = Location(observed.config_path)
        problems.extend(Problem(where, name, message) for name, message in missing)
        phases = ()
    unmanaged = () if desired.prune else tuple(n for n in current.names if desired.model(n) is None)
    return Plan(
        current=observed.config,
        target=target,
        phases=phases,
        steps=steps,
        problems=tuple(sorted(problems)),
        drift=drift,
        unmanaged=unmanaged,
    )


def plan_config(
    observed: Observed, target: ServingConfig, source: str = "the config to roll back to"
) -> Plan:
    """A plan to a given config (a rollback to an earlier one), with the same safe phases.

    Blocked (problems) when a folder the config serves from is gone from disk; `source` names
    the config in those problems (e.g. "history record 3").
    """
    current = observed.config or ServingConfig()
    drift = tuple(find_drift(current, observed)) if observed.live is not None else ()
    problems = list(config_problems(target, observed.disk, source))
    for model in target.models:
        existing = current.model(model.name)
        if existing is not None:
            moved = move_problem(existing, model.base_path, observed, Location(source), model.name)
            problems.extend([moved] if moved is not None else [])
    phases: tuple[ServingConfig, ...] = ()
    if not problems and (observed.config != target or drift):
        phases = _phases_to(target, observed)
    missing = missing_base_paths(phases, observed.disk, skip={m.name for m in target.models})
    if missing:
        where = Location(observed.config_path)
        problems.extend(Problem(where, name, message) for name, message in missing)
        phases = ()
    return Plan(
        current=observed.config,
        target=target,
        phases=phases,
        steps=tuple(steps_between(current, target, observed.disk)),
        problems=tuple(sorted(problems)),
        drift=drift,
    )


def _phases_to(target: ServingConfig, observed: Observed) -> tuple[ServingConfig, ...]:
    basis = live_basis(observed.config or ServingConfig(), observed.live, target)
    phases = phases_between(basis, target, observed.disk, no_file=observed.config is None)
    if not phases or phases[-1] != target:
        phases = (*phases, target)
    return phases


def _target(
    desired: DesiredState,
    current: ServingConfig,
    disk: DiskState,
    applied: ServingConfig | None = None,
) -> ServingConfig:
    models: list[ConfigModel] = []
    for model in current.models:
        wanted = desired.model(model.name)
        if wanted is not None:
            models.append(_target_model(wanted, model, disk))
        elif not desired.prune:
            models.append(model)
    for wanted in desired.models:
        if current.model(wanted.name) is None:
            # Gone from the file (a hand edit, a file caught half-written): put back as the
            # last apply wrote it, base_path spelling and unmanaged fields included.
            before = applied.model(wanted.name) if applied is not None else None
            models.append(_target_model(wanted, before, disk))
    return ServingConfig(models=tuple(models))


def _target_model(
    wanted: DesiredModel, current: ConfigModel | None, disk: DiskState
) -> ConfigModel:
    keep_path = current is not None and current.same_base_path(wanted.base_path)
    policy = wanted.policy
    if wanted.labels and not isinstance(policy, Specific):
        # Pinned: under latest/all, TFS itself would serve a new folder and drop the oldest
        # version, labelled or not (or a folder still being copied). Spelled out, versions
        # change only through a plan, in safe phases; the daemon follows new folders.
        policy = Specific(served_versions(policy, on_disk(disk, wanted.name)))
    return ConfigModel(
        name=wanted.name,
        base_path=current.base_path if current is not None and keep_path else wanted.base_path,
        platform=wanted.platform,
        policy=policy,
        labels=wanted.labels,
        unmanaged=current.unmanaged if current is not None else b"",
    )


def labels_needing_a_load(the_plan: Plan, disk: DiskState) -> tuple[str, ...]:
    """The labels the plan sets on a version the current config does not serve: applied in
    one config, each points at a version TFS has not loaded yet."""
    current = the_plan.current or ServingConfig()
    found = []
    for model in the_plan.target.models:
        before = current.model(model.name)
        served = set(versions_served(before, disk))
        old = before.label_map if before is not None else {}
        for label, number in model.labels:
            if old.get(label) != number and number not in served:
                found.append(f"{model.name}: label {label} -> {number}")
    return tuple(found)
