"""The fleet daemon's pass decisions, on the in-memory fleet of test_fleet_rollout."""

from __future__ import annotations

from pathlib import Path

from reconciler.fleet_daemon import FleetDaemon
from reconciler.fleet_file import FleetSpec
from reconciler.fleet_rollout import FleetResult
from reconciler.settings import Settings
from reconciler.testing.fakes import FakeClock
from unit.test_fleet_rollout import ROLLOUT, Fleet, fleet, promote

__all__ = ["fleet"]  # the fixture


def daemon(tmp_path: Path, clock: FakeClock) -> FleetDaemon:
    return FleetDaemon(tmp_path / "fleet.yaml", Settings(state_dir=tmp_path / "state"), clock=clock)


def test_a_halted_rollout_is_not_tried_again_as_it_was_before_its_backoff(
    fleet: Fleet, tmp_path: Path
) -> None:
    promote(fleet)
    fleet.tfs["tfs-c"].broken = {4}
    spec = FleetSpec(fleet.replicas, None, ROLLOUT)
    loop = daemon(tmp_path, fleet.clock)
    first = loop._roll(spec, fleet, fleet.replicas, lambda: False)
    assert first is not None and first.result is FleetResult.ROLLED_BACK
    pushes = len(fleet.pushes)
    assert loop._roll(spec, fleet, fleet.replicas, lambda: False) is None  # deferred
    assert len(fleet.pushes) == pushes
    fleet.clock.sleep(loop.retry_base + 0.1)  # its backoff is over: tried again
    again = loop._roll(spec, fleet, fleet.replicas, lambda: False)
    assert again is not None and again.result is FleetResult.ROLLED_BACK
    assert len(fleet.pushes) > pushes


def test_a_changed_desired_state_is_tried_at_once_despite_a_backoff(
    fleet: Fleet, tmp_path: Path
) -> None:
    promote(fleet)
    fleet.tfs["tfs-c"].broken = {4}
    spec = FleetSpec(fleet.replicas, None, ROLLOUT)
    loop = daemon(tmp_path, fleet.clock)
    loop._roll(spec, fleet, fleet.replicas, lambda: False)
    fleet.want("[1, 2, 3]", {"stable": 3, "canary": 3})  # another change: no load on tfs-c
    outcome = loop._roll(spec, fleet, fleet.replicas, lambda: False)
    assert outcome is not None and outcome.result is FleetResult.DONE, outcome
    assert all(tfs.labels == {"stable": 3, "canary": 3} for tfs in fleet.tfs.values())


def test_a_fleet_in_sync_is_a_quiet_pass(fleet: Fleet, tmp_path: Path) -> None:
    fleet.want("[1, 2, 3]", {"deprecated": 1, "stable": 2, "canary": 3})
    loop = daemon(tmp_path, fleet.clock)
    outcome = loop._roll(
        FleetSpec(fleet.replicas, None, ROLLOUT), fleet, fleet.replicas, lambda: False
    )
    assert outcome is not None and outcome.result is FleetResult.NOOP
    assert fleet.pushes == []


def test_without_self_heal_a_replica_that_drifted_is_left_as_it_is(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.want("[1, 2, 3]", {"deprecated": 1, "stable": 2, "canary": 3})
    fleet.tfs["tfs-b"].labels["stable"] = 3  # moved by hand on TFS: drift
    loop = daemon(tmp_path, fleet.clock)
    loop.self_heal = False
    spec = FleetSpec(fleet.replicas, None, ROLLOUT)
    outcome = loop._roll(spec, fleet, fleet.replicas, lambda: False)
    assert outcome is not None and outcome.result is FleetResult.NOOP
    assert fleet.tfs["tfs-b"].labels["stable"] == 3
    loop.self_heal = True
    outcome = loop._roll(spec, fleet, fleet.replicas, lambda: False)
    assert outcome is not None and outcome.result is FleetResult.DONE, outcome
    assert fleet.tfs["tfs-b"].labels["stable"] == 2
