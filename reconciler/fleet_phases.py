"""A replica's part of a fleet rollout, as three configs: prepare, flip, cleanup.

A single TFS goes through `plan.phases_between`'s load, relabel and final configs one after
the other. A fleet takes the same three configs apart, because its replicas must move their
labels together: every replica *prepares* (loads the new versions, labels untouched) wave by
wave, then all *flip* (labels move; versions still bridging) at once, then all *clean up*
(versions no longer wanted unload). On one replica the three, without repeats, are exactly
`phases_between`'s phases (tests/unit/test_fleet_phases.py checks it on generated configs).
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.plan_versions import bridging_configs
from reconciler.state import DiskState
from reconciler.tfs_config import ServingConfig


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


def replica_phases(current: ServingConfig, target: ServingConfig, disk: DiskState) -> ReplicaPhases:
    """The prepare, flip and cleanup configs taking one replica from `current` (what it
    serves: `plan.live_basis`) to `target`: `phases_between`'s three, repeats kept."""
    return ReplicaPhases(*bridging_configs(current, target, disk))


def label_map(config: ServingConfig) -> dict[str, dict[str, int]]:
    """Label -> version per model (models without labels left out)."""
    return {m.name: m.label_map for m in config.models if m.labels}
