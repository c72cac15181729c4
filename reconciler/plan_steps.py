"""The steps of a plan: what changes between two configs, one line per change, as `diff`
prints them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reconciler.plan_versions import versions_served
from reconciler.policy import Specific, describe
from reconciler.state import DiskState
from reconciler.tfs_config import ServingConfig


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
    buckets: dict[StepKind, list[Step]] = {kind: [] for kind in StepKind}
    for model in target.models:
        before = current.model(model.name)
        now, then = set(versions_served(before, disk)), set(versions_served(model, disk))
        if before is None:
            buckets[StepKind.ADD_MODEL].append(
                Step(StepKind.ADD_MODEL, model.name, new=model.base_path)
            )
        else:
            if before.effective_policy != model.effective_policy and not (
                isinstance(model.policy, Specific) and isinstance(before.policy, Specific)
            ):
                buckets[StepKind.SET_POLICY].append(
                    Step(
                        StepKind.SET_POLICY,
                        model.name,
                        old=describe(before.effective_policy),
                        new=describe(model.effective_policy),
                    )
                )
            if not before.same_base_path(model.base_path):
                buckets[StepKind.SET_BASE_PATH].append(
                    Step(
                        StepKind.SET_BASE_PATH,
                        model.name,
                        old=before.base_path,
                        new=model.base_path,
                    )
                )
        for number in sorted(then - now):
            buckets[StepKind.LOAD_VERSION].append(Step(StepKind.LOAD_VERSION, model.name, number))
        for number in sorted(now - then):
            buckets[StepKind.UNLOAD_VERSION].append(
                Step(StepKind.UNLOAD_VERSION, model.name, number)
            )
        old_labels = before.label_map if before is not None else {}
        for label, number in model.labels:
            if label not in old_labels:
                buckets[StepKind.ADD_LABEL].append(
                    Step(StepKind.ADD_LABEL, model.name, number, label, new=str(number))
                )
            elif old_labels[label] != number:
                buckets[StepKind.MOVE_LABEL].append(
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
                buckets[StepKind.REMOVE_LABEL].append(
                    Step(StepKind.REMOVE_LABEL, model.name, number, label, old=str(number))
                )
    for model in current.models:
        if target.model(model.name) is None:
            buckets[StepKind.REMOVE_MODEL].append(Step(StepKind.REMOVE_MODEL, model.name))
    return [step for kind in StepKind for step in buckets[kind]]
