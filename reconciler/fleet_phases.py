"""A replica's part of a fleet rollout, as three configs: prepare, flip, cleanup.

A single TFS goes through `plan.phases_between`'s load, relabel and final configs one after
the other. A fleet takes the same three configs apart, because its replicas must move their
labels together: every replica *prepares* (loads the new versions, labels untouched) wave by
wave, then all *flip* (labels move; versions still bridging) at once, then all *clean up*
(versions no longer wanted unload). On one replica the three, without repeats, are exactly
`phases_between`'s phases (tests/unit/test_fleet_phases.py checks it on generated configs).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from reconciler.policy import Specific, served_versions
from reconciler.state import DiskState
from reconciler.tfs_config import ConfigModel, ServingConfig


@dataclass(frozen=True)
class ReplicaPhases:
    prepare: ServingConfig  # new versions loaded, labels where they were
    flip: ServingConfig  # labels moved, old and new versions loaded
    cleanup: ServingConfig  # the target: what is no longer wanted unloaded

    def after(self, done: str) -> tuple[ServingConfig, ...]:
        """The configs still to go through after phase `done` ("" for none)."""
        order = ("prepare", "flip", "cleanup")
        configs = (self.prepare, self.flip, self.cleanup)
        start = order.index(done) + 1 if done else 0
        return configs[start:]


def _served(model: ConfigModel | None, disk: DiskState) -> tuple[int, ...]:
    if model is None:
        return ()
    folder = disk.model(model.name)
    return served_versions(model.effective_policy, folder.numbers if folder is not None else ())


def _loadable(disk: DiskState, name: str, number: int) -> bool:
    folder = disk.model(name)
    version = folder.version(number) if folder is not None else None
    return version is not None and version.loadable


def replica_phases(current: ServingConfig, target: ServingConfig, disk: DiskState) -> ReplicaPhases:
    """The prepare, flip and cleanup configs taking one replica from `current` (what it
    serves: `plan.live_basis`) to `target`."""
    prepare: list[ConfigModel] = []
    flip: list[ConfigModel] = []
    for model in target.models:
        before = current.model(model.name)
        if before is None:
            prepare.append(replace(model, labels=()))
            flip.append(model)
            continue
        now, then = _served(before, disk), _served(model, disk)
        if not before.same_base_path(model.base_path):
            now = tuple(n for n in now if _loadable(disk, model.name, n))
        union = tuple(sorted(set(now) | set(then)))
        bridging = model if set(union) == set(then) else replace(model, policy=Specific(union))
        kept = {label: v for label, v in before.labels if v in now}
        prepare.append(replace(bridging, labels=tuple(sorted(kept.items()))))
        flip.append(bridging)
    for model in current.models:  # pruned models leave at cleanup
        if target.model(model.name) is None:
            prepare.append(model)
            flip.append(model)
    return ReplicaPhases(ServingConfig(tuple(prepare)), ServingConfig(tuple(flip)), target)


def label_map(config: ServingConfig) -> dict[str, dict[str, int]]:
    """Label -> version per model (models without labels left out)."""
    return {m.name: m.label_map for m in config.models if m.labels}
