"""The daemon's decisions, pass by pass, against TFS in memory and a fake clock: backoff and
deferral of the attempt that failed, drift reported once, the settle of a models.config
someone else wrote, and readiness. No process, no socket, no sleep."""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pytest
from structlog.testing import capture_logs

from reconciler import daemon as daemon_module
from reconciler import logs, sd_notify
from reconciler.backoff import MAX_BACKOFF, Backoff
from reconciler.cli import build_parser
from reconciler.config_file import write_atomic
from reconciler.daemon import Daemon, DaemonOptions
from reconciler.daemon_pass import PassRunner, Scope
from reconciler.docker_target import DockerError
from reconciler.errors import StepError, TransientError
from reconciler.http_endpoint import HttpEndpoint
from reconciler.observe import LiveModel, LiveVersion, TfsUnreachable
from reconciler.options import rereader
from reconciler.outcome import Result
from reconciler.pass_result import Drift, DriftMemory, PassKind
from reconciler.policy import served_versions
from reconciler.readiness import Readiness
from reconciler.reload import ReloadFailed, ReloadMode
from reconciler.settings import Settings
from reconciler.tfs_config import ServingConfig, parse_config, render_config
from reconciler.tfs_grpc import ReloadAbandoned, ReloadRejected
from reconciler.tfs_rest import TfsRest
from reconciler.verify import VerifyFailed
from reconciler.wait import ConvergeFailed

IRIS = """\
apiVersion: tfs-reconciler/v1
models:
  iris:
    versions: [1]
"""

PROMOTED = """\
apiVersion: tfs-reconciler/v1
models:
  animals:
    versions: [1, 2, 3]
    labels: {deprecated: 1, stable: 3, canary: 3}
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class MemoryTfs:
    """TFS in memory: a config pushed is served at once (every version it names AVAILABLE,
    its labels resolving), unless `refuse` names a label it refuses to move (as
    ServerCore::ReloadConfig refuses a label on a version it does not serve)."""

    served: ServingConfig
    reachable: bool = True
    refuse: str | None = None  # "label=version"
    pushed: list[ServingConfig] = field(default_factory=list)
    mode: ReloadMode = ReloadMode.GRPC
    waits: bool = True
    phased: bool = True

    # StatusSource
    def model_status(self, name: str) -> LiveModel:
        if not self.reachable:
            raise TfsUnreachable("TFS in memory does not answer")
        model = self.served.model(name)
        if model is None:
            return LiveModel(name, found=False)
        numbers = served_versions(model.effective_policy, (1, 2, 3))
        return LiveModel(name, True, tuple(LiveVersion(n, "AVAILABLE") for n in numbers))

    def label_version(self, name: str, label: str) -> int | None:
        model = self.served.model(name)
        return dict(model.labels).get(label) if model is not None else None

    # Reloader
    def check(self, target: ServingConfig) -> None:
        pass

    def reload(self, config: ServingConfig, timeout: float | None = None) -> None:
        self.pushed.append(config)
        for model in config.models:
            if self.refuse in {f"{label}={number}" for label, number in model.labels}:
                raise ReloadRejected("FAILED_PRECONDITION", f"label {self.refuse} refused")
        self.served = config


class FakeEndpoint:
    def __init__(self) -> None:
        self.ready = False

    def beat(self) -> None:
        pass

    def set_ready(self) -> None:
        self.ready = True


@dataclass
class Loop:
    lab: Path
    daemon: Daemon
    clock: FakeClock
    tfs: MemoryTfs
    endpoint: FakeEndpoint
    statuses: list[str]
    readies: list[str]

    def run(self, scope: Scope = "all", safe: bool = False) -> list[MutableMapping[str, Any]]:
        """One pass and what the loop made of it; the events it logged. `safe`: as the loop
        runs it, an exception out of the pass reported as a failed pass."""
        with capture_logs() as events:
            endpoint = cast(HttpEndpoint, self.endpoint)
            (self.daemon._safe_pass if safe else self.daemon._pass)(endpoint, scope)
        return events

    def counted(self, outcome: str) -> float:
        value = self.daemon._metrics.registry.get_sample_value(
            "tfs_reconciler_reconciles_total", {"outcome": outcome}
        )
        return value or 0.0

    @property
    def config(self) -> Path:
        return self.lab / "models" / "models.config"


@pytest.fixture
def loop(lab: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loop]:
    statuses: list[str] = []
    readies: list[str] = []
    monkeypatch.setattr(sd_notify, "status", lambda text, env=None: statuses.append(text))
    monkeypatch.setattr(sd_notify, "ready", lambda text="", env=None: readies.append(text))
    clock = FakeClock()
    settings = Settings(
        desired=lab / "desired_state",
        models_dir=lab / "models",
        rest_url="http://tfs.invalid:8501",
        timeout=5,
    )
    options = DaemonOptions(settings, reload=ReloadMode.GRPC, verify=False, self_heal=True)
    tfs = MemoryTfs(parse_config((lab / "models" / "models.config").read_text()))
    daemon = Daemon(options, clock=clock)
    daemon._runner = PassRunner(options.settle, clock, tfs=lambda _: cast(TfsRest, tfs))
    daemon._runner.reloader = tfs
    yield Loop(lab, daemon, clock, tfs, FakeEndpoint(), statuses, readies)


def named(events: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in events if e["event"] == name]


# --- backoff and deferral -------------------------------------------------------------------


def test_a_failed_apply_is_not_tried_again_as_it_is_before_its_backoff_ends(loop: Loop) -> None:
    loop.run()
    loop.tfs.refuse = "stable=3"
    (loop.lab / "desired_state" / "animals.yaml").write_text(PROMOTED)

    (failed,) = named(loop.run("change"), "reconcile_failed")
    assert failed["outcome"] == "rolled_back" and failed["retry_in"] == 2.0
    pushes = len(loop.tfs.pushed)

    loop.clock.now += 1.9
    (waiting,) = named(loop.run("resync"), "waiting_for_change")
    assert waiting["retry_in"] == pytest.approx(0.1)
    assert len(loop.tfs.pushed) == pushes, "the attempt that failed was pushed again"

    loop.clock.now += 0.1
    (again,) = named(loop.run("resync"), "reconcile_failed")
    assert len(loop.tfs.pushed) > pushes
    assert again["retry_in"] == 4.0  # doubled
    assert loop.counted("rolled_back") == 2


def test_tfs_answering_again_after_an_outage_is_a_change_tried_at_once(loop: Loop) -> None:
    loop.run()
    loop.tfs.refuse = "stable=3"
    (loop.lab / "desired_state" / "animals.yaml").write_text(PROMOTED)
    loop.tfs.reachable = False
    loop.run("change")  # TFS down: the attempt fails
    assert loop.daemon._backoff.failures == 1
    loop.tfs.reachable, loop.tfs.refuse = True, None

    events = loop.run("resync")  # the same inputs, but TFS answers: not deferred
    assert not named(events, "waiting_for_change")
    assert [e["outcome"] for e in named(events, "reconciled")] == ["applied"]
    assert loop.daemon._backoff.failures == 0 and loop.daemon._backoff.retry_at == 0.0


def test_the_backoff_doubles_to_a_ceiling_and_a_success_forgets_it() -> None:
    backoff = Backoff()
    delays = [backoff.failed(0.0, 2.0) for _ in range(10)]
    assert delays[:4] == [2.0, 4.0, 8.0, 16.0] and delays[-1] == MAX_BACKOFF
    backoff.forget()
    assert backoff.failed(0.0, 2.0) == 2.0


def test_only_the_attempt_that_failed_is_deferred_and_only_until_its_retry() -> None:
    backoff = Backoff()
    backoff.failed(100.0, 2.0, target=("config", "disk", True))
    assert backoff.defers(("config", "disk", True), 101.0) == 1.0
    assert backoff.defers(("config", "disk", False), 101.0) == 0.0  # TFS answered again
    assert backoff.defers(("config", "disk", True), 102.0) == 0.0
    assert backoff.due(102.0) and not backoff.due(101.0)


def test_a_pass_that_failed_without_an_apply_retries_by_the_next_resync(loop: Loop) -> None:
    loop.run()
    loop.tfs.reachable = False
    for _ in range(6):  # 2, 4, 8, 16, 32, 64 s: retried at the latest at the resync (30 s)
        (failed,) = named(loop.run("resync"), "reconcile_failed")
    assert failed["retry_in"] == loop.daemon.options.resync
    assert loop.statuses[-1].startswith("error, retrying in 30 s: ")


# --- drift ------------------------------------------------------------------------------------


def test_drift_left_alone_is_warned_and_counted_once_then_said_at_debug(loop: Loop) -> None:
    loop.daemon.options = DaemonOptions(
        loop.daemon.options.settings, reload=ReloadMode.GRPC, verify=False, self_heal=False
    )
    loop.run()
    write_atomic(loop.config, loop.config.read_text().replace("value: 2", "value: 3"))
    assert named(loop.run("change"), "config_settling")
    loop.clock.now += loop.daemon.options.settle

    levels = []
    for _ in range(3):
        (drift,) = named(loop.run("resync"), "drift")
        levels.append(drift["log_level"])
    assert levels == ["warning", "debug", "debug"]
    assert "! animals: models.config was edited" in drift["drift"]
    counted = loop.daemon._metrics.registry.get_sample_value(
        "tfs_reconciler_drift_detected_total", {"model": "animals"}
    )
    assert counted == 1
    assert loop.statuses[-1].startswith("drift left alone (self-heal off) in animals at ")
    assert loop.tfs.pushed == []  # nothing repaired


def test_drift_that_changes_is_news_again_and_none_resets_it() -> None:
    memory = DriftMemory()
    first = Drift(("! a: edited",), ("a",))
    assert memory.news(first) and not memory.news(first)
    assert memory.news(Drift(("! a: edited", "! b: edited"), ("a", "b")))
    assert not memory.news(Drift())
    assert memory.news(first)  # gone, then back


# --- settle -----------------------------------------------------------------------------------


def test_a_models_config_someone_else_wrote_is_acted_on_once_it_reads_the_same(
    loop: Loop,
) -> None:
    loop.run()
    served = loop.config.read_text()
    write_atomic(loop.config, "model_config_list {}\n")

    (settling,) = named(loop.run("change"), "config_settling")
    assert settling["retry_in"] == loop.daemon.options.settle
    assert loop.daemon._memory.settle_at == loop.clock.now + loop.daemon.options.settle
    assert loop.config.read_text() == "model_config_list {}\n" and loop.tfs.pushed == []

    loop.clock.now += loop.daemon.options.settle
    events = loop.run("change")
    assert [e["outcome"] for e in named(events, "reconciled")] == ["applied"]
    assert parse_config(loop.config.read_text()) == parse_config(served)
    assert loop.daemon._memory.settle_at == 0.0


def test_a_models_config_that_does_not_parse_settles_then_is_restored(loop: Loop) -> None:
    loop.run()
    served = loop.config.read_text()
    loop.config.write_text("model_config_list { config {")
    assert named(loop.run("change"), "config_settling")
    loop.clock.now += loop.daemon.options.settle
    events = loop.run("change")
    assert named(events, "config_invalid") and named(events, "config_restored")
    assert loop.config.read_text() == render_config(parse_config(served))
    counted = loop.daemon._metrics.registry.get_sample_value(
        "tfs_reconciler_drift_detected_total", {"model": "models.config"}
    )
    assert counted == 1


# --- readiness --------------------------------------------------------------------------------


def test_systemd_hears_ready_after_a_failed_first_pass_but_readyz_waits_for_a_success(
    loop: Loop,
) -> None:
    loop.tfs.reachable = False
    loop.run()
    assert loop.readies == ["started; last error: TFS in memory does not answer"]
    assert not loop.endpoint.ready, "ready while TFS was never seen serving"
    assert loop.counted("error") == 1

    loop.tfs.reachable = True
    loop.clock.now = loop.daemon._backoff.retry_at
    loop.run("resync")
    assert loop.endpoint.ready
    assert len(loop.readies) == 1  # READY=1 is sent once
    assert loop.daemon._memory.last_error is None


def test_a_first_pass_in_sync_is_ready_at_once(loop: Loop) -> None:
    loop.run()
    assert loop.endpoint.ready and loop.readies == ["in sync at work tree"]
    assert loop.counted("noop") == 1


def test_readiness_judges_the_last_state_in_sync_not_a_change_blocked_or_rolled_back(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ConfigMap change reaches every pod at once: were a change that never went live judged,
    # every pod would turn unready while each TFS serves what it served before.
    monkeypatch.setattr(daemon_module, "TfsRest", lambda *_: loop.tfs)
    readiness = loop.daemon._model_readiness()
    loop.run()
    assert readiness(True).ready
    desired = loop.lab / "desired_state"

    (desired / "iris.yaml").write_text(IRIS)  # its folder does not exist: blocked
    assert named(loop.run("change"), "blocked")
    loop.clock.now += 2
    assert readiness(True) == Readiness(True)

    (desired / "iris.yaml").unlink()
    loop.tfs.refuse = "shadow=2"
    (desired / "animals.yaml").write_text(PROMOTED.replace("canary: 3}", "canary: 3, shadow: 2}"))
    (failed,) = named(loop.run("change"), "reconcile_failed")
    assert failed["outcome"] == "rolled_back"
    loop.clock.now += 2
    assert readiness(True) == Readiness(True)

    loop.tfs.refuse = None
    loop.clock.now = loop.daemon._backoff.retry_at
    loop.run("resync")
    loop.clock.now += 2
    loop.tfs.reachable = False  # the accepted state is judged again: TFS must answer
    assert not readiness(True).ready
    loop.tfs.reachable = True
    loop.clock.now += 2
    assert readiness(True) == Readiness(True)
    animals = loop.tfs.served.model("animals")
    assert animals is not None and dict(animals.labels)["shadow"] == 2


# --- what each kind of pass is counted as ---------------------------------------------------


def test_each_pass_kind_is_counted_under_one_word_or_not_at_all() -> None:
    assert PassKind.IN_SYNC.result is Result.NOOP
    assert PassKind.BLOCKED.result is Result.INVALID
    assert PassKind.REFUSED.result is Result.INVALID  # --sidecar: TFS's flags refuse it
    assert PassKind.TFS_DOWN.result is Result.ERROR
    assert PassKind.FAILED.result is Result.ERROR  # the rollback failed too
    assert {PassKind.DEFERRED.result, PassKind.SETTLING.result} == {None}
    assert PassKind.INTERRUPTED.result is None  # the next start finishes it
    assert [k for k in PassKind if k.failed_apply] == [PassKind.ROLLED_BACK, PassKind.FAILED]


# --- the two error families -----------------------------------------------------------------


def test_what_fails_a_step_rolls_back_and_what_does_not_answer_is_retried() -> None:
    for transient in (TfsUnreachable, DockerError):
        assert issubclass(transient, TransientError) and not issubclass(transient, StepError)
    for step in (ReloadRejected, ReloadAbandoned, ReloadFailed, ConvergeFailed, VerifyFailed):
        assert issubclass(step, StepError) and not issubclass(step, TransientError)


def test_a_transient_error_out_of_a_pass_is_an_environment_error_retried_with_backoff(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    def engine_down(*_: object) -> None:
        raise DockerError("the Docker engine does not answer")

    monkeypatch.setattr(loop.daemon._runner, "run", engine_down)
    events = loop.run(safe=True)
    assert named(events, "environment_error") and not named(events, "internal_error")
    (failed,) = named(events, "reconcile_failed")
    assert failed["outcome"] == "error" and failed["error"] == "the Docker engine does not answer"
    assert loop.daemon._backoff.retry_at == loop.clock.now + 2.0


# --- SIGHUP ---------------------------------------------------------------------------------


def test_sighup_drops_what_was_removed_from_the_env_file_and_keeps_the_old_on_a_bad_value(
    lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision behind tests/daemon's SIGHUP test, with a fake clock: which resync the
    loop counts with after each reload (a process test read it from the log's timing)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
    monkeypatch.setattr(os, "environ", environ)  # a reread sets the env file's variables
    monkeypatch.setattr(logs, "configure", lambda level: None)  # the log stays captured
    monkeypatch.setattr(sd_notify, "ready", lambda text="", env=None: None)
    env_file = tmp_path / "tfs-reconciler.env"
    env_file.write_text("TFS_RECONCILER_RESYNC=0.3\n")
    argv = [
        "run",
        "--env-file",
        str(env_file),
        "--desired",
        str(lab / "desired_state"),
        "--models-dir",
        str(lab / "models"),
        "--rest-url",
        "http://tfs.invalid:8501",
    ]
    args = build_parser().parse_args(argv)
    args.argv = argv
    reread = rereader(args, lambda again: build_parser().parse_args(again))
    clock = FakeClock()
    daemon = Daemon(reread(), reread, clock=clock)
    try:
        assert daemon._next_resync() == clock.now + 0.3

        env_file.write_text("TFS_RECONCILER_RESYNC=abc\n")
        with capture_logs() as events:
            daemon._reload_settings()
        (failed,) = named(events, "settings_reload_failed")
        assert "TFS_RECONCILER_RESYNC" in failed["error"], failed
        assert named(events, "settings_reloaded") == []
        assert daemon._next_resync() == clock.now + 0.3  # the old settings go on

        env_file.write_text("# back to the defaults (resync 30 s)\n")
        with capture_logs() as events:
            daemon._reload_settings()
        assert len(named(events, "settings_reloaded")) == 1
        assert daemon._next_resync() == clock.now + 30.0
    finally:
        if daemon._trigger is not None:
            daemon._trigger.stop()


# --- when the idle loop wakes -----------------------------------------------------------------


def test_the_idle_loop_wakes_for_the_next_resync_fetch_retry_settle_or_keep_alive(
    loop: Loop,
) -> None:
    daemon, now = loop.daemon, loop.clock.now
    assert daemon._wake_at(now, now + 30, now + 5, None) == now + 30  # no --git-remote: no fetch
    assert daemon._wake_at(now, now + 30, now + 5, 0.2) == now + 0.2  # systemd's watchdog
    daemon.options = replace(daemon.options, git_remote="https://git.example/lab.git")
    assert daemon._wake_at(now, now + 30, now + 5, None) == now + 5
    assert daemon._wake_at(now, now + 3, now + 5, None) == now + 3
    daemon._memory.settle_at = now + 1
    assert daemon._wake_at(now, now + 3, now + 5, 2.0) == now + 1
    daemon._memory.settle_at = now - 1  # past: not waited for
    assert daemon._wake_at(now, now + 3, now + 5, None) == now + 3
    daemon._backoff.retry_at = now + 2
    assert daemon._wake_at(now, now + 3, now + 5, None) == now + 2
