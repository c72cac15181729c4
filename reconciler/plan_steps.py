"""The steps of a plan: what changes between two configs, one line per change, as `diff`
prints them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reconciler.plan_versions import versions_served
from reconciler.policy import Specific, describe
from reconciler.state import DiskState
from reconciler.tfs_config import ConfigModel, ServingConfig


class StepKind(StrEnum):
    ADD_MODEL = "add_model"
    LOAD_VERSION = "load_version"
    SET_POLICY = "set_policy"
    SET_BASE_PATH = "set_base_path"
    ADD_LABEL = "add_label"
    MOVE_LABEL = "move_label"
    REMOVE_LABEL = "remove_label"
    UNLOAD_VERSION = "unload_version"
    REMOVE_MODEL = "remove_model"


_SIGNS = {
    StepKind.ADD_MODEL: "+",
    StepKind.LOAD_VERSION: "+",
    StepKind.ADD_LABEL: "+",
    StepKind.SET_POLICY: "~",
    StepKind.SET_BASE_PATH: "~",
    StepKind.MOVE_LABEL: "~",
    StepKind.REMOVE_LABEL: "-",
    StepKind.UNLOAD_VERSION: "-",
    StepKind.REMOVE_MODEL: "-",
}


@dataclass(frozen=True)
class Step:
    kind: StepKind
    model: str
    version: int | None = None
    label: str | None = None
    old: str | None = None
    new: str | None = None

    @property
    def sign(self) -> str:
        return _SIGNS[self.kind]

    def __str__(self) -> str:
        what = {
            StepKind.ADD_MODEL: f"add model (base_path {self.new})",
            StepKind.LOAD_VERSION: f"load version {self.version}",
            StepKind.SET_POLICY: f"versions {self.old} -> {self.new}",
            StepKind.SET_BASE_PATH: f"base_path {self.old} -> {self.new}",
            StepKind.ADD_LABEL: f"label {self.label} -> {self.new}",
            StepKind.MOVE_LABEL: f"label {self.label} {self.old} -> {self.new}",
            StepKind.REMOVE_LABEL: f"remove label {self.label} (was {self.old})",
            StepKind.UNLOAD_VERSION: f"unload version {self.version}",
            StepKind.REMOVE_MODEL: "remove model",
        }[self.kind]
        return f"{self.sign} {self.model}: {what}"


def steps_between(current: ServingConfig, target: ServingConfig, disk: DiskState) -> list[Step]:
    """The steps from `current` to `target`, by kind (in StepKind's order), then by model."""
    found: list[Step] = []
    for model in target.models:
        found += _model_steps(current.model(model.name), model, disk)
    for model in current.models:
        if target.model(model.name) is None:
            found.append(Step(StepKind.REMOVE_MODEL, model.name))
    order = {kind: i for i, kind in enumerate(StepKind)}
    return sorted(found, key=lambda step: order[step.kind])  # stable: models keep their order


def _model_steps(before: ConfigModel | None, model: ConfigModel, disk: DiskState) -> list[Step]:
    found = []
    if before is None:
        found.append(Step(StepKind.ADD_MODEL, model.name, new=model.base_path))
    else:
        found += _setting_steps(before, model)
    now, then = set(versions_served(before, disk)), set(versions_served(model, disk))
    found += [Step(StepKind.LOAD_VERSION, model.name, number) for number in sorted(then - now)]
    found += [Step(StepKind.UNLOAD_VERSION, model.name, number) for number in sorted(now - then)]
    return found + _label_steps(before, model)


def _setting_steps(before: ConfigModel, model: ConfigModel) -> list[Step]:
    """A policy change (between two lists of versions it is told by the version steps) and
    a base_path change."""
    found = []
    if before.effective_policy != model.effective_policy and not (
        isinstance(model.policy, Specific) and isinstance(before.policy, Specific)
    ):
        found.append(
            Step(
                StepKind.SET_POLICY,
                model.name,
                old=describe(before.effective_policy),
                new=describe(model.effective_policy),
            )
        )
    if not before.same_base_path(model.base_path):
        found.append(
            Step(StepKind.SET_BASE_PATH, model.name, old=before.base_path, new=model.base_path)
        )
    return found


def _label_steps(before: ConfigModel | None, model: ConfigModel) -> list[Step]:
    found = []
    old_labels = before.label_map if before is not None else {}
    for label, number in model.labels:
        if label not in old_labels:
            found.append(Step(StepKind.ADD_LABEL, model.name, number, label, new=str(number)))
        elif old_labels[label] != number:
            found.append(
                Step(
                    StepKind.MOVE_LABEL,
                    model.name,
                    number,
                    label,
                    old=str(old_labels[label]),
                    new=str(number),
                )
            )
    for label, number in sorted(old_labels.items()):
        if label not in model.label_map:
            found.append(Step(StepKind.REMOVE_LABEL, model.name, number, label, old=str(number)))
    return found
