"""The systemd notify protocol, without python-systemd.

A service started with ``Type=notify`` tells systemd about itself by sending
datagrams of ``KEY=VALUE`` lines to the AF_UNIX socket named in
``$NOTIFY_SOCKET`` (a path, or an abstract socket written with a leading
``@``). When the variable is unset (not started by systemd), every call here
is a no-op, so the daemon calls these unconditionally.

See sd_notify(3) and sd_watchdog_enabled(3).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

__all__ = [
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]

log = structlog.get_logger(__name__)


def _address(raw: str) -> str | bytes:
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one notification (``KEY=VALUE`` lines) to systemd.

    Returns True when a datagram was sent, False when ``NOTIFY_SOCKET`` is
    unset or the socket refused it. Like sd_notify(3), a failure never raises:
    a daemon must not die because systemd could not be told something; the
    failure is logged as ``sd_notify_failed``.
    """
    raw = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not raw:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_address(raw))
            sock.sendall(message.encode())
    except OSError as error:
        log.warning("sd_notify_failed", socket=raw, error=str(error))
        return False
    return True


def ready(status_text: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd that start-up is finished (``READY=1``), with the main pid."""
    lines = ["READY=1", f"MAINPID={os.getpid()}"]
    if status_text is not None:
        lines.append(f"STATUS={_one_line(status_text)}")
    return notify("\n".join(lines), env)


def status(text: str, env: Mapping[str, str] | None = None) -> bool:
    """Set the one-line status shown by ``systemctl status``."""
    return notify(f"STATUS={_one_line(text)}", env)


def watchdog(env: Mapping[str, str] | None = None) -> bool:
    """Keep-alive for ``WatchdogSec=`` (``WATCHDOG=1``)."""
    return notify("WATCHDOG=1", env)


def stopping(env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd that the service is shutting down (``STOPPING=1``)."""
    return notify("STOPPING=1", env)


def reloading(env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd that the service is reloading (``RELOADING=1``).

    Send ``ready()`` again when the reload is done.
    """
    return notify("RELOADING=1", env)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between keep-alives, or None when no watchdog is asked for.

    systemd sets ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) when the unit has
    ``WatchdogSec=``. A keep-alive every half of that interval, as
    sd_watchdog_enabled(3) recommends, leaves room for a slow iteration.
    When ``WATCHDOG_PID`` names another process the watchdog is not ours.
    """
    values = os.environ if env is None else env
    usec_text = values.get("WATCHDOG_USEC", "")
    if not usec_text:
        return None
    pid_text = values.get("WATCHDOG_PID", "")
    if pid_text:
        try:
            if int(pid_text) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(usec_text)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000 / 2


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())
