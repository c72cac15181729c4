"""Run the installed `tfs-reconciler run` as a real process and watch what it says.

- `DaemonProcess`: reconciler.testing's ReconcilerProcess.
- `NotifySocket`: an AF_UNIX SOCK_DGRAM socket standing in for systemd's NOTIFY_SOCKET; a
  thread collects every datagram with the time it arrived.
(`LabRepo`, `git`, `wait_until` and `label_version` are reconciler.testing.lab's.)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.testing import lab

# The lab's helpers, for the tests that import them from here.
from reconciler.testing.lab import GIT_IDENTITY as GIT_IDENTITY
from reconciler.testing.lab import LabRepo as LabRepo
from reconciler.testing.lab import git as git
from reconciler.testing.lab import wait_until as wait_until
from reconciler.testing.process import ReconcilerProcess

DaemonProcess = ReconcilerProcess  # the name these tests knew it by

MODEL = "animals"

DESIRED_YAML = """\
apiVersion: tfs-reconciler/v1
models:
  animals:
    versions: {versions}
    labels:
{labels}
"""


def desired_text(versions: str, labels: Mapping[str, int]) -> str:
    return DESIRED_YAML.format(
        versions=versions, labels="\n".join(f"      {k}: {v}" for k, v in labels.items())
    )


def add_version(models: Path, number: int, source: int = 3) -> Path:
    """Copy version `source` to `number` under a hidden name, then rename it into place."""
    base = models / MODEL
    hidden = base / f".{number}.tmp"
    shutil.copytree(base / str(source), hidden)
    final = base / str(number)
    hidden.rename(final)
    return final


# --- HTTP -------------------------------------------------------------------------------------


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with OPENER.open(url, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def label_version(rest_url: str, label: str) -> int | None:
    """The version `label` of the lab's model resolves to now (reconciler.testing.lab's)."""
    return lab.label_version(rest_url, MODEL, label)


def label_is(rest_url: str, label: str, version: int) -> Callable[[], bool]:
    """A condition for `wait_until`: `label` resolves to `version`."""
    return lambda: label_version(rest_url, label) == version


def commit_is(commit: str) -> Callable[[dict[str, Any]], bool]:
    """A filter for `wait_for_event`: the event names `commit`."""
    return lambda event: event.get("commit") == commit


def version_states(rest_url: str) -> dict[int, str]:
    status, body = http_get(f"{rest_url}/v1/models/{MODEL}")
    assert status == 200, body
    found: dict[int, str] = {}
    for entry in json.loads(body)["model_version_status"]:
        number = int(entry["version"])
        if found.get(number) in (None, "END"):
            found[number] = entry["state"]
    return found


# --- NOTIFY_SOCKET ----------------------------------------------------------------------------


@dataclass
class NotifySocket:
    """A datagram socket like systemd's; `messages` holds (monotonic time, text) pairs."""

    path: Path
    messages: list[tuple[float, str]] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def open(cls, folder: Path) -> NotifySocket:
        path = folder / "notify.sock"
        if len(os.fsencode(path)) > 100:  # sun_path is 108 bytes
            path = Path(tempfile.mkdtemp(prefix="sdn-")) / "notify.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.settimeout(0.1)
        self = cls(path=path, _sock=sock)
        self._thread = threading.Thread(target=self._receive, daemon=True, name="notify")
        self._thread.start()
        return self

    def _receive(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()
        self.path.unlink(missing_ok=True)

    def lines(self, key: str) -> list[tuple[float, str]]:
        """Every `KEY=value` line sent, with its arrival time."""
        found = []
        for at, message in list(self.messages):
            for line in message.splitlines():
                name, _, value = line.partition("=")
                if name == key:
                    found.append((at, value))
        return found

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10.0) -> float:
        """Wait for a KEY(=value) line; returns its arrival time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, got in self.lines(key):
                if value is None or got == value:
                    return at
            time.sleep(0.02)
        raise AssertionError(f"no {key}={value or '*'} within {timeout} s: {self.messages}")
