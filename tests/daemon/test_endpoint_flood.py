"""Issue 10: 205 idle connections to the metrics port aborted the daemon (a thread each) and
248 exhausted its descriptors. Flooded on both its ports, the daemon lives, adds no thread,
holds a bounded number of sockets, and /healthz answers."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from reconciler.testing.flood import Flood
from reconciler.testing.lab import LabRepo, git, wait_until
from reconciler.webhook import PATH

from .conftest import StartDaemon, StartSim
from .daemon_harness import DaemonProcess

pytestmark = pytest.mark.integration


def threads_and_files(daemon: DaemonProcess) -> tuple[int, int]:
    status = Path(f"/proc/{daemon.pid}/status").read_text()
    threads = int(next(line for line in status.splitlines() if line.startswith("Threads:"))[8:])
    return threads, len(os.listdir(f"/proc/{daemon.pid}/fd"))


def healthz(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_a_flood_of_idle_and_slow_connections_on_both_ports_leaves_the_daemon_answering(
    repo: LabRepo, start_sim: StartSim, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(repo.root), str(bare))
    secret = tmp_path / "secret"
    secret.write_text("flood\n")
    sim = start_sim()
    daemon = start_daemon(
        "--git-remote", str(bare), "--git-interval", "600",
        "--webhook-addr", "127.0.0.1:0", "--webhook-secret-file", str(secret),
        rest_url=sim.rest_url, grpc_target=sim.grpc_target,
    )  # fmt: skip
    hook = daemon.wait_for_event("webhook_started")["address"]
    daemon.wait_for_event("reconciled")
    base = daemon.metrics_url
    assert healthz(base)
    threads, files = threads_and_files(daemon)
    metrics_host, metrics_port = base.removeprefix("http://").rsplit(":", 1)
    hook_host, hook_port = hook.rsplit(":", 1)
    slow_hook = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 9999\r\n\r\n{{".encode()
    with (
        Flood(metrics_host, int(metrics_port), idle=150, slow=150),
        Flood(hook_host, int(hook_port), idle=150, slow=150, head=slow_hook),
    ):
        wait_until(lambda: healthz(base), 60, interval=0.2, what="/healthz under the flood")
        # Each port's server accepts from its own queue in its own thread: /healthz answering
        # says the metrics port got through its flood, not the webhook's (a busy machine left
        # the webhook's queue unread until the flood was gone, and nothing was shed). Reported
        # once a loop turn, not once a connection.
        daemon.wait_for_event("http_connections_shed", timeout=60)
        daemon.wait_for_event("webhook_connections_shed", timeout=60)
        flooded_threads, flooded_files = threads_and_files(daemon)
        assert daemon.process.poll() is None
        # At most 64 connections a port (fewer with a low RLIMIT_NOFILE), never a thread each
        # (the slack is for threads a pass may start on its own, not for 600 connections).
        assert flooded_threads <= threads + 16, (threads, flooded_threads)
        assert flooded_files <= files + 2 * (64 + 16), (files, flooded_files)
    wait_until(lambda: healthz(base), 60, interval=0.2, what="/healthz after the flood")
    assert daemon.process.poll() is None
