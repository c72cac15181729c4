"""The daemon's decisions, pass by pass, in this process: a fake clock says when, the
simulator (a process) plays TFS. No sleeps: each test calls one pass at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from reconciler.apply import ReloadMode
from reconciler.config_file import write_atomic
from reconciler.daemon import Daemon, DaemonOptions
from reconciler.history import read_history
from reconciler.http_endpoint import HttpEndpoint
from reconciler.settings import Settings
from reconciler.testing import SimulatorProcess
from reconciler.tfs_config import parse_config

LAB_LABELS = {"deprecated": 1, "stable": 2, "canary": 3}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeEndpoint:
    """What a pass tells the HTTP endpoint."""

    def __init__(self) -> None:
        self.ready = False

    def beat(self) -> None:
        pass

    def set_ready(self) -> None:
        self.ready = True


@pytest.fixture
def sim(lab: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatorProcess]:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with SimulatorProcess(lab / "models", load_seconds=0.05) as running:
        yield running


def make_daemon(lab: Path, sim: SimulatorProcess, clock: FakeClock) -> Daemon:
    settings = Settings(
        desired=lab / "desired_state",
        models_dir=lab / "models",
        rest_url=sim.rest_url,
        grpc_target=sim.grpc_target,
        timeout=20,
    )
    return Daemon(DaemonOptions(settings, reload=ReloadMode.GRPC), clock=clock)


def one_pass(daemon: Daemon, scope: str = "change") -> None:
    daemon._pass(cast(HttpEndpoint, FakeEndpoint()), scope)  # type: ignore[arg-type]


def test_a_models_config_rewritten_in_place_is_not_taken_for_empty_on_one_read(
    lab: Path, sim: SimulatorProcess
) -> None:
    clock = FakeClock()
    daemon = make_daemon(lab, sim, clock)
    config = lab / "models" / "models.config"
    original = config.read_bytes()
    one_pass(daemon, "all")  # the lab as it is: in sync

    config.write_bytes(b"")  # opened for writing (truncated) ...
    one_pass(daemon)
    assert config.read_bytes() == b"", "an empty read was taken for the truth and repaired"
    assert daemon._memory.settle_at == clock.now + daemon.options.settle

    clock.now += 0.3
    config.write_bytes(original)  # ... and the same bytes written back
    one_pass(daemon)
    assert config.read_bytes() == original
    assert read_history(daemon.options.settings.state_path) == []  # nothing was applied


def test_a_hand_edit_to_an_empty_list_is_repaired_from_what_tfs_serves_labels_and_all(
    lab: Path, sim: SimulatorProcess
) -> None:
    clock = FakeClock()
    daemon = make_daemon(lab, sim, clock)
    config = lab / "models" / "models.config"
    served = parse_config(config.read_text())
    one_pass(daemon, "all")

    write_atomic(config, "model_config_list {}\n")
    one_pass(daemon)
    assert parse_config(config.read_text()) != served  # read once: not acted on yet

    clock.now += daemon.options.settle
    one_pass(daemon)
    repair = daemon._memory.plan
    assert repair is not None and repair.phases
    for phase in repair.phases:
        assert phase.models[0].label_map == LAB_LABELS, "a phase pushed without the labels"
    # Put back as the last apply left it: base_path '/models/animals/' with its slash.
    assert parse_config(config.read_text()) == served
    (record,) = read_history(daemon.options.settings.state_path)
    assert record.outcome == "applied"
