"""The simulator's event log (reconciler.testing.tfs_sim.events) and where ServerCore records
to it: version states, label moves, reloads; fake clocks, no ports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.testing.tfs_sim.core import CoreOptions, ServerCore
from reconciler.testing.tfs_sim.disk import PathMap
from reconciler.testing.tfs_sim.errors import TfsError
from reconciler.testing.tfs_sim.events import EventLog, label_changes
from reconciler.testing.tfs_sim.lifecycle import LoadTiming

LAB_VERSION = Path(__file__).resolve().parents[2] / "examples" / "models" / "animals" / "1"


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(specific: list[int], labels: dict[str, int]) -> pb.ModelServerConfig:
    result = pb.ModelServerConfig()
    entry = result.model_config_list.config.add(
        name="m", base_path="/models/m", model_platform="tensorflow"
    )
    entry.model_version_policy.specific.versions.extend(specific)
    for label, version in labels.items():
        entry.version_labels[label] = version
    return result


@pytest.fixture
def core(tmp_path: Path) -> tuple[ServerCore, Clock, Clock]:
    for version in (1, 2):
        (tmp_path / "m" / str(version)).mkdir(parents=True)
        (tmp_path / "m" / str(version) / "saved_model.pb").write_bytes(
            (LAB_VERSION / "saved_model.pb").read_bytes()
        )
    sim_clock, wall = Clock(), Clock(1_000.0)
    options = CoreOptions(
        path_map=PathMap.parse([f"/models={tmp_path}"]),
        timing=LoadTiming(max_load_retries=0),
    )
    return ServerCore(options, sim_clock, EventLog(clock=wall)), sim_clock, wall


def settle(core: ServerCore, clock: Clock, seconds: float) -> None:
    clock.now += seconds
    for _ in range(5):
        core.step()


def test_event_log_numbers_events_stamps_them_and_serves_those_after_a_seq() -> None:
    wall = Clock(5.0)
    log = EventLog(clock=wall)
    log.record("config_reload", models=["m"], ok=True, error="")
    wall.now = 6.5
    log.record("label", model="m", label="stable", version=2, old=1)
    assert [(e["seq"], e["t"], e["kind"]) for e in log.since(0)] == [
        (1, 5.0, "config_reload"),
        (2, 6.5, "label"),
    ]
    assert log.since(1) == [
        {
            "seq": 2,
            "t": 6.5,
            "kind": "label",
            "model": "m",
            "label": "stable",
            "version": 2,
            "old": 1,
        }
    ]
    assert log.since(2) == []


def test_event_log_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown event kind 'labels'"):
        EventLog().record("labels")


def test_event_log_appends_json_lines_to_its_file_as_they_happen(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, clock=Clock(7.0))
    log.record("version_state", model="m", version=1, state="LOADING", error="")
    lines = path.read_text().splitlines()  # flushed before close
    log.close()
    assert [json.loads(line) for line in lines] == [
        {"seq": 1, "t": 7.0, "kind": "version_state", "model": "m", "version": 1,
         "state": "LOADING", "error": ""}
    ]  # fmt: skip


def test_label_changes_lists_labels_added_moved_and_dropped() -> None:
    old = {"m": {"stable": 1, "canary": 2, "old": 1}, "gone": {"stable": 4}}
    new = {"m": {"stable": 2, "canary": 2, "new": 3}}
    assert label_changes(old, new) == [
        ("gone", "stable", 4, None),
        ("m", "new", None, 3),
        ("m", "old", 1, None),
        ("m", "stable", 1, 2),
    ]


def test_core_records_version_states_label_moves_and_reloads_in_order(
    core: tuple[ServerCore, Clock, Clock],
) -> None:
    server, clock, wall = core
    server.reload(config([1], {}))  # the first config: loads version 1
    server.reload(config([1, 2], {"stable": 1}))
    settle(server, clock, 1.0)  # the file-system poll aspires 2, which loads
    wall.now = 1_002.0
    server.reload(config([1, 2], {"stable": 2}))
    seen = [
        (e["kind"], e.get("version"), e.get("state") or e.get("label") or e.get("ok"))
        for e in server.events.since(0)
    ]
    assert seen == [
        ("version_state", 1, "START"),
        ("version_state", 1, "LOADING"),
        ("version_state", 1, "AVAILABLE"),
        ("config_reload", None, True),
        ("label", 1, "stable"),
        ("config_reload", None, True),
        ("version_state", 2, "START"),
        ("version_state", 2, "LOADING"),
        ("version_state", 2, "AVAILABLE"),
        ("label", 2, "stable"),
        ("config_reload", None, True),
    ]
    move = server.events.since(0)[-2]
    assert (move["model"], move["old"], move["t"]) == ("m", 1, 1_002.0)


def test_core_records_a_refused_reload_and_no_label_event(
    core: tuple[ServerCore, Clock, Clock],
) -> None:
    server, _, _ = core
    server.reload(config([1], {}))
    last = server.events.since(0)[-1]["seq"]
    with pytest.raises(TfsError):
        server.reload(config([1, 2], {"stable": 2}))  # 2 is not AVAILABLE
    [event] = server.events.since(last)
    assert (event["kind"], event["ok"], event["models"]) == ("config_reload", False, ["m"])
    assert "not currently available" in event["error"]
