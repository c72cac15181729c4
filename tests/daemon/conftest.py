"""Fixtures for the daemon's end-to-end tests: a lab in a git work tree, the simulator as a
process, the daemon as a process (always stopped, also when a test fails) and a NOTIFY_SOCKET."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.testing import SimulatorProcess
from reconciler.testing.lab import LabRepo
from reconciler.testing.simulator import free_port

from .daemon_harness import DaemonProcess, NotifySocket

LOAD = 0.2  # seconds every version load takes in the simulator


@pytest.fixture
def repo(lab: Path, tmp_path: Path) -> LabRepo:
    return LabRepo.create(tmp_path / "repo", lab)


StartSim = Callable[..., SimulatorProcess]


@pytest.fixture
def start_sim(repo: LabRepo) -> Iterator[StartSim]:
    started: list[SimulatorProcess] = []

    def start(**options: Any) -> SimulatorProcess:
        options.setdefault("load_seconds", LOAD)
        sim = SimulatorProcess(repo.models, **options)
        started.append(sim)
        return sim.start()

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket.open(tmp_path)
    yield sock
    sock.close()


StartDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def start_daemon(repo: LabRepo, tmp_path: Path, notify: NotifySocket) -> Iterator[StartDaemon]:
    """`start_daemon(*extra args, rest_url=, grpc_target=, env={})`: `tfs-reconciler run` on the
    repo's lab with --metrics-addr 127.0.0.1:0, --resync 1 and --reload grpc unless given, and
    NOTIFY_SOCKET set to the `notify` socket (which outlives the daemons)."""
    started: list[DaemonProcess] = []

    def start(
        *args: str,
        rest_url: str | None = None,
        grpc_target: str | None = None,
        env: dict[str, str] | None = None,
        log_name: str | None = None,
    ) -> DaemonProcess:
        rest_url = rest_url or f"http://127.0.0.1:{free_port()}"
        grpc_target = grpc_target or f"127.0.0.1:{free_port()}"
        full = [
            "--desired", str(repo.desired),
            "--models-dir", str(repo.models),
            "--rest-url", rest_url,
            "--grpc-target", grpc_target,
            "--timeout", "10",
        ]  # fmt: skip
        given = " ".join(args)
        if "--metrics-addr" not in given:
            full += ["--metrics-addr", "127.0.0.1:0"]
        if "--resync" not in given and "--env-file" not in given:
            full += ["--resync", "1"]
        if "--reload" not in given and "--env-file" not in given:
            full += ["--reload", "grpc"]
        name = log_name or f"daemon-{len(started)}.log"
        daemon = DaemonProcess(
            # The log level comes from the env file when there is one (as the others do).
            [*([] if "--env-file" in given else ["--log-level", "debug"]), "run", *full, *args],
            env={"NOTIFY_SOCKET": str(notify.path), **(env or {})},
            cwd=repo.root,
            log_path=tmp_path / name,
        )
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        code = daemon.stop()
        print(f"\n--- {daemon.log_path.name} (exit {code}) ---\n{daemon.text[-6000:]}")
