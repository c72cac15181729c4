"""The systemd notify protocol, spoken to a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from reconciler import sd_notify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A socket bound where systemd would listen, and the env that names it."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    try:
        yield sock, {"NOTIFY_SOCKET": str(path)}
    finally:
        sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_sends_ready_and_main_pid(listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = listener
    assert sd_notify.ready(env=env) is True
    assert received(sock) == ["READY=1", f"MAINPID={os.getpid()}"]


def test_ready_can_carry_a_status_line(listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = listener
    sd_notify.ready("converged at abc123", env=env)
    assert "STATUS=converged at abc123" in received(sock)


def test_status_is_flattened_to_one_line(listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = listener
    sd_notify.status("reconciling\nanimals v3", env=env)
    assert received(sock) == ["STATUS=reconciling animals v3"]


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (sd_notify.watchdog, "WATCHDOG=1"),
        (sd_notify.stopping, "STOPPING=1"),
        (sd_notify.reloading, "RELOADING=1"),
    ],
)
def test_each_state_change_sends_its_assignment(
    listener: tuple[socket.socket, dict[str, str]],
    send: Callable[..., bool],
    expected: str,
) -> None:
    sock, env = listener
    send(env=env)
    assert received(sock) == [expected]


def test_abstract_socket_is_named_with_a_leading_at() -> None:
    name = f"tfs-reconciler-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        assert sd_notify.watchdog(env={"NOTIFY_SOCKET": f"@{name}"}) is True
        assert received(sock) == ["WATCHDOG=1"]


def test_without_notify_socket_nothing_is_sent() -> None:
    assert sd_notify.ready(env={}) is False
    assert sd_notify.watchdog(env={"NOTIFY_SOCKET": ""}) is False


def test_a_vanished_listener_is_logged_not_raised(tmp_path: Path) -> None:
    gone = str(tmp_path / "gone.sock")
    with capture_logs() as logs:
        assert sd_notify.status("x", env={"NOTIFY_SOCKET": gone}) is False
    assert [(e["event"], e["socket"]) for e in logs] == [("sd_notify_failed", gone)]


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert sd_notify.watchdog_interval(env) == 15.0


def test_watchdog_interval_without_pid_applies_to_us() -> None:
    assert sd_notify.watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 1.0


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"},
    ],
    ids=["unset", "zero", "not-a-number", "other-process", "bad-pid"],
)
def test_watchdog_interval_is_none_when_no_watchdog_is_ours(env: dict[str, str]) -> None:
    assert sd_notify.watchdog_interval(env) is None
