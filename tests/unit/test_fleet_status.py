"""The fleet's status document and text, and where each replica keeps its state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.fleet_file import FleetSpec, Rollout
from reconciler.fleet_replicas import (
    FileFleetLog,
    digest,
    fleet_history,
    fleet_replicas,
    read_serving,
    replica_settings,
    restore_targets,
)
from reconciler.fleet_rollout import FleetOutcome, FleetPlan, FleetResult, Phase, Report, Survey
from reconciler.fleet_status import fleet_document, fleet_text
from reconciler.replica import Replica
from reconciler.settings import Settings
from reconciler.tfs_config import parse_config
from unit.lab import LAB_CONFIG


def replica(name: str, state: str, stable: int, reachable: bool = True) -> dict[str, Any]:
    live = {
        "versions": [{"version": 2, "state": "AVAILABLE"}, {"version": 3, "state": "AVAILABLE"}],
        "labels": {"stable": stable},
    }
    return {
        "name": name,
        "rest": f"http://{name}:8501",
        "state": state,
        "in_sync": state == "in_sync",
        "config_digest": "0123456789ab",
        "commit": "c0ffee" * 7,
        "rollout": {"generation": 4, "phase": "cleanup"},
        "tfs": {"reachable": reachable, "error": None if reachable else "timed out"},
        "models": {"animals": {"live": live, "differences": []}},
        "problems": [],
    }


def test_the_fleet_is_in_sync_only_when_every_replica_is() -> None:
    assert fleet_document([replica("a", "in_sync", 3), replica("b", "in_sync", 3)])["in_sync"]
    document = fleet_document([replica("a", "in_sync", 3), replica("b", "not_in_sync", 3)])
    assert document["state"] == "not_in_sync"
    assert fleet_document([replica("a", "in_sync", 3), replica("b", "unknown", 3)])["state"] == (
        "unknown"
    )
    assert fleet_document([])["state"] == "unknown"


def test_labels_the_replicas_resolve_differently_are_named_per_replica() -> None:
    document = fleet_document(
        [replica("a", "in_sync", 3), replica("b", "not_in_sync", 2), replica("c", "in_sync", 3)]
    )
    assert document["label_disagreements"] == {"animals": {"stable": {"a": 3, "b": 2, "c": 3}}}
    assert "label animals:stable differs across replicas: a->3, b->2, c->3" in fleet_text(document)


def test_the_text_shows_each_replica_with_its_digest_commit_rollout_versions_and_labels() -> None:
    text = fleet_text(fleet_document([replica("tfs-a", "in_sync", 3)]))
    assert text.splitlines() == [
        "fleet: in sync (1 of 1 in sync)",
        "tfs-a: in sync  config 0123456789ab  commit c0ffeec0ffee  rollout 4 (cleanup)",
        "  animals: 2 AVAILABLE, 3 AVAILABLE; labels stable->3",
    ]


def test_an_unreachable_replica_says_so() -> None:
    text = fleet_text(fleet_document([replica("tfs-a", "unknown", 3, reachable=False)]))
    assert "  TFS at http://tfs-a:8501: unreachable (timed out)" in text.splitlines()


def test_a_replica_without_its_own_config_keeps_one_in_its_state_folder(tmp_path: Path) -> None:
    base = Settings(models_dir=tmp_path / "models", state_dir=tmp_path / "state")
    settings = replica_settings(base, Replica("tfs-a", "http://a:8501", "a:8500"))
    assert settings.config_path == tmp_path / "state" / "replicas" / "tfs-a" / "models.config"
    assert settings.state_path == tmp_path / "state" / "replicas" / "tfs-a"
    assert (settings.rest_url, settings.grpc_target) == ("http://a:8501", "a:8500")
    assert settings.models_dir == tmp_path / "models"
    own = Replica("tfs-b", "http://b:8501", None, tmp_path / "b.config", tmp_path / "b")
    settings = replica_settings(base, own)
    assert (settings.config_path, settings.models_dir) == (tmp_path / "b.config", tmp_path / "b")


def test_listed_replicas_come_first_in_file_order_then_found_ones_by_name() -> None:
    listed = (Replica("z", "http://z:1"), Replica("a", "http://a:1"))
    spec = FleetSpec(listed, None, Rollout())
    found = [Replica("m", "http://m:1"), Replica("a", "http://other:1"), Replica("b", "http://b:1")]
    assert [r.name for r in fleet_replicas(spec, lambda: found)] == ["z", "a", "b", "m"]
    assert fleet_replicas(spec, None) == listed


def test_the_fleet_log_records_the_rollout_and_what_each_replica_serves(tmp_path: Path) -> None:
    before = parse_config(LAB_CONFIG)
    one = Replica("tfs-a", "http://a:8501")
    the_plan = FleetPlan((Survey(one, None, before),), (("tfs-a",),), commit="abc")
    log = FileFleetLog(tmp_path)
    generation = log.start(the_plan)
    assert generation == 1
    log.replica_serves(one, generation, Phase.FLIP, "text")
    assert read_serving(tmp_path, "tfs-a") == {
        "generation": 1,
        "phase": "flip",
        "commit": "abc",
        "digest": digest("text"),
        "time": read_serving(tmp_path, "tfs-a")["time"],  # type: ignore[index]
    }
    report = Report("tfs-a", 1, Phase.FLIP, True, "applied", "")
    log.finish(generation, FleetOutcome(FleetResult.DONE, "1 replica", 1, (report,)))
    (record,) = fleet_history(tmp_path)
    assert (record.id, record.outcome, record.commit) == (1, "done", "abc")
    assert record.extra["results"] == {"tfs-a": "flip: applied"}
    assert restore_targets(record) == {"tfs-a": before}
    assert log.start(the_plan) == 2  # the next rollout's generation
