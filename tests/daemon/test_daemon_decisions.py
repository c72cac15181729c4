"""The daemon's decisions, pass by pass, in this process: a fake clock says when, the
simulator (a process) plays TFS. No sleeps: each test calls one pass at a time."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest
from structlog.testing import capture_logs

from reconciler import sd_notify
from reconciler.config_file import write_atomic
from reconciler.daemon import Daemon, DaemonOptions
from reconciler.daemon_pass import Scope
from reconciler.history import read_history
from reconciler.http_endpoint import HttpEndpoint
from reconciler.reload import ReloadMode
from reconciler.settings import Settings
from reconciler.testing import SimulatorProcess
from reconciler.tfs_config import parse_config
from reconciler.watch import Trigger

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


def one_pass(daemon: Daemon, scope: Scope = "change") -> None:
    daemon._pass(cast(HttpEndpoint, FakeEndpoint()), scope)


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
    repair = daemon._runner.seen.plan
    assert repair is not None and repair.phases
    for phase in repair.phases:
        assert phase.models[0].label_map == LAB_LABELS, "a phase pushed without the labels"
    # Put back as the last apply left it: base_path '/models/animals/' with its slash.
    assert parse_config(config.read_text()) == served
    started, record = read_history(daemon.options.settings.state_path)  # one apply, written ahead
    assert (started.outcome, record.outcome) == ("started", "applied")
    assert started.id == record.id


PROMOTED = """\
apiVersion: tfs-reconciler/v1
models:
  animals:
    versions: [1, 2, 3]
    labels: {deprecated: 1, stable: 3, canary: 3}
"""


@pytest.fixture
def statuses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The STATUS lines the daemon tells systemd."""
    sent: list[str] = []

    def status(text: str, env: object = None) -> bool:
        sent.append(text)
        return True

    monkeypatch.setattr(sd_notify, "status", status)
    return sent


def errors_counted(daemon: Daemon) -> float:
    value = daemon._metrics.registry.get_sample_value(
        "tfs_reconciler_reconciles_total", {"outcome": "error"}
    )
    return value or 0.0


def test_a_history_it_cannot_write_is_reported_and_retried_not_fatal(
    lab: Path, sim: SimulatorProcess, statuses: list[str]
) -> None:
    clock = FakeClock()
    daemon = make_daemon(lab, sim, clock)
    one_pass(daemon, "all")
    history = daemon.options.settings.state_path / "history.jsonl"
    history.mkdir(parents=True)  # a directory where the history file goes
    (lab / "desired_state" / "animals.yaml").write_text(PROMOTED)

    daemon._safe_pass(cast(HttpEndpoint, FakeEndpoint()), "change")  # does not raise

    error = daemon._memory.last_error
    assert error is not None and str(history) in error
    assert error in daemon.status()["last_error"]
    assert errors_counted(daemon) == 1
    assert statuses[-1].startswith("error, retrying in "), statuses
    assert daemon._backoff.retry_at > clock.now

    history.rmdir()
    clock.now = daemon._backoff.retry_at
    daemon._safe_pass(cast(HttpEndpoint, FakeEndpoint()), "resync")
    assert daemon._memory.last_error is None


def test_a_state_folder_it_cannot_create_leaves_what_serves_and_is_retried(
    lab: Path, sim: SimulatorProcess, statuses: list[str]
) -> None:
    clock = FakeClock()
    daemon = make_daemon(lab, sim, clock)
    blocked = lab / "not-a-folder"
    blocked.write_text("a file where the state folder should be")
    daemon.options = replace(
        daemon.options, settings=replace(daemon.options.settings, state_dir=blocked / "state")
    )
    config = lab / "models" / "models.config"
    before = config.read_bytes()
    one_pass(daemon, "all")
    (lab / "desired_state" / "animals.yaml").write_text(PROMOTED)

    daemon._safe_pass(cast(HttpEndpoint, FakeEndpoint()), "change")

    assert "Not a directory" in (daemon._memory.last_error or "")
    assert config.read_bytes() == before  # nothing written: TFS serves what it served
    assert errors_counted(daemon) == 1


def test_a_history_it_cannot_read_at_start_is_reported_and_the_daemon_runs_on(
    lab: Path, sim: SimulatorProcess, statuses: list[str]
) -> None:
    daemon = make_daemon(lab, sim, FakeClock())
    history = daemon.options.settings.state_path / "history.jsonl"
    history.mkdir(parents=True)
    assert daemon._read_records() == []
    assert "cannot read the history" in (daemon._memory.last_error or "")
    assert statuses and statuses[-1].startswith("error")


def test_a_history_line_of_the_wrong_shape_is_skipped_at_start(
    lab: Path, sim: SimulatorProcess
) -> None:
    daemon = make_daemon(lab, sim, FakeClock())
    state = daemon.options.settings.state_path
    state.mkdir()
    (state / "history.jsonl").write_bytes(b"[]\n" + b"[" * 100_000 + b"]" * 100_000 + b"\n")
    assert daemon._read_records() == []
    assert daemon._memory.last_error is None


def test_an_apply_is_logged_and_counted_with_one_word_and_its_echo_says_nothing_new(
    lab: Path, sim: SimulatorProcess
) -> None:
    clock = FakeClock()
    daemon = make_daemon(lab, sim, clock)
    with capture_logs() as logs:
        one_pass(daemon, "all")  # in sync
        (lab / "desired_state" / "animals.yaml").write_text(PROMOTED)
        one_pass(daemon)  # applies
        one_pass(daemon)  # woken by its own write of models.config
        one_pass(daemon, "resync")
    passes = [(e["outcome"], e["log_level"]) for e in logs if e["event"] == "reconciled"]
    assert passes == [("noop", "info"), ("applied", "info"), ("noop", "debug"), ("noop", "info")]
    counted = daemon._metrics.registry.get_sample_value(
        "tfs_reconciler_reconciles_total", {"outcome": "applied"}
    )
    assert counted == 1  # the metric's word is the log's
    (moved,) = [e for e in logs if e["event"] == "changed"]
    assert {k: moved[k] for k in ("action", "label", "version", "old_version")} == {
        "action": "move_label",
        "label": "stable",
        "version": 3,
        "old_version": 2,
    }
    assert "old" not in moved and "new" not in moved


def test_a_file_watcher_the_system_refuses_is_reported_and_resyncs_stand_in(
    lab: Path, sim: SimulatorProcess, statuses: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = make_daemon(lab, sim, FakeClock())
    real = Trigger.start
    refused: list[Trigger] = []

    def start(trigger: Trigger) -> Trigger:
        if not refused:  # the first start: inotify's watches are used up
            refused.append(trigger)
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return real(trigger)

    monkeypatch.setattr(Trigger, "start", start)
    trigger = daemon._start_trigger()
    try:
        assert refused and trigger is not refused[0]
        one_pass(daemon, "all")
        error = daemon.status()["last_error"]
        assert error is not None and "cannot watch for changes" in error
        assert "inotify watch limit reached" in statuses[-1], statuses
    finally:
        trigger.stop()
